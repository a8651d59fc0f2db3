"""The catalogue head's catalogue on the held-out sky, beside the PSF catalogue of the same model.

``python benchmarks/catalogue_head.py MODEL [MODEL ...] > head.jsonl`` prints one JSON line per
model folder (a model trained with ``--catalogue-head``): for the head's catalogue at several
probability thresholds — its own S450 (the posterior median) and the flux of the super-resolved
map fitted at its positions (:func:`galaxysr.catalogue.forced_photometry`, with the model's flux
curve) —, and for the PSF-fit catalogue of ``predict --catalogue`` (with the model's
flux curves), the numbers issue 26 sets targets for — completeness above 15 mJy and at 5–10 mJy,
purity in every bin ≥ 5 mJy, median S_out/S_true above 9 mJy and at 5–9 mJy, median offset above
10 mJy, and for the head the z-statistics of its S450 errors and its positional errors.

The network runs over each whole field at once (it is fully convolutional), on the inputs
training and prediction feed it (:func:`galaxysr.datasets.stack_inputs`).
"""
from __future__ import annotations

import json
import sys

import numpy as np
from astropy.table import vstack

from galaxysr.catalogue import extract_sources, forced_photometry
from galaxysr.cells import CELL_PIXELS, decode_cells, isotonic
from galaxysr.config import CALIBRATION_SEEDS
from galaxysr.datasets import DataConfig, sim_field_dir
from galaxysr.datasets import stack_inputs
from galaxysr.evaluate import EvalConfig, inner_region, score
from galaxysr.evaluate.metrics import robust_std
from galaxysr.evaluate.runs import evaluation_fields
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.instruments import TARGET_BAND
from galaxysr.maps import output_grid, read_field
from galaxysr.simulate import column_mjy

THRESHOLDS = (0.3, 0.5, 0.7)


def head_cells(artifact, field):
    """The head's raw outputs per cell for a whole field, and the field's output grid."""
    config, conventions = artifact.config, artifact.conventions
    wcs, shape = output_grid(field[config.input_bands[0]], conventions.pixel)
    inputs = stack_inputs(field, config, conventions, wcs, shape)
    m = config.multiple
    pad = [(0, -shape[0] % m), (0, -shape[1] % m), (0, 0)]
    x = config.scaling.forward(np.pad(np.nan_to_num(inputs), pad)).astype(np.float32)
    out = np.asarray(artifact.predict_fn(x[None]))[0, :shape[0], :shape[1], config.output_channels["cells"]]
    return out[::CELL_PIXELS, ::CELL_PIXELS], wcs


def summary(cat, truth, config: EvalConfig, flux_column: str) -> dict:
    cat = cat.copy()
    cat["flux"] = np.asarray(cat[flux_column], float)
    result = score(cat, truth, f"flux_{TARGET_BAND}", config)
    bins = np.asarray(result["bins_mjy"])
    completeness, purity = np.asarray(result["completeness"]), np.asarray(result["purity"])
    n_det = np.asarray(result["n_detections_per_bin"])
    faint = (bins[:-1] >= 5) & (bins[1:] <= 10)
    n_ref = np.asarray(result["n_reference_per_bin"])
    out = {"n_detections": result["n_detections"],
           "completeness_above_15mjy": result["completeness_above_15mjy"],
           "completeness_5_10mjy": float(np.sum(completeness[faint] * n_ref[faint]) / np.sum(n_ref[faint])),
           "min_purity_above_5mjy": float(np.nanmin(np.where((bins[:-1] >= 5) & (n_det >= 5), purity, np.nan))),
           "median_flux_ratio_above_9mjy": result["median_flux_ratio_above_9mjy"],
           "median_flux_ratio_5_9mjy": result["median_flux_ratio_5_9mjy"],
           "median_offset_arcsec_above_10mjy": result["median_offset_arcsec_above_10mjy"]}
    err_column = f"{flux_column}_err"
    if err_column in cat.colnames and result["n_matched"]:
        s_true = np.asarray(result["matched_true_flux_mjy"])
        s_out = np.asarray(result["flux_ratio"]) * s_true
        z = (s_out - s_true) / _matched(cat, truth, config)[err_column]
        for lo, hi in ((5, 9), (9, 15), (15, np.inf)):
            sel = (s_true >= lo) & (s_true < hi)
            if sel.sum() >= 10:
                out[f"z_{lo:g}_{hi:g}"] = {"robust_std": robust_std(z[sel]), "median": float(np.median(z[sel])),
                                           "coverage_1sigma": float(np.mean(np.abs(z[sel]) <= 1))}
    return out


def _matched(cat, truth, config: EvalConfig):
    """The rows of ``cat`` that score() matches, in the order of its matches (the same matcher)."""
    from astropy.coordinates import SkyCoord

    from galaxysr.evaluate.metrics import match

    i_det, _ = match(SkyCoord(cat["ra"], cat["dec"], unit="deg"), np.asarray(cat["flux"], float),
                     SkyCoord(truth["ra"], truth["dec"], unit="deg"), column_mjy(truth, f"flux_{TARGET_BAND}"),
                     config.radius)
    return cat[i_det]


