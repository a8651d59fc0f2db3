"""The catalogue head's product on the held-out sky, beside the PSF catalogue of the same model.

``python benchmarks/catalogue_head.py MODEL [MODEL ...] > head.jsonl`` prints one JSON line per
calibrated model folder (trained with ``--catalogue-head``; ``train.py`` calibrates it), read as
``predict.py`` makes it (:func:`galaxysr.inference.super_resolve_maps`): the head's catalogue
(``extract_sources(method="head")``) at p_real ≥ 0.5, 0.7 (the default) and 0.8 with its forced fluxes (``flux``)
and its own S450 posterior (``flux_deboosted``), the PSF catalogue of the same map, the numbers
issue 26 sets targets for — completeness above 15 mJy and at 5–10 mJy, purity in every bin ≥ 5
mJy, median S_out/S_true above 9 mJy and at 5–9 mJy, median offset above 10 mJy, z of the flux
errors per bin —, the reliability of p_real per decile, the median offset / σ_pos (1.18 when
honest), and the stacked beam and peak/true of bright isolated sources on the primary (drawn)
map and on its MEAN plane.
"""
from __future__ import annotations

import json
import sys

import numpy as np
from astropy.coordinates import SkyCoord

from galaxysr.catalogue import extract_sources, measured_plane
from galaxysr.evaluate import EvalConfig, inner_region, pool_fields, score
from galaxysr.evaluate.metrics import isolated_bright, isolated_source_stats, robust_std
from galaxysr.evaluate.runs import evaluation_fields
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.instruments import TARGET_BAND
from galaxysr.maps import read_field
from galaxysr.simulate import column_mjy

#: p_real thresholds the head's catalogue is scored at.
P_MINS = (0.5, 0.7, 0.8)


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

    i_det, _ = match(SkyCoord(cat["ra"], cat["dec"], unit="deg"), np.asarray(cat["flux"], float),
                     SkyCoord(truth["ra"], truth["dec"], unit="deg"), column_mjy(truth, f"flux_{TARGET_BAND}"),
                     config.radius)
    real = np.zeros(len(cat), bool)
    real[i_det] = True
    return real


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
    """The product as ``predict.py`` makes it: the drawn map and its MEAN plane, the PSF catalogue
    (measured on MEAN) and the head's catalogue (p_real from the model's own calibration)."""
    artifact = load_artifact(model)
    if artifact.calibration.presence is None:
        raise SystemExit(f"{model}: no presence calibration; run `galaxysr calibrate {model}` first")
    heads, psf, truths, drawn, means = [], [], [], [], []
    for folder in evaluation_fields(config, "held_out", progress=False):
        field = read_field(folder)
        network = super_resolve_maps({b: field[b] for b in artifact.config.input_bands}, artifact, progress=False)
        truth = field.truth[inner_region(field.truth, network, config.edge_arcsec)]
        truths.append(truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy])
        cat = extract_sources(network, snr=config.snr, min_flux_mjy=config.min_flux_mjy, method="psf")
        psf.append(cat[inner_region(cat, network, config.edge_arcsec)])
        head = extract_sources(network, method="head", p_min=0.0, min_flux_mjy=-np.inf)
        heads.append(head[inner_region(head, network, config.edge_arcsec)])
        bright = truth[isolated_bright(truth)]
        at = (SkyCoord(bright["ra"], bright["dec"], unit="deg"), column_mjy(bright, f"flux_{TARGET_BAND}"))
        drawn.append((network, *at))
        means.append((measured_plane(network), *at))
    # Pooled with each field turned apart (the fields share one sky position): matches stay within a field.
    head, truth = pool_fields(zip(heads, truths))
    out = {"model": model, "psf": summary(*pool_fields(zip(psf, truths)), config, "flux"),
           "primary_map": isolated_source_stats(drawn), "mean_map": isolated_source_stats(means)}
    real = is_real(head, truth, config)
    out["reliability"] = reliability(np.asarray(head["p_real"], float), real)
    offsets = _offsets_over_sigma(head[real], truth, config)
    out["offset_over_pos_err_median"] = float(np.median(offsets)) if len(offsets) else float("nan")
    for threshold in P_MINS:
        chosen = head[(np.asarray(head["p_real"]) >= threshold) & (np.asarray(head["flux"]) >= config.min_flux_mjy)]
        out[f"head_preal{threshold:g}"] = summary(chosen, truth, config, "flux")
        out[f"head_preal{threshold:g}_posterior"] = summary(chosen, truth, config, "flux_deboosted")
    return out


def _offsets_over_sigma(head, truth, config: EvalConfig) -> np.ndarray:
    """|offset| / pos_err of head detections matched to the truth (median 1.18 if honest)."""
    from galaxysr.evaluate.metrics import match

    i_det, i_ref = match(SkyCoord(head["ra"], head["dec"], unit="deg"), np.asarray(head["flux"], float),
                         SkyCoord(truth["ra"], truth["dec"], unit="deg"), column_mjy(truth, f"flux_{TARGET_BAND}"),
                         config.radius)
    sep = SkyCoord(head["ra"][i_det], head["dec"][i_det], unit="deg").separation(
        SkyCoord(truth["ra"][i_ref], truth["dec"][i_ref], unit="deg")).arcsec
    return sep / np.asarray(head["pos_err"], float)[i_det]


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(json.dumps(readings(path)), flush=True)
