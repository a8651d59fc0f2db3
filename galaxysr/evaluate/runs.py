"""Evaluation runs: the skies and fields scored, the network and baselines run on them, and
the calibrations of a trained model (its output beam and its error map) on fields of its
training distribution."""

from __future__ import annotations

import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack

from ..config import SKIES
from ..baselines import mean_colour, native_250, richardson_lucy, truth_convolved, wiener
from ..catalogue import default_method, extract_sources
from ..cells import presence_cards
from ..config import HEAD_P_MIN
from ..instruments import TARGET_BAND
from ..maps import Field, Map, MapError, read_field, reproject_map
from ..simulate import SIMULATOR_VERSION, SimulationConfig, SkyPrior, column_mjy, held_out_simulation
from .injection import InjectionConfig, injection_recovery
from .metrics import (ERROR_BINS_MJY, EvalConfig, calibrate_errors, error_statistics, fit_flux_curve, inner_region,
                      isolated_bright,
                      isolated_source_stats, jsonable, match, paired_offsets, plain_peaks, robust_std, score, score_fields,
                      split_sources)


#: How each method's catalogue is extracted (:func:`galaxysr.catalogue.extract_sources`
#: ``method``): the network's default catalogue (PSF fits), and its sky model's components beside it.
EXTRACTION = {"network": None, "network_psf": "psf", "network_sky": "sky"}
#: The network's maps catalogued other ways than the default (the same map, one plain reading).
SAME_MAP = ("network_psf", "network_sky")


def method_maps(field: Field, network: Map, colour: float) -> dict[str, Map]:
    """The network output (catalogued its default way — the catalogue head's for a head model, else
    PSF fits on the map —, for a head model again by PSF fits, and from its sky model's components
    when it has one) and every baseline, for one field."""
    m250 = field["spire_250"]
    # Sources are found against each map's own sigma-clipped scatter (with a floor), the
    # same way for every method; the network's error map is scored separately.
    maps = {"network": replace(network, noise=None)}
    if network.sky_model is not None:
        maps["network_sky"] = maps["network"]
    if network.cells is not None:  # its default catalogue is the head's: PSF fits beside it
        maps["network_psf"] = maps["network"]
    maps |= {"native_250": native_250(m250, colour),
            "richardson_lucy": richardson_lucy(m250, network.wcs, network.shape, colour),
            "wiener": wiener(m250, network.wcs, network.shape, colour)}
    if field.truth is not None:
        maps["truth"] = truth_convolved(field.truth, network.wcs, network.shape)
    return maps


def sky_simulation(sky: str, seed: int, area_deg2: float, prior: SkyPrior = SkyPrior()) -> SimulationConfig:
    """The SimulationConfig of evaluation field ``seed`` of ``sky`` (see :data:`SKIES`)."""
    if sky == "held_out":
        return held_out_simulation(seed, area_deg2)
    if sky == "training":
        return prior.draw(seed, area_deg2)
    if sky == "reference":
        return SimulationConfig(area_deg2=area_deg2, seed=seed)
    raise ValueError(f"unknown sky {sky!r}; choose one of {', '.join(SKIES)}")


def evaluation_fields(config: EvalConfig, sky: str = "held_out", progress: bool = True) -> list[Path]:
    """Folders of the evaluation fields of ``sky``, simulated on first use (and again if
    the simulator or the recipe changed)."""
    from tqdm import tqdm

    from ..datasets import cached_field, resolve_path

    if sky not in SKIES:
        raise ValueError(f"unknown sky {sky!r}; choose one of {', '.join(SKIES)}")
    folders = []
    for seed in tqdm(config.seeds, desc=f"{sky} evaluation fields", unit="field", disable=not progress):
        folder = resolve_path(config.field_dir) / sky / f"field_{seed:05d}_{config.area_deg2:g}deg2"
        recipe = {"simulator_version": SIMULATOR_VERSION, "sky": sky, "seed": seed, "area_deg2": config.area_deg2,
                  "prior": SkyPrior().to_dict() if sky == "training" else None}
        folders.append(cached_field(folder, recipe, lambda seed=seed: sky_simulation(sky, seed, config.area_deg2)))
    return folders