def is_real(cat, truth, config: EvalConfig) -> np.ndarray:
    """Whether each detection of ``cat`` is matched one-to-one to a source of ``truth``."""
    from astropy.coordinates import SkyCoord

    from galaxysr.evaluate.metrics import match

    i_det, _ = match(SkyCoord(cat["ra"], cat["dec"], unit="deg"), np.asarray(cat[f"flux_{TARGET_BAND}"], float),
                     SkyCoord(truth["ra"], truth["dec"], unit="deg"), column_mjy(truth, f"flux_{TARGET_BAND}"),
                     config.radius)
    real = np.zeros(len(cat), bool)
    real[i_det] = True
    return real


def p_calibration(artifact, config: EvalConfig) -> dict:
    """Isotonic maps score → P(real) of the two scores (``p``, ``p_peak``), fitted on the
    calibration fields of the training distribution (never the held-out sky)."""
    scores, reals = {"p": [], "p_peak": []}, []
    for seed in CALIBRATION_SEEDS:
        field = read_field(sim_field_dir(DataConfig(), seed))
        cells, wcs = head_cells(artifact, field)
        cat = decode_cells(cells, wcs, artifact.conventions.pixel_arcsec, threshold=0.05)
        truth = field.truth[column_mjy(field.truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy]
        reals.append(is_real(cat, truth, config))
        for k in scores:
            scores[k].append(np.asarray(cat[k], float))
    real = np.concatenate(reals)
    return {k: isotonic(np.concatenate(v), real) for k, v in scores.items()}


def reliability(p_real: np.ndarray, real: np.ndarray, min_count: int = 20) -> dict:
    """Per decile of ``p_real`` with at least ``min_count`` detections: mean p_real and the
    fraction real; and the largest difference."""
    rows = []
    for lo in np.arange(0, 1, 0.1):
        sel = (p_real >= lo) & (p_real < lo + 0.1 + (lo >= 0.9) * 1e-9)
        if sel.sum() >= min_count:
            rows.append((float(lo), int(sel.sum()), float(p_real[sel].mean()), float(real[sel].mean())))
    return {"deciles": rows, "max_abs_difference": max((abs(r[2] - r[3]) for r in rows), default=float("nan"))}


def readings(model: str, config: EvalConfig = EvalConfig()) -> dict:
    artifact = load_artifact(model)
    calibration = p_calibration(artifact, config)
    heads, psf, truths = [], [], []
    for folder in evaluation_fields(config, "held_out", progress=False):
        field = read_field(folder)
        network = super_resolve_maps({b: field[b] for b in artifact.config.input_bands}, artifact, progress=False)
        truth = field.truth[inner_region(field.truth, network, config.edge_arcsec)]
        truths.append(truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy])
        cat = extract_sources(network, snr=config.snr, min_flux_mjy=config.min_flux_mjy)
        psf.append(cat[inner_region(cat, network, config.edge_arcsec)])
        cells, wcs = head_cells(artifact, field)
        head = decode_cells(cells, wcs, artifact.conventions.pixel_arcsec, threshold=min(THRESHOLDS))
        head = head[inner_region(head, network, config.edge_arcsec)]
        x, y = network.wcs.world_to_pixel_values(np.asarray(head["ra"], float), np.asarray(head["dec"], float))
        flux, err = forced_photometry(network, x, y)
        curve = network.flux_curves.get("error")
        factor = curve(np.nan_to_num(flux, nan=1.0)) if curve is not None else 1.0
        head["flux_forced"], head["flux_forced_err"] = flux * factor, err * factor
        heads.append(head)
    truth = vstack(truths, metadata_conflicts="silent")
    head = vstack(heads, metadata_conflicts="silent")
    out = {"model": model, "psf": summary(vstack(psf, metadata_conflicts="silent"), truth, config, "flux")}
    real = is_real(head, truth, config)
    for score, (nodes, values) in calibration.items():
        head[f"p_real_{score}"] = np.interp(np.asarray(head[score], float), nodes, values)
        out[f"reliability_{score}"] = reliability(np.asarray(head[f"p_real_{score}"]), real)
    for threshold in (0.5, 0.8):
        chosen = head[np.asarray(head["p_real_p_peak"]) >= threshold]
        out[f"head_preal{threshold:g}_forced"] = summary(chosen[np.isfinite(np.asarray(chosen["flux_forced"]))],
                                                         truth, config, "flux_forced")
    for threshold in THRESHOLDS:
        chosen = head[np.asarray(head["p"]) >= threshold]
        out[f"head_p{threshold:g}"] = summary(chosen, truth, config, f"flux_{TARGET_BAND}")
        out[f"head_p{threshold:g}_forced"] = summary(chosen[np.isfinite(np.asarray(chosen["flux_forced"]))],
                                                     truth, config, "flux_forced")
    return out


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(json.dumps(readings(path)), flush=True)
