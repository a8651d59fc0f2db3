"""Is a freshly trained model in the good mode? The health check train.py runs after calibration.

Training from one seed can settle into a compact mode (sources ≈ 10″ wide, peak/true ≈ 0.6,
catalogue ≈ 95 % complete above 15 mJy) or a spread one (≈ 16″, 0.37, 55–60 %): docs/training.md,
"Robust training". Calibration already measures the output beam on fields of the training
distribution; this module adds the catalogue's completeness and flux there, compares all four with
the bounds that default runs reach, and says what to do when a run falls outside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HealthBounds", "HEALTH_BOUNDS", "catalogue_health", "health_verdict", "health_lines", "record_health"]


@dataclass(frozen=True)
class HealthBounds:
    """What a good default run gives on the calibration fields (the four training-distribution
    fields of :data:`galaxysr.config.CALIBRATION_SEEDS`), with a margin; docs/training.md lists
    the runs they come from.

    Attributes
    ----------
    max_fwhm_arcsec : float
        Stacked output beam of bright isolated sources (arcsec). Good runs: 9.5–10.9″; spread
        runs 15–20″.
    min_peak_ratio : float
        Peak / true flux of those sources. Good runs 0.59–0.70; spread runs 0.37.
    min_completeness : float
        The default catalogue's completeness above 15 mJy. Good runs 0.89–0.91 (0.4, seeds 0–2,
        read against the calibrated ERROR plane); the spread run's catalogue 0.54–0.60 held out.
    flux_ratio : tuple of float
        Range of the catalogue's median S_out/S_true above 9 mJy, read as the evaluation reads
        it (:func:`galaxysr.evaluate.measure_flux_scale`). Good runs: 0.83–0.90 (0.4, seeds 0–2),
        0.3.0's model 0.92; the held-out sky reads 0.005–0.03 more.
    """

    max_fwhm_arcsec: float = 12.0
    min_peak_ratio: float = 0.50
    min_completeness: float = 0.85
    flux_ratio: tuple[float, float] = (0.75, 1.15)


HEALTH_BOUNDS = HealthBounds()


def catalogue_health(maps: list) -> dict:
    """Completeness above 15 mJy and median S_out/S_true above 9 mJy of the default catalogue
    (:func:`galaxysr.catalogue.extract_sources`) of ``maps`` — (super-resolved Map, truth)
    pairs of simulated fields, :func:`galaxysr.evaluate.runs.calibration_maps` — against
    their truth (inner regions, as the evaluation scores them)."""
    from ..catalogue import extract_sources
    from ..instruments import TARGET_BAND
    from .metrics import EvalConfig, inner_region, score_fields

    config = EvalConfig()
    catalogues, truths = [], []
    for network, truth in maps:
        cat = extract_sources(network, snr=config.snr, min_flux_mjy=config.min_flux_mjy, command="calibration",
                              method="psf")
        catalogues.append(cat[inner_region(cat, network, config.edge_arcsec)])
        truths.append(truth)
    result = score_fields(list(zip(catalogues, truths)), f"flux_{TARGET_BAND}", config)
    return {"completeness_above_15mjy": result["completeness_above_15mjy"],
            "median_flux_ratio_above_9mjy": result["median_flux_ratio_above_9mjy"],
            "n_detections": result["n_detections"], "n_reference": result["n_reference"]}


def health_verdict(beam: dict, catalogue: dict, bounds: HealthBounds = HEALTH_BOUNDS) -> dict:
    """Compare a calibration's measurements with ``bounds``.

    Parameters
    ----------
    beam : dict
        :func:`galaxysr.evaluate.measure_effective_beam`'s record (``fwhm_arcsec`` in arcsec,
        ``peak_ratio``).
    catalogue : dict
        :func:`catalogue_health`'s record (may be empty: those checks are then left out).

    Returns
    -------
    dict
        ``ok`` (every check passed), ``checks`` (name, value, allowed range, ok) and ``bounds``.
    """
    lo_flux, hi_flux = bounds.flux_ratio
    wanted = [("output beam FWHM (arcsec)", beam.get("fwhm_arcsec"), None, bounds.max_fwhm_arcsec),
              ("peak/true of bright isolated sources", beam.get("peak_ratio"), bounds.min_peak_ratio, None),
              ("catalogue completeness above 15 mJy", catalogue.get("completeness_above_15mjy"),
               bounds.min_completeness, None),
              ("catalogue S_out/S_true above 9 mJy (before flux calibration)",
               catalogue.get("median_flux_ratio_above_9mjy"), lo_flux, hi_flux)]
    checks = []
    for name, value, lo, hi in wanted:
        if value is None:
            continue
        value = float(value)
        ok = bool(np.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi))
        checks.append({"name": name, "value": value, "min": lo, "max": hi, "ok": ok})
    return {"ok": all(c["ok"] for c in checks), "checks": checks,
            "bounds": {"max_fwhm_arcsec": bounds.max_fwhm_arcsec, "min_peak_ratio": bounds.min_peak_ratio,
                       "min_completeness": bounds.min_completeness, "flux_ratio": list(bounds.flux_ratio)}}


def _allowed(check: dict) -> str:
    if check["min"] is not None and check["max"] is not None:
        return f"{check['min']:g}–{check['max']:g}"
    return f"≥ {check['min']:g}" if check["min"] is not None else f"≤ {check['max']:g}"


def health_lines(verdict: dict, seed: int | None = None) -> list[str]:
    """What to print: one line when healthy, the failed checks and the advice when not."""
    measured = ", ".join(f"{c['name']} {c['value']:.3g}" for c in verdict["checks"])
    if verdict["ok"]:
        return [f"health check passed (calibration fields): {measured}"]
    lines = ["WARNING: this training run looks like the spread mode (docs/training.md, \"Robust training\"):"]
    for c in verdict["checks"]:
        if not c["ok"]:
            lines.append(f"  {c['name']}: {c['value']:.3g}; a good default run gives {_allowed(c)}")
    if "error_calibration" in verdict:
        lines.append(f"  error map {verdict['error_calibration']}; a good default run calibrates it on ≈ 5500 "
                     "matched sources")
    again = f"--seed {seed + 1}" if seed is not None else "another --seed"
    lines.append(f"  rerun with {again} (into a new --out folder) before using this model; the verdict is in "
                 "its metrics.json")
    return lines


def record_health(artifact, verdict: dict) -> None:
    """Write ``verdict`` into the artifact's ``metrics.json`` (key ``health``)."""
    import json

    path = artifact.path / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics["health"] = verdict
    path.write_text(json.dumps(metrics, indent=2))