def evaluate_simulated(folders, artifact=None, config: EvalConfig = EvalConfig(), progress: bool = True,
                       injection: InjectionConfig | None = InjectionConfig()) -> dict:
    """Score the network and the baselines on simulated Field folders (with truth.ecsv).

    Returns ``{"methods": {name: scores}, "plain": {name: scores of the plain reading},
    "injection": …, "fields": [...], "config": ...}``; catalogues of all fields are pooled
    before scoring. The plain reading (:func:`plain_peaks`: local maxima as a quick script
    finds them, peak values as fluxes) is scored beside each method's catalogue, with the
    number of bright isolated sources it splits (:func:`split_sources`). Injection–recovery
    (:func:`galaxysr.evaluate.injection.injection_recovery`) runs on the first field unless
    ``injection`` is None.
    """
    from ..inference import load_artifact, super_resolve_maps

    artifact = artifact or load_artifact()
    colour = mean_colour()
    pooled: dict[str, list] = {}
    plain: dict[str, list] = {}
    splits: dict[str, list] = {}
    fwhm_stamps: dict[str, list] = {}
    example = None
    truths, errors, repeats, heads = [], [], [], []
    for folder in folders:
        field = read_field(folder)
        if field.truth is None:
            raise MapError(f"{folder}: no truth.ecsv; use evaluate_real for observed pairs")
        network = super_resolve_maps({b: field[b] for b in artifact.config.input_bands}, artifact, progress=progress)
        maps = method_maps(field, network, colour)
        truth = field.truth[inner_region(field.truth, network, config.edge_arcsec)]
        truth = truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy]
        truths.append(truth)
        bright = truth[isolated_bright(truth)]
        bright_at = (SkyCoord(bright["ra"], bright["dec"], unit="deg"), column_mjy(bright, f"flux_{TARGET_BAND}"))
        for name, m in maps.items():
            cat = extract_sources(m, snr=config.snr, min_flux_mjy=config.min_flux_mjy,
                                  method=EXTRACTION.get(name, "psf"))  # None: the map's default
            cat = cat[inner_region(cat, network, config.edge_arcsec)]
            pooled.setdefault(name, []).append((cat, truth))
            fwhm_stamps.setdefault(name, []).append((m, *bright_at))
            if name not in SAME_MAP:  # the same map as "network": one plain reading
                peaks = plain_peaks(m)
                peaks = peaks[inner_region(peaks, network, config.edge_arcsec)]
                plain.setdefault(name, []).append((peaks, truth))
                splits.setdefault(name, []).append(split_sources(peaks, truth))
        if artifact.config.uncertainty_head:
            # The catalogue a user gets: detection against the sky's ERROR, flux errors at the source.
            own = extract_sources(network, snr=config.snr, command="evaluation")
            own = own[inner_region(own, network, config.edge_arcsec)]
            errors.append(matched_sources(own, truth, config))
            repeat = _second_observation(folder, field, artifact, config, own, progress)
            if repeat is not None:
                repeats.append(repeat)
        if network.cells is not None:
            heads.append(head_readings(network, truth, config))
        if example is None:
            example = {"field": field, "maps": maps}
    results = {}
    for name, pairs in pooled.items():
        scores = score_fields(pairs, f"flux_{TARGET_BAND}", config)
        scores["isolated"] = isolated_source_stats(fwhm_stamps[name])
        scores["output_fwhm_arcsec"] = scores["isolated"]["fwhm_arcsec"]
        results[name] = scores
    plain_scores = {}
    for name, pairs in plain.items():
        scores = score_fields(pairs, f"flux_{TARGET_BAND}", config)
        parts = splits[name]
        n = sum(p["n_sources"] for p in parts)
        scores["split"] = {"n_sources": n, "n_split": sum(p["n_split"] for p in parts),
                           "peaks_per_source": float(np.sum([p["peaks_per_source"] * p["n_sources"] for p in parts
                                                             if p["n_sources"]]) / n) if n else float("nan")}
        plain_scores[name] = scores
    out = {"methods": results, "plain": plain_scores, "paired_offsets": paired_offsets(results, config.flux_bins_mjy),
           "fields": [str(f) for f in folders], "colour_450_250": colour,
           "model": {"name": artifact.name, "sha256": artifact.sha256}, "config": jsonable(asdict(config)),
           "_example": example}
    if errors:
        sources = vstack(errors)
        out["uncertainty"] = error_statistics(sources)
        out["_z"] = {"flux_true": np.asarray(sources["flux_true"]).tolist(),
                     "z": ((np.asarray(sources["flux"]) - np.asarray(sources["flux_true"]))
                           / np.asarray(sources["flux_err"])).tolist()}
    if repeats:
        out["uncertainty"]["repeat"] = repeat_statistics(vstack(repeats))
    if heads:
        out["head"] = head_summary(heads)
    if injection is not None and folders:
        out["injection"] = injection_recovery(artifact, read_field(folders[0]), injection, progress=progress)
    return out


