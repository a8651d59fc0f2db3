"""Does the catalogue give back the SPIRE maps it came from? (issue "the catalogue must give back the
SPIRE maps", item 4.)

``python benchmarks/reobservation.py [MODEL] [--method psf|head] > reobservation.jsonl`` prints one JSON
line per sky for a calibrated model folder (default: the shipped model), read as ``predict.py
--catalogue … --refine`` makes it:

- held-out sky (``galaxysr evaluate``'s held-out fields, truth known): the re-observed residual χ²
  per pixel per SPIRE band (noise ⊕ the model's measured unlisted confusion), catalogue sources with
  a residual over 5σ; per SPIRE band, the refined (forced) fluxes of catalogue sources matched to
  the truth against the true flux in that band (median and 16–84 % of S_out/S_true above 20 mJy in
  that band, and at 10–20 mJy), beside the catalogue head's own posterior medians (head method) and
  a blind extraction on the native SPIRE map (photutils PSF fits at the band's beam, S/N ≥ 4,
  matched to the truth within the band's FWHM): its completeness and flux ratio above 20 mJy;
- the real A1689 scan shipped with the package: χ² per band away from the two brightest sources,
  the largest residual at a catalogue position, and the refinement's cost.

The held-out maps carry the held-out recipe's calibration errors (+3 %, −3 %, +2 %): the truth is
the sky's, so a perfect fit of the maps reads 1.03 / 0.97 / 1.02.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.resources import files

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import vstack

from galaxysr.catalogue import extract_sources
from galaxysr.evaluate import EvalConfig, inner_region
from galaxysr.evaluate.metrics import match
from galaxysr.evaluate.runs import evaluation_fields
from galaxysr.inference import input_maps, load_artifact, super_resolve_maps
from galaxysr.instruments import SPIRE_BANDS, TARGET_BAND, get_band
from galaxysr.maps import read_field
from galaxysr.reobserve import refine, residuals
from galaxysr.simulate import column_mjy

#: The real scan shipped with the package (PSW, PMW, PLW files).
A1689 = {band: next((files("galaxysr") / "data" / "real" / "A1689_1342201247").glob(f"hspire{array}*.fits.gz"))
         for band, array in zip(SPIRE_BANDS, ("psw", "pmw", "plw"))}


def confusion_of(artifact) -> dict:
    """The model's measured unlisted confusion, or the instrument table's full confusion."""
    return artifact.calibration.confusion_mjy() or {b: get_band(b).confusion.to_value(u.mJy / u.beam)
                                                    for b in SPIRE_BANDS}


def catalogue_of(network, method: str, config: EvalConfig):
    kwargs = {"method": method, "command": "benchmark"}
    if method == "psf":
        kwargs["snr"] = config.snr
    return extract_sources(network, **kwargs)


def ratio_stats(measured: np.ndarray, true: np.ndarray, lo: float, hi: float = np.inf) -> dict:
    sel = (true >= lo) & (true < hi) & np.isfinite(measured)
    if sel.sum() < 5:
        return {"n": int(sel.sum())}
    ratio = measured[sel] / true[sel]
    p16, p50, p84 = np.percentile(ratio, [16, 50, 84])
    return {"n": int(sel.sum()), "median": round(float(p50), 3), "p16": round(float(p16), 3),
            "p84": round(float(p84), 3)}


def blind(field, band: str, truth) -> dict:
    """PSF extraction on the native SPIRE map, matched to the truth in that band."""
    m = field[band]
    cat = extract_sources(m, snr=4.0, min_flux_mjy=0.0, command="benchmark")
    cat = cat[inner_region(cat, m, EvalConfig().edge_arcsec)]
    s_true = column_mjy(truth, f"flux_{band}")
    i_det, i_ref = match(SkyCoord(cat["ra"], cat["dec"], unit="deg"), np.asarray(cat["flux"]),
                         SkyCoord(truth["ra"], truth["dec"], unit="deg"), s_true, get_band(band).fwhm)
    found = np.zeros(len(truth), bool)
    found[i_ref] = True
    bright = s_true >= 20
    return {"completeness_above_20mjy": round(float(found[bright].mean()), 3) if bright.any() else None,
            "above_20mjy": ratio_stats(np.asarray(cat["flux"], float)[i_det], s_true[i_ref], 20)}


def held_out(artifact, method: str, config: EvalConfig = EvalConfig()) -> dict:
    confusion = confusion_of(artifact)
    chi2 = {b: [] for b in SPIRE_BANDS}
    over5 = {b: 0 for b in SPIRE_BANDS}
    matched, blinds, seconds, area = [], {b: [] for b in SPIRE_BANDS}, 0.0, 0.0
    found_bright = {b: [0, 0] for b in SPIRE_BANDS}
    for folder in evaluation_fields(config, "held_out", progress=False):
        field = read_field(folder)
        maps = {b: field[b] for b in artifact.config.input_bands}
        network = super_resolve_maps(maps, artifact, progress=False)
        cat = catalogue_of(network, method, config)
        started = time.perf_counter()
        cat = refine(cat, maps, confusion, curves=artifact.calibration.forced_curves())
        found = residuals(cat, maps, confusion)
        seconds += time.perf_counter() - started
        area += config.area_deg2
        for band, r in found.items():
            chi2[band].append((r.chi2_per_pixel, r.n_pixels))
            over5[band] += r.n_sources_above_5sigma
        inner = cat[inner_region(cat, network, config.edge_arcsec)]
        truth = field.truth[inner_region(field.truth, network, config.edge_arcsec)]
        truth = truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy]
        i_det, i_ref = match(SkyCoord(inner["ra"], inner["dec"], unit="deg"), np.asarray(inner["flux"]),
                             SkyCoord(truth["ra"], truth["dec"], unit="deg"),
                             column_mjy(truth, f"flux_{TARGET_BAND}"), config.radius)
        rows = inner[i_det]
        for band in SPIRE_BANDS:
            rows[f"true_{band}"] = column_mjy(truth[i_ref], f"flux_{band}")
            found = np.zeros(len(truth), bool)
            found[i_ref] = True
            bright = column_mjy(truth, f"flux_{band}") >= 20
            found_bright[band][0] += int(found[bright].sum())
            found_bright[band][1] += int(bright.sum())
        matched.append(rows)
        for band in SPIRE_BANDS:
            blinds[band].append((field, truth))
    rows = vstack(matched, metadata_conflicts="silent")
    out = {"sky": "held_out", "method": method, "n_sources": len(rows), "confusion_mjy": confusion,
           "refine_seconds_per_deg2": round(seconds / area, 2),
           "chi2_per_pixel": {b: round(float(np.average([c for c, _ in v], weights=[n for _, n in v])), 3)
                              for b, v in chi2.items()},
           "sources_above_5sigma": over5, "bands": {}}
    for band in SPIRE_BANDS:
        true = np.asarray(rows[f"true_{band}"], float)
        entry = {"completeness_above_20mjy": round(found_bright[band][0] / max(found_bright[band][1], 1), 3),
                 "forced_above_20mjy": ratio_stats(np.asarray(rows[f"flux_{band}_forced"], float), true, 20),
                 "forced_10_20mjy": ratio_stats(np.asarray(rows[f"flux_{band}_forced"], float), true, 10, 20)}
        if f"flux_{band}" in rows.colnames:
            entry["network_above_20mjy"] = ratio_stats(np.asarray(rows[f"flux_{band}"], float), true, 20)
            entry["network_10_20mjy"] = ratio_stats(np.asarray(rows[f"flux_{band}"], float), true, 10, 20)
        fields = blinds[band]
        entry["blind_native"] = [blind(f, band, t) for f, t in fields]
        out["bands"][band] = entry
    return out


def a1689(artifact, method: str, mask_arcsec: float = 60.0) -> dict:
    """The real scan: χ² per band with the two brightest catalogue sources masked (``mask_arcsec``)."""
    confusion = confusion_of(artifact)
    maps = input_maps(artifact, *(A1689[b] for b in SPIRE_BANDS))
    network = super_resolve_maps(maps, artifact, progress=False)
    cat = catalogue_of(network, method, EvalConfig())
    started = time.perf_counter()
    cat = refine(cat, maps, confusion, curves=artifact.calibration.forced_curves())
    seconds = time.perf_counter() - started
    brightest = cat[np.argsort(-np.asarray(cat["flux"], float))[:2]]
    masks = {}
    for band, m in maps.items():
        yy, xx = np.indices(m.shape)
        x, y = m.wcs.world_to_pixel_values(np.asarray(brightest["ra"], float), np.asarray(brightest["dec"], float))
        radius = mask_arcsec / m.pixel_scale.to_value(u.arcsec)
        masks[band] = np.any([(xx - a) ** 2 + (yy - b) ** 2 < radius**2 for a, b in zip(x, y)], axis=0)
    everywhere = residuals(cat, maps, confusion)
    away = residuals(cat, maps, confusion, masks=masks)
    return {"sky": "A1689 (real, one scan)", "method": method, "n_sources": len(cat), "confusion_mjy": confusion,
            "refine_seconds": round(seconds, 2),
            "chi2_per_pixel": {b: round(r.chi2_per_pixel, 3) for b, r in everywhere.items()},
            "chi2_per_pixel_away_from_brightest_two": {b: round(r.chi2_per_pixel, 3) for b, r in away.items()},
            "max_source_snr": {b: round(r.max_source_snr, 2) for b, r in everywhere.items()},
            "sources_above_5sigma": {b: r.n_sources_above_5sigma for b, r in everywhere.items()},
            "sources_above_5sigma_away_from_brightest_two": {b: r.n_sources_above_5sigma for b, r in away.items()},
            "max_source_snr_away_from_brightest_two": {b: round(r.max_source_snr, 2) for b, r in away.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--method", default="psf", choices=("psf", "head"))
    args = parser.parse_args(argv)
    artifact = load_artifact(args.model)
    for measure in (held_out, a1689):
        result = measure(artifact, args.method)
        result["model"] = artifact.name
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
