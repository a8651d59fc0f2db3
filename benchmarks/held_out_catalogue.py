"""The held-out catalogue of trained models, in both readings: the quick half of
``galaxysr evaluate --sky held_out`` that the flux calibration changes.

``python benchmarks/held_out_catalogue.py MODEL... > held_out.jsonl`` prints one JSON line per
model folder: for the scatter reading (sources found against the map's own scatter, as
``galaxysr evaluate`` scores every method's map) and the error reading (against its ERROR plane,
the catalogue ``predict --catalogue`` writes), the completeness above 15 mJy, the median
S_out/S_true above 9 mJy and per flux bin — with the model's flux curves applied, as a user gets
them. ``benchmarks/training_modes.py`` reads these lines beside the runs.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np

from galaxysr.catalogue import extract_sources
from galaxysr.evaluate import EvalConfig, inner_region, score_fields
from galaxysr.evaluate.runs import evaluation_fields
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.instruments import TARGET_BAND
from galaxysr.maps import read_field
from galaxysr.simulate import column_mjy


def readings(model: str, config: EvalConfig = EvalConfig()) -> dict:
    artifact = load_artifact(model)
    catalogues, truths = {"scatter": [], "error": []}, []
    for folder in evaluation_fields(config, "held_out", progress=False):
        field = read_field(folder)
        network = super_resolve_maps({b: field[b] for b in artifact.config.input_bands}, artifact, progress=False)
        truth = field.truth[inner_region(field.truth, network, config.edge_arcsec)]
        truths.append(truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy])
        for reading, shown in (("scatter", replace(network, noise=None)), ("error", network)):
            cat = extract_sources(shown, snr=config.snr, min_flux_mjy=config.min_flux_mjy, method="psf")
            catalogues[reading].append(cat[inner_region(cat, network, config.edge_arcsec)])
    out = {"model": model, "flux_curves": sorted(artifact.calibration.flux_curves())}
    for reading, cats in catalogues.items():
        result = score_fields(list(zip(cats, truths)), f"flux_{TARGET_BAND}", config)
        bins = np.asarray(result["bins_mjy"])
        ratio = np.asarray(result["flux_ratio_16_50_84"], float)[:, 1]
        out[reading] = {"completeness_above_15mjy": result["completeness_above_15mjy"],
                        "median_flux_ratio_above_9mjy": result["median_flux_ratio_above_9mjy"],
                        "median_flux_ratio_5_9mjy": result["median_flux_ratio_5_9mjy"],
                        "flux_ratio_by_bin": {f"{lo:g}-{hi:g}": float(v) for lo, hi, v in
                                              zip(bins[:-1], bins[1:], ratio)}}
    return out


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(json.dumps(readings(path)), flush=True)