def head_readings(network: Map, truth: Table, config: EvalConfig) -> Table:
    """Every detection the catalogue head decodes on ``network`` (p_real ≥ 0, inside the scored area),
    with whether it is real (matched one to one to ``truth`` within ``config.radius``), its offset
    from its match and its positional error (arcsec): what the reliability diagram and the positional
    honesty are read from."""
    from ..catalogue import extract_sources

    head = extract_sources(network, method="head", p_min=0.0, min_flux_mjy=-np.inf, command="evaluation")
    head = head[inner_region(head, network, config.edge_arcsec)]
    det = SkyCoord(head["ra"], head["dec"], unit="deg")
    ref = SkyCoord(truth["ra"], truth["dec"], unit="deg")
    i_det, i_ref = match(det, np.asarray(head["flux"], float), ref, column_mjy(truth, f"flux_{TARGET_BAND}"),
                         config.radius)
    real = np.zeros(len(head), bool)
    real[i_det] = True
    offset = np.full(len(head), np.nan)
    if len(i_det):
        offset[i_det] = det[i_det].separation(ref[i_ref]).arcsec
    return Table({"p_real": np.asarray(head["p_real"], float), "real": real, "offset": offset,
                  "pos_err": np.asarray(head["pos_err"], float)})


def head_summary(readings: list, min_count: int = 20) -> dict:
    """The catalogue head's honesty on the scored fields (:func:`head_readings` pooled): per decile of
    ``p_real`` with at least ``min_count`` detections its mean and the fraction real (a reliability
    diagram; ``max_abs_difference`` the worst decile), and the median of offset / ``pos_err`` of the
    real ones (a 2-D Gaussian's 1.18 when the positional errors are honest)."""
    from ..cells import RAYLEIGH_MEDIAN

    rows = vstack(readings)
    p, real = np.asarray(rows["p_real"], float), np.asarray(rows["real"], bool)
    deciles = []
    for lo in np.arange(0.0, 1.0, 0.1):
        sel = (p >= lo) & ((p < lo + 0.1) if lo < 0.85 else (p <= 1.0))
        if sel.sum() >= min_count:
            deciles.append({"p_lo": round(float(lo), 1), "n": int(sel.sum()), "mean_p_real": float(p[sel].mean()),
                            "fraction_real": float(real[sel].mean())})
    ratio = np.asarray(rows["offset"], float)[real] / np.asarray(rows["pos_err"], float)[real]
    return {"reliability": deciles,
            "max_abs_difference": max((abs(d["mean_p_real"] - d["fraction_real"]) for d in deciles),
                                      default=float("nan")),
            "offset_over_pos_err_median": float(np.nanmedian(ratio)) if len(ratio) else float("nan"),
            "gaussian_median": RAYLEIGH_MEDIAN, "n_detections": int(len(rows)), "n_real": int(real.sum())}


def matched_sources(catalogue: Table, truth: Table, config: EvalConfig) -> Table:
    """Sources of ``catalogue`` matched one-to-one to ``truth``: measured flux, reported
    error, deboosted interval and true flux (mJy)."""
    det = SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg")
    ref = SkyCoord(truth["ra"], truth["dec"], unit="deg")
    s_true = column_mjy(truth, f"flux_{TARGET_BAND}")
    i_det, i_ref = match(det, np.asarray(catalogue["flux"]), ref, s_true, config.radius)
    columns = {k: np.asarray(catalogue[k], float)[i_det]
               for k in ("flux", "flux_err", "flux_deboosted", "flux_deboosted_lo", "flux_deboosted_hi")}
    return Table({**columns, "flux_true": s_true[i_ref]})


def _second_observation(folder, field, artifact, config: EvalConfig, catalogue: Table, progress: bool):
    """The same sky observed again with independent noise (when the field records its
    simulation): pairs of (flux, error) of the sources both catalogues hold."""
    import json

    from ..inference import super_resolve_maps
    from ..simulate import simulate_field

    record = Path(folder) / "simulation.json"
    if not record.exists():
        return None
    sim = SimulationConfig.from_dict(json.loads(record.read_text())["simulation"])
    again = simulate_field(replace(sim, noise_seed=1), bands=artifact.config.input_bands, truth=field.truth)
    network = super_resolve_maps(again.maps, artifact, progress=progress)
    other = extract_sources(network, snr=config.snr, command="evaluation")
    other = other[inner_region(other, network, config.edge_arcsec)]
    i, j = match(SkyCoord(other["ra"], other["dec"], unit="deg"), np.asarray(other["flux"]),
                 SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg"), np.asarray(catalogue["flux"]),
                 0.5 * config.radius)
    first, second = catalogue[j], other[i]
    return Table({"flux_1": np.asarray(first["flux"], float), "err_1": np.asarray(first["flux_err"], float),
                  "flux_2": np.asarray(second["flux"], float), "err_2": np.asarray(second["flux_err"], float)})


def repeat_statistics(pairs: Table, bins=ERROR_BINS_MJY) -> dict:
    """Per bin of the first observation's flux: how many sources both observations hold, and
    the robust standard deviation of (S_1 − S_2)/√(σ_1² + σ_2²) — 1 when the reported errors
    predict the run-to-run scatter."""
    s1, s2 = np.asarray(pairs["flux_1"]), np.asarray(pairs["flux_2"])
    d = (s1 - s2) / np.hypot(np.asarray(pairs["err_1"]), np.asarray(pairs["err_2"]))
    out = {"bins_mjy": list(bins), "n": [], "d_robust_std": [], "ratio_16_50_84": []}
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (s1 >= lo) & (s1 < hi)
        out["n"].append(int(sel.sum()))
        out["d_robust_std"].append(robust_std(d[sel]))
        out["ratio_16_50_84"].append(np.percentile(s2[sel] / s1[sel], [16, 50, 84]).tolist() if sel.sum() >= 5
                                     else [float("nan")] * 3)
    return out


def calibration_maps(artifact, folders, progress: bool = False) -> list:
    """(network Map, truth inside the usable area) for each simulated field folder: the per-pixel
    map (a catalogue-head network's not drawn: calibration measures what its catalogues measure on)."""
    from ..inference import super_resolve_maps

    out = []
    for folder in folders:
        field = read_field(folder)
        network = super_resolve_maps({b: field[b] for b in artifact.config.input_bands}, artifact,
                                     progress=progress, draw=False)
        out.append((network, field.truth[inner_region(field.truth, network, EvalConfig().edge_arcsec)]))
    return out


def measure_effective_beam(artifact, folders, progress: bool = False, maps: list | None = None) -> dict:
    """The output beam of ``artifact`` measured on simulated Field folders (truth known):
    :func:`isolated_source_stats` of its maps at the bright isolated truth sources, plus the
    fields it was measured on. Used after training on fields of the training distribution
    (:data:`galaxysr.config.CALIBRATION_SEEDS`), never on the held-out sky. ``maps``: those
    fields' :func:`calibration_maps`, if already made."""
    samples = []
    for network, truth in maps or calibration_maps(artifact, folders, progress):
        bright = truth[isolated_bright(truth)]
        samples.append((network, SkyCoord(bright["ra"], bright["dec"], unit="deg"),
                        column_mjy(bright, f"flux_{TARGET_BAND}")))
    stats = isolated_source_stats(samples)
    stats["fields"] = [Path(f).name for f in folders]
    return stats


def source_errors(artifact, folders, config: EvalConfig = EvalConfig(), progress: bool = False,
                  snr: float = 0.0, maps: list | None = None) -> Table:
    """Every detected source of ``artifact``'s maps of simulated fields matched to the
    truth (:func:`matched_sources`). Detection above the catalogue's default floor and at
    ``snr`` against the map's ERROR plane — by default none, so that a not yet calibrated
    error plane does not decide which sources calibrate it. ``maps``: those fields'
    :func:`calibration_maps`, if already made."""
    rows = []
    for network, truth in maps or calibration_maps(artifact, folders, progress):
        cat = extract_sources(network, snr=snr, command="calibration", method="psf")
        rows.append(matched_sources(cat[inner_region(cat, network, config.edge_arcsec)], truth, config))
    return vstack(rows) if rows else Table(names=("flux", "flux_err", "flux_true"))


def colour_response(artifact, config: SimulationConfig, factors: dict[str, float], progress: bool = False) -> dict:
    """How the network's 450 µm peaks follow the SPIRE colours.

    The field of ``config`` is rendered twice — as drawn, and with the fluxes of some
    bands multiplied by ``factors`` (band → factor; same positions, same noise) — and the
    median ratio of the network's peak at the bright isolated sources (S450 > 15 mJy, see
    :func:`isolated_bright`) between the two renderings is returned, with the number of
    sources. Physics: S450 follows S350 and S500 (it sits between them on every dust SED),
    so scaling S250 alone should leave it, and scaling S350 and S500 by f should scale it
    by f.
    """
    from ..inference import super_resolve_maps
    from ..simulate import simulate_catalogue, simulate_field

    truth = simulate_catalogue(config)
    changed = truth.copy()
    for band, factor in factors.items():
        changed[f"flux_{band}"] = truth[f"flux_{band}"] * factor
    peaks = []
    for catalogue in (truth, changed):
        field = simulate_field(config, bands=artifact.config.input_bands, truth=catalogue)
        network = super_resolve_maps(field.maps, artifact, progress=progress)
        inside = truth[inner_region(truth, network, EvalConfig().edge_arcsec)]
        bright = inside[isolated_bright(inside)]
        x, y = network.wcs.world_to_pixel(SkyCoord(bright["ra"], bright["dec"], unit="deg"))
        radius = int(np.ceil(network.band.fwhm.to_value(u.arcsec) / 2 / network.pixel_scale.to_value(u.arcsec)))
        peaks.append(np.array([np.nanmax(network.data[int(round(j)) - radius:int(round(j)) + radius + 1,
                                                      int(round(i)) - radius:int(round(i)) + radius + 1])
                               for i, j in zip(x, y)]))
    return {"ratio": float(np.median(peaks[1] / peaks[0])), "n": int(len(peaks[0]))}


def measure_flux_scale(maps: list, config: EvalConfig = EvalConfig()) -> dict:
    """The PSF catalogue's flux scale on calibration fields (training distribution, truth known)
    and the flux curves that calibrate it, for each reading (:data:`galaxysr.maps.FLUX_READINGS`):
    against the map's ERROR plane (the catalogue ``predict --catalogue`` writes) and against its
    own scatter (how :func:`evaluate_simulated` reads every method's map).

    Returns ``network_ratio``, the median S_out/S_true above 9 mJy of the uncalibrated catalogue
    in the scatter reading — the health check's measure of a run (seeds 0, 1, 2: 0.894 / 0.829 /
    0.896 here, 0.900 / 0.834 / 0.905 on the held-out sky; docs/training.md, "Robust training")
    — ``n_matched``, and ``curves``: reading → :func:`fit_flux_curve`'s record with the median
    ratio above 9 mJy before (``ratio_above_9mjy``) and the number of pairs it was fitted on
    (``n_pairs``); too few pairs: no nodes, ``not_fitted`` says why, and nothing is applied.
    """
    out = {"curves": {}}
    for reading in ("error", "scatter"):
        pairs, catalogues = [], []
        for network, truth in maps:
            shown = network if reading == "error" else replace(network, noise=None)
            cat = extract_sources(shown, snr=config.snr, min_flux_mjy=config.min_flux_mjy, command="calibration",
                                  calibrate=False, method="psf")
            cat = cat[inner_region(cat, network, config.edge_arcsec)]
            catalogues.append(cat)
            pairs.append(matched_sources(cat, truth, config))
        result = score_fields([(c, t) for c, (_, t) in zip(catalogues, maps)], f"flux_{TARGET_BAND}", config)
        matched = vstack(pairs)
        record = {"n_pairs": len(matched), "ratio_above_9mjy": float(result["median_flux_ratio_above_9mjy"])}
        try:
            record |= fit_flux_curve(matched["flux"], matched["flux_true"]).to_dict()
        except ValueError as error:  # a broken run finds too little: nothing to apply, the health check says so
            record["not_fitted"] = str(error)
        out["curves"][reading] = record
        if reading == "scatter":
            out |= {"network_ratio": float(result["median_flux_ratio_above_9mjy"]),
                    "n_matched": result["n_matched"]}
    return out


def measure_head_flux_curve(maps: list, p_min: float = HEAD_P_MIN, config: EvalConfig = EvalConfig()) -> dict:
    """The flux curve of a catalogue-head network's forced fluxes (the ``head`` reading of
    :data:`galaxysr.maps.FLUX_READINGS`: its map fitted at the head's positions, which are not the
    PSF fit's) on :func:`calibration_maps` (the training distribution): :func:`fit_flux_curve` of
    the detections with ``p_real`` ≥ ``p_min`` matched to the truth, with the median ratio above
    9 mJy before it and the number of pairs (``head``); and the factors that then make their
    errors honest (``head_error``: :func:`calibrate_errors` of the calibrated fluxes, per bin of
    measured flux). Needs the model's presence calibration (p_real)."""
    from ..catalogue import extract_sources

    pairs = []
    for network, truth in maps:
        cat = extract_sources(network, method="head", p_min=p_min, min_flux_mjy=config.min_flux_mjy,
                              command="calibration", calibrate=False)
        pairs.append(matched_sources(cat[inner_region(cat, network, config.edge_arcsec)], truth, config))
    matched = vstack(pairs)
    flux, true = np.asarray(matched["flux"], float), np.asarray(matched["flux_true"], float)
    record = {"n_pairs": len(matched), "ratio_above_9mjy": float(np.median(flux[true >= 9] / true[true >= 9]))
              if np.any(true >= 9) else float("nan")}
    try:
        curve = fit_flux_curve(flux, true)
    except ValueError as error:
        record["not_fitted"] = str(error)
        return {"head": record}
    factor = curve(flux)
    calibrated = Table({"flux": flux * factor, "flux_err": np.asarray(matched["flux_err"], float) * factor,
                        "flux_true": true})
    errors = calibrate_errors(calibrated)
    return {"head": record | curve.to_dict(),
            "head_error": {"nodes_mjy": errors["flux_mjy"], "factors": errors["factor"], "n_pairs": len(matched)}}


def measure_reobservation(maps: list, folders, method: str | None = None, p_min: float = HEAD_P_MIN,
                          config: EvalConfig = EvalConfig()) -> dict:
    """How a model's refined catalogue gives back the SPIRE maps, on :func:`calibration_maps` of the
    simulated field ``folders`` (the training distribution, never the held-out sky), for the
    catalogue ``predict --refine`` writes (``method``, by default the map's own,
    :func:`galaxysr.catalogue.default_method`; at ``config.snr`` and the default floor, or
    ``p_real`` ≥ ``p_min``):

    - ``curves``: per SPIRE band, the :func:`fit_flux_curve` of its refined (forced) fluxes
      (:func:`galaxysr.reobserve.refine`) against the true fluxes the maps hold (the truth times
      the field's calibration factor) of the sources matched one to one by S450 within
      ``config.radius`` — a least-squares flux takes in the light of unlisted neighbours;
    - ``confusion_mjy``: per band, the variance of the residual of the calibrated catalogue
      re-observed (:func:`galaxysr.reobserve.residuals`) beyond the maps' noise (5σ-clipped, pooled
      over the fields): the confusion of the sources the catalogue does not list, against which χ²
      of other skies' residuals is read (noise ⊕ it)."""
    from astropy.stats import sigma_clipped_stats

    from ..instruments import SPIRE_BANDS, get_band
    from ..maps import FluxCurve
    from ..reobserve import refine, residuals

    table_confusion = {band: get_band(band).confusion.to_value(u.mJy / u.beam) for band in SPIRE_BANDS}
    fields, pairs = [], {band: ([], []) for band in SPIRE_BANDS}
    for (network, truth), folder in zip(maps, folders):
        field = read_field(folder)
        inputs = {band: field[band] for band in SPIRE_BANDS}
        cat = extract_sources(network, snr=config.snr, method=method, p_min=p_min, command="calibration")
        fields.append((cat, inputs))
        fitted = refine(cat, inputs, table_confusion)
        inner = fitted[inner_region(fitted, network, config.edge_arcsec)]
        truth = truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy]
        i_det, i_ref = match(SkyCoord(inner["ra"], inner["dec"], unit="deg"), np.asarray(inner["flux"], float),
                             SkyCoord(truth["ra"], truth["dec"], unit="deg"), column_mjy(truth, f"flux_{TARGET_BAND}"),
                             config.radius)
        calibration = _field_calibration(folder)
        for k, band in enumerate(SPIRE_BANDS):
            pairs[band][0].append(np.asarray(inner[f"flux_{band}_forced"], float)[i_det])
            pairs[band][1].append(column_mjy(truth[i_ref], f"flux_{band}") * calibration[k])
    curves = {}
    for band, (fit, true) in pairs.items():
        fit, true = np.concatenate(fit), np.concatenate(true)
        above = (true >= 20) & np.isfinite(fit)
        record = {"n_pairs": int(np.isfinite(fit).sum()),
                  "ratio_above_20mjy": float(np.median(fit[above] / true[above])) if above.any() else float("nan")}
        try:
            record |= fit_flux_curve(fit, true).to_dict()
        except ValueError as error:
            record["not_fitted"] = str(error)
        curves[band] = record
    fitted_curves = {band: FluxCurve.from_dict(r) for band, r in curves.items() if "nodes_mjy" in r}
    pooled = {band: ([], []) for band in SPIRE_BANDS}
    for cat, inputs in fields:
        cat = refine(cat, inputs, table_confusion, curves=fitted_curves)
        for band, r in residuals(cat, inputs).items():
            ok = np.isfinite(r.map.data)
            pooled[band][0].append(r.map.data[ok])
            pooled[band][1].append(np.asarray(r.map.noise)[ok])
    confusion, noise = {}, {}
    for band, (values, sigmas) in pooled.items():
        _, _, std = sigma_clipped_stats(np.concatenate(values), sigma=5.0, maxiters=10)
        noise[band] = float(np.sqrt(np.mean(np.concatenate(sigmas) ** 2)))
        confusion[band] = round(float(np.sqrt(max(std**2 - noise[band] ** 2, 0.0))), 4)
    return {"curves": curves, "confusion_mjy": confusion, "noise_mjy": {b: round(v, 4) for b, v in noise.items()},
            "catalogue_method": method or default_method(maps[0][0]), "fields": [Path(f).name for f in folders]}


def _field_calibration(folder) -> tuple[float, ...]:
    """The SPIRE calibration factors a simulated field was made with (its ``simulation.json``), or 1s."""
    import json

    record = Path(folder) / "simulation.json"
    if not record.exists():
        return (1.0, 1.0, 1.0)
    return tuple(SimulationConfig.from_dict(json.loads(record.read_text())["simulation"]).calibration)


def measure_presence(maps: list, config: EvalConfig = EvalConfig()) -> dict:
    """A catalogue-head network's presence calibration (:func:`galaxysr.cells.presence_calibration`
    of the head's peak-cell score ``p_peak``) on :func:`calibration_maps` (fields of the training
    distribution, never the held-out sky): a detection is real when it is matched one to one,
    within ``config.radius``, to a true source of S450 ≥ ``config.truth_min_mjy``; on those matches
    the head's positional and log-flux σ's are scaled to honesty (:func:`galaxysr.cells.error_scales`)."""
    from ..catalogue import head_sources
    from ..cells import error_scales, presence_calibration
    from .metrics import match

    scores, reals, pairs = [], [], []
    for network, truth in maps:
        head = head_sources(network, p_min=0.0)
        head = head[inner_region(head, network, config.edge_arcsec)]
        truth = truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy]
        found, of = match(SkyCoord(head["ra"], head["dec"], unit="deg"), np.asarray(head[f"flux_{TARGET_BAND}"]),
                          SkyCoord(truth["ra"], truth["dec"], unit="deg"), column_mjy(truth, f"flux_{TARGET_BAND}"),
                          config.radius)
        real = np.zeros(len(head), bool)
        real[found] = True
        scores.append(np.asarray(head["p_peak"], float))
        reals.append(real)
        pairs.append(_head_pairs(head[found], truth[of]))
    pairs = {k: np.concatenate([p[k] for p in pairs]) for k in pairs[0]}
    scales = error_scales(pairs["offset"], pairs["pos_err"], pairs["log_true"], pairs["log_mean"], pairs["log_sigma"])
    return presence_calibration(np.concatenate(scores), np.concatenate(reals), "p_peak", *scales)


def _head_pairs(head: Table, truth: Table) -> dict:
    """Matched head detections and true sources, row for row: offsets (arcsec), positional σ
    (arcsec), and per catalogue band log10 true flux, the head's log10 median and its σ (dex)."""
    from ..cells import CATALOGUE_BANDS

    offset = SkyCoord(head["ra"], head["dec"], unit="deg").separation(
        SkyCoord(truth["ra"], truth["dec"], unit="deg")).arcsec
    with np.errstate(divide="ignore", invalid="ignore"):
        log_true = np.column_stack([np.log10(column_mjy(truth, f"flux_{b}")) if f"flux_{b}" in truth.colnames
                                    else np.full(len(truth), np.nan) for b in CATALOGUE_BANDS])
        median = np.column_stack([np.asarray(head[f"flux_{b}"], float) for b in CATALOGUE_BANDS])
        lo, hi = (np.column_stack([np.asarray(head[f"flux_{b}_{s}"], float) for b in CATALOGUE_BANDS])
                  for s in ("lo", "hi"))
    log_true[~np.isfinite(log_true)] = np.nan
    return {"offset": offset, "pos_err": np.asarray(head["pos_err"], float), "log_true": log_true,
            "log_mean": np.log10(median), "log_sigma": 0.5 * np.log10(hi / lo)}


def calibrate_artifact(artifact, data, progress: bool = False):
    """Measure ``artifact``'s output beam, calibrate its catalogue's fluxes (:func:`measure_flux_scale`,
    sky-model networks: the flux curves the catalogue applies) and its errors on the calibration fields
    of DataConfig ``data`` (the training distribution, simulated on first use), and record them
    in the artifact's calibration.json (:func:`galaxysr.inference.record_calibration`); then
    run the health check (:mod:`galaxysr.evaluate.health`: beam, peak/true, catalogue
    completeness and flux against the bounds good runs reach), recorded in its
    ``metrics.json`` and in ``artifact.meta["health"]``. A run too broken for its errors to be
    calibrated (too few sources found) keeps them uncalibrated and fails the health check, which
    says so. Returns the reloaded artifact."""
    from .health import catalogue_health, health_verdict, record_health

    from ..datasets import CALIBRATION_SEEDS, ensure_simulated_fields
    from ..inference import record_calibration

    folders = ensure_simulated_fields(data, list(CALIBRATION_SEEDS), progress)
    artifact = record_calibration(artifact)  # from the raw outputs, not on top of an earlier calibration
    maps = calibration_maps(artifact, folders, progress)
    artifact = record_calibration(artifact, beam=measure_effective_beam(artifact, folders, maps=maps))
    # A sky-model network draws its map at the band's beam, so the measured beam changes
    # nothing in it: the same maps serve. A legacy map network's PSF is the measured beam.
    again, scale = None, None
    if artifact.config.has_sky:
        scale = measure_flux_scale(maps)
        artifact = record_calibration(artifact, flux_scale=scale)
        # The errors are calibrated on the fluxes the catalogue now reports.
        again = [(replace(network, flux_curves=artifact.calibration.flux_curves()), truth) for network, truth in maps]
    failed = None
    if artifact.config.uncertainty_head:
        # The ERROR plane first: the catalogue head's forced errors are read off it (map_rms), so
        # their calibration below must see the plane users get, not the uncalibrated one.
        try:
            errors = calibrate_errors(source_errors(artifact, folders, progress=progress, maps=again))
        except ValueError as error:  # a broken run finds too few sources: the health check must still say so
            failed = str(error)
        else:
            artifact = record_calibration(artifact, errors=errors)
    if "cells" in artifact.config.output_channels:
        try:
            artifact = record_calibration(artifact, presence=measure_presence(maps))
        except ValueError as error:  # a head that finds nothing real (or nothing false) cannot be calibrated
            warnings.warn(f"{artifact.path}: the catalogue head's p_real is not calibrated: {error}", stacklevel=2)
        else:
            # Made again when the ERROR plane was calibrated: its forced errors are measured as users get them.
            fresh = maps if artifact.calibration.errors is None else calibration_maps(artifact, folders, progress)
            with_p = [(replace(network, meta=network.meta | presence_cards(artifact.calibration.presence)), truth)
                      for network, truth in fresh]
            scale = {**scale, "curves": {**scale["curves"], **measure_head_flux_curve(with_p)}}
            artifact = record_calibration(artifact, flux_scale=scale)
            again = [(replace(network, flux_curves=artifact.calibration.flux_curves(),
                              meta=network.meta | presence_cards(artifact.calibration.presence)), truth)
                     for network, truth in fresh]
    artifact = record_calibration(artifact, reobservation=measure_reobservation(again or maps, folders))
    # Made again: the maps of the calibrated model carry its error calibration and flux curves.
    catalogue = catalogue_health(calibration_maps(artifact, folders, progress))
    if scale is not None:
        # The flux scale read the way the evaluation reads it: what the held-out sky will show.
        catalogue["error_plane_flux_ratio_above_9mjy"] = catalogue["median_flux_ratio_above_9mjy"]
        catalogue["median_flux_ratio_above_9mjy"] = scale["network_ratio"]
    verdict = health_verdict(artifact.calibration.effective_beam, catalogue)
    verdict["catalogue"] = catalogue
    if failed is not None:
        verdict.update(ok=False, error_calibration=f"not calibrated: {failed}")
    record_health(artifact, verdict)
    artifact.meta["health"] = verdict
    return artifact


def evaluate_real(folder, artifact=None, config: EvalConfig = EvalConfig(), max_rms_mjy: float = 2.0,
                  progress: bool = True) -> dict:
    """Score on a real pair: the reference is the SCUBA-2 450 µm catalogue (S/N ≥ config.snr)
    inside the part of the map with rms ≤ ``max_rms_mjy``."""
    from ..inference import load_artifact, super_resolve_maps

    artifact = artifact or load_artifact()
    field = read_field(folder)
    s2 = field[TARGET_BAND]
    if s2.noise is None:
        raise MapError(f"{folder}: the 450 µm map has no rms map; it is needed to define the reference catalogue")
    network = super_resolve_maps({b: field[b] for b in artifact.config.input_bands}, artifact, progress=progress)
    reference = extract_sources(s2, snr=config.snr)
    reference.rename_column("flux", f"flux_{TARGET_BAND}")
    covered = reproject_map(s2, network.wcs, network.shape)
    good = Map(np.where(covered.noise <= max_rms_mjy, network.data, np.nan), network.wcs, network.band)
    reference = reference[inner_region(reference, good, config.edge_arcsec)]
    results = {}
    for name, m in method_maps(Field(field.maps, None, field.path), network, mean_colour()).items():
        cat = extract_sources(m, snr=config.snr, min_flux_mjy=config.min_flux_mjy)
        results[name] = score(cat[inner_region(cat, good, config.edge_arcsec)], reference, f"flux_{TARGET_BAND}",
                              config)
    return {"methods": results, "paired_offsets": paired_offsets(results, config.flux_bins_mjy),
            "fields": [str(folder)], "reference": "SCUBA-2 450 µm extraction",
            "model": {"name": artifact.name, "sha256": artifact.sha256}, "config": jsonable(asdict(config)),
            "_example": {"field": field, "maps": {"network": network, "scuba2": covered}}}


