"""Scores of a catalogue against a reference: matching, completeness, purity, flux and
position statistics, how maps render isolated sources, error statistics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table

from ..config import EVAL_FIELD_DIR, EVALUATION_SEEDS, SKIES, option
from ..instruments import BANDS, FWHM_PER_SIGMA, TARGET_BAND
from ..maps import FluxCurve, Map
from ..simulate import column_mjy

#: Targets on the held-out sky (Lauritsen et al. 2021's, tightened where galaxysr must do
#: better; see docs/evaluation.md): (comparison, value).
TARGETS = {"completeness_above_15mjy": (">=", 0.95), "min_purity": (">=", 0.87),
           "median_offset_arcsec_above_10mjy": ("<=", 1.5), "median_flux_ratio_above_9mjy": ("within", 0.10),
           "median_flux_ratio_5_9mjy": ("within", 0.15), "output_fwhm_arcsec": ("<=", 8.3)}


@dataclass(frozen=True)
class EvalConfig:
    """How fields are scored.

    Attributes
    ----------
    seeds, area_deg2 : tuple of int, float
        Held-out simulated fields (made into ``field_dir`` on first use), for each sky.
    skies : tuple of str
        Which skies to score (:data:`SKIES`): ``held_out`` (:data:`~galaxysr.simulate.HELD_OUT_SKY`,
        an SED family and T(z) relation never drawn in training — the headline numbers) and
        ``training`` (drawn from the training prior at the evaluation seeds).
    snr, min_flux_mjy : float
        Detection: S/N threshold against the map noise, with an absolute floor (mJy/beam)
        for near-noiseless maps (network output, truth).
    truth_min_mjy : float
        Truth sources fainter than this are not counted as missed.
    match_radius_arcsec : float or None
        One-to-one matching radius; default the 450 µm beam FWHM.
    flux_bins_mjy : tuple of float
        Bin edges for completeness, purity and flux recovery.
    edge_arcsec : float
        Sources this close to a map edge are left out (the SPIRE 500 µm beam).
    """

    seeds: tuple[int, ...] = option(EVALUATION_SEEDS, flag="--seeds", help="held-out field seeds")
    area_deg2: float = option(0.25, flag="--area", help="area of each held-out field (deg²)")
    field_dir: str = option(EVAL_FIELD_DIR, flag="--field-dir", help="where held-out fields are cached")
    skies: tuple[str, ...] = option(("held_out", "training"), flag="--sky", choices=SKIES,
                                    help="simulated skies to score (the first one goes into --update-readme)")
    snr: float = option(4.0, flag="--snr", help="detection S/N")
    min_flux_mjy: float = option(3.0, flag="--min-flux", help="detection floor (mJy/beam)")
    truth_min_mjy: float = 2.0
    match_radius_arcsec: float | None = option(None, flag="--radius", metavar="ARCSEC",
                                               help="match radius in arcsec (default: 450 µm FWHM)")
    flux_bins_mjy: tuple[float, ...] = (3, 5, 7, 9, 12, 15, 20, 30, 50, 100)
    edge_arcsec: float = BANDS["spire_500"].fwhm.to_value(u.arcsec)

    @property
    def radius(self) -> u.Quantity:
        value = self.match_radius_arcsec
        return (BANDS[TARGET_BAND].fwhm if value is None else value * u.arcsec).to(u.arcsec)


def match(detections: SkyCoord, det_flux: np.ndarray, reference: SkyCoord, ref_flux: np.ndarray,
          radius: u.Quantity) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches (index into detections, index into reference) within ``radius``.

    Reference sources claim detections brightest first, each its nearest free detection,
    so a faint neighbour cannot steal the counterpart of a bright source and no detection
    is matched twice.
    """
    if len(detections) == 0 or len(reference) == 0:
        return np.array([], int), np.array([], int)
    i_ref, i_det, sep, _ = detections.search_around_sky(reference, radius)
    order = np.lexsort((sep.arcsec, -np.asarray(ref_flux)[i_ref]))
    used_det, used_ref, pairs = set(), set(), []
    for k in order:
        r, d = int(i_ref[k]), int(i_det[k])
        if r in used_ref or d in used_det:
            continue
        used_ref.add(r)
        used_det.add(d)
        pairs.append((d, r))
    if not pairs:
        return np.array([], int), np.array([], int)
    d, r = np.array(pairs).T
    return d, r


def binned_fraction(values: np.ndarray, hit: np.ndarray, edges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of ``hit`` in bins of ``values``: (bin centres, fraction, counts)."""
    edges = np.asarray(edges, float)
    index = np.digitize(values, edges) - 1
    counts = np.array([np.sum(index == i) for i in range(len(edges) - 1)])
    hits = np.array([np.sum(hit[index == i]) for i in range(len(edges) - 1)])
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(counts > 0, hits / counts, np.nan)
    return np.sqrt(edges[1:] * edges[:-1]), fraction, counts


#: Right-ascension turn between pooled fields (deg): far more than a field is wide.
FIELD_TURN_DEG = 30.0


def pool_fields(pairs) -> tuple[Table, Table]:
    """Several fields' (catalogue, reference) pairs as one pair that :func:`score` can match as one.

    The simulated fields share one sky position (they differ by seed), so catalogues and truths
    stacked as they are would let a detection of one field match a source of another (at the
    held-out sky's density a random position has a ≥ 2 mJy source of another field within 7.9″ a
    quarter of the time). Field k is turned by k × :data:`FIELD_TURN_DEG` in right ascension first:
    a rotation about the pole, so every separation within a field is kept exactly."""
    from astropy.table import vstack

    cats, refs = [], []
    for k, (catalogue, reference) in enumerate(pairs):
        turned = []
        for table in (catalogue, reference):
            table = table.copy(copy_data=True)
            if len(table):
                ra = table["ra"]
                unit = getattr(ra, "unit", None) or u.deg
                table["ra"] = (np.asarray(ra, float) + FIELD_TURN_DEG * k * u.deg.to(unit)) % (360 * u.deg.to(unit))
                if getattr(ra, "unit", None) is not None:
                    table["ra"].unit = ra.unit
            turned.append(table)
        cats.append(turned[0])
        refs.append(turned[1])
    return vstack(cats, metadata_conflicts="silent"), vstack(refs, metadata_conflicts="silent")


def score_fields(pairs, ref_flux_column: str, config: EvalConfig) -> dict:
    """:func:`score` of several fields' (catalogue, reference) pairs pooled (:func:`pool_fields`:
    each detection matched within its own field only)."""
    return score(*pool_fields(pairs), ref_flux_column, config)


def score(catalogue: Table, reference: Table, ref_flux_column: str, config: EvalConfig) -> dict:
    """Completeness, purity, flux and position statistics of ``catalogue`` vs ``reference``."""
    det = SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg")
    ref = SkyCoord(reference["ra"], reference["dec"], unit="deg")
    s_det = np.asarray(catalogue["flux"], float)
    s_ref = column_mjy(reference, ref_flux_column)
    i_det, i_ref = match(det, s_det, ref, s_ref, config.radius)
    ref_hit = np.zeros(len(reference), bool)
    ref_hit[i_ref] = True
    det_hit = np.zeros(len(catalogue), bool)
    det_hit[i_det] = True
    bins = config.flux_bins_mjy
    centres, completeness, n_ref = binned_fraction(s_ref, ref_hit, bins)
    _, purity, n_det = binned_fraction(s_det, det_hit, bins)
    offsets = det[i_det].separation(ref[i_ref]).arcsec if len(i_det) else np.array([])
    ratio = s_det[i_det] / s_ref[i_ref] if len(i_det) else np.array([])
    matched_true = s_ref[i_ref]
    ratio_stats = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (matched_true >= lo) & (matched_true < hi)
        ratio_stats.append(np.percentile(ratio[sel], [16, 50, 84]).tolist() if sel.sum() >= 3 else [np.nan] * 3)
    offset_per_bin = [float(np.median(offsets[(matched_true >= lo) & (matched_true < hi)]))
                      if np.sum((matched_true >= lo) & (matched_true < hi)) >= 3 else float("nan")
                      for lo, hi in zip(bins[:-1], bins[1:])]
    bright = s_ref >= 15
    above10 = matched_true >= 10
    above9 = matched_true >= 9
    faint = (matched_true >= 5) & (matched_true < 9)
    enough = n_det >= 5
    return {
        "n_detections": int(len(catalogue)), "n_reference": int(len(reference)), "n_matched": int(len(i_det)),
        "bins_mjy": list(bins), "bin_centres_mjy": centres.tolist(),
        "completeness": completeness.tolist(), "n_reference_per_bin": n_ref.tolist(),
        "purity": purity.tolist(), "n_detections_per_bin": n_det.tolist(),
        "flux_ratio_16_50_84": ratio_stats, "median_offset_arcsec_per_bin": offset_per_bin,
        "offsets_arcsec": offsets.tolist(), "matched_true_flux_mjy": matched_true.tolist(),
        "flux_ratio": ratio.tolist(), "matched_reference_index": i_ref.tolist(),
        "completeness_above_15mjy": float(ref_hit[bright].mean()) if bright.any() else float("nan"),
        "min_purity": float(np.nanmin(purity[enough])) if enough.any() else float("nan"),
        "median_offset_arcsec_above_10mjy": float(np.median(offsets[above10])) if above10.any() else float("nan"),
        "median_flux_ratio_above_9mjy": float(np.median(ratio[above9])) if above9.any() else float("nan"),
        "median_flux_ratio_5_9mjy": float(np.median(ratio[faint])) if faint.any() else float("nan"),
    }


def paired_offsets(methods: dict, bins, against: str = "network") -> dict:
    """Median position offsets of ``against`` and of every other method on the reference
    sources *both* recovered, per reference-flux bin and above 10 mJy.

    Each method's own median offset is taken over the sources it finds; a method that
    finds only the brightest, most isolated sources of a bin looks better placed than one
    that also finds the hard ones. On the common sources the comparison is like for like.
    ``methods`` are :func:`score` results against the same (pooled) reference table.
    """
    mine = methods[against]
    offset = dict(zip(mine["matched_reference_index"], mine["offsets_arcsec"]))
    flux = dict(zip(mine["matched_reference_index"], mine["matched_true_flux_mjy"]))
    out = {}
    for name, theirs in methods.items():
        if name == against:
            continue
        other = dict(zip(theirs["matched_reference_index"], theirs["offsets_arcsec"]))
        common = sorted(set(offset) & set(other))
        f = np.array([flux[k] for k in common])
        a = np.array([offset[k] for k in common])
        b = np.array([other[k] for k in common])

        def medians(sel):
            return (int(sel.sum()), *((float(np.median(a[sel])), float(np.median(b[sel]))) if sel.sum() >= 3
                                      else (float("nan"), float("nan"))))

        per_bin = [medians((f >= lo) & (f < hi)) for lo, hi in zip(bins[:-1], bins[1:])]
        n10, a10, b10 = medians(f >= 10)
        out[name] = {"n_per_bin": [p[0] for p in per_bin], f"{against}_per_bin": [p[1] for p in per_bin],
                     "other_per_bin": [p[2] for p in per_bin], "n_above_10mjy": n10,
                     f"{against}_above_10mjy": a10, "other_above_10mjy": b10}
    return out


def stamps_at(m: Map, positions: SkyCoord, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Stamps of ``m`` (2 half + 1 pixels square) centred on ``positions`` to a fraction of
    a pixel (cubic-spline shift), and the indices of the positions that had a full stamp."""
    from scipy.ndimage import shift

    stamps, used = [], []
    xs, ys = m.wcs.world_to_pixel(positions)
    for i, (x, y) in enumerate(zip(np.atleast_1d(xs), np.atleast_1d(ys))):
        ix, iy = int(np.round(x)), int(np.round(y))
        if half + 2 <= ix < m.shape[1] - half - 2 and half + 2 <= iy < m.shape[0] - half - 2:
            big = m.data[iy - half - 2:iy + half + 3, ix - half - 2:ix + half + 3].astype(np.float64)
            if np.isfinite(big).all():
                stamps.append(shift(big, (iy - y, ix - x), order=3, mode="nearest")[2:-2, 2:-2])
                used.append(i)
    return np.asarray(stamps), np.asarray(used, int)


def stamp_ratios(m: Map, stamps: np.ndarray, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stamp (centred on a true position, :func:`stamps_at`) of map ``m``: the largest
    value within half a nominal beam FWHM over the true ``flux`` (mJy), and the flux within
    2 FWHM less the 2–3 FWHM annulus' median times that area, in beam units, over ``flux``."""
    half = stamps.shape[-1] // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    r = np.hypot(xx, yy) * m.pixel_scale.to_value(u.arcsec)
    nominal = m.band.fwhm.to_value(u.arcsec)
    peaks = np.max(np.where(r <= nominal / 2, stamps, -np.inf), axis=(1, 2)) / flux
    inner, annulus = r <= 2 * nominal, (r > 2 * nominal) & (r <= 3 * nominal)
    background = np.median(stamps[:, annulus], axis=1)
    integrated = ((np.sum(stamps[:, inner], axis=1) - background * inner.sum())
                  / m.band.beam_area_pixels(m.pixel_scale) / flux)
    return peaks, integrated


def isolated_source_stats(samples: list, half: int = 18) -> dict:
    """How maps render bright isolated point sources of known position and flux.

    ``samples`` is a list of (Map, SkyCoord positions, true fluxes in mJy), one per field,
    all maps of the same band and pixel scale. Returns ``fwhm_arcsec`` (a 2-D Gaussian
    fitted to the stack of the stamps, each centred on the true position to a fraction of
    a pixel and divided by the true flux — so position errors widen it, as they do for a
    user stacking on known positions), ``stack_peak_ratio`` (that Gaussian's amplitude),
    ``peak_ratio`` (median of the map's largest value within half a nominal beam FWHM of
    each true position over the true flux: the flux a user reads off the map),
    ``integrated_ratio`` (median flux within 2 nominal FWHM, less the median of the annulus
    at 2–3 FWHM times that area — neighbours' light —, in the band's nominal beam units,
    over the true flux) and ``n``.
    """
    from astropy.modeling import fitting, models

    all_stamps, all_flux = [], []
    for m, positions, flux in samples:
        stamps, used = stamps_at(m, positions, half)
        if len(used):
            all_stamps.append(stamps)
            all_flux.append(np.asarray(flux, float)[used])
    n = int(sum(len(f) for f in all_flux))
    if n < 3:
        return {"fwhm_arcsec": float("nan"), "stack_peak_ratio": float("nan"), "peak_ratio": float("nan"),
                "integrated_ratio": float("nan"), "n": n}
    m = samples[0][0]
    stamps, flux = np.concatenate(all_stamps), np.concatenate(all_flux)
    pixel = m.pixel_scale.to_value(u.arcsec)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    peaks, integrated = stamp_ratios(m, stamps, flux)
    stack = np.mean(stamps / flux[:, None, None], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a poor fit shows as an odd FWHM in the report, not as a warning
        fit = fitting.LevMarLSQFitter()(models.Gaussian2D(stack.max(), 0, 0, 2, 2) + models.Const2D(0), xx, yy,
                                        stack)
    sigma = np.sqrt(abs(fit[0].x_stddev.value * fit[0].y_stddev.value))
    return {"fwhm_arcsec": float(sigma * FWHM_PER_SIGMA * pixel), "stack_peak_ratio": float(fit[0].amplitude.value),
            "peak_ratio": float(np.median(peaks)), "integrated_ratio": float(np.median(integrated)), "n": n}


def isolated_bright(truth: Table, min_flux: float = 15.0, isolation_arcsec: float = 25.0,
                    neighbour_fraction: float = 0.25) -> np.ndarray:
    """Indices of truth sources above ``min_flux`` (450 µm, mJy) with no neighbour brighter
    than ``neighbour_fraction`` of their flux within ``isolation_arcsec``."""
    coords = SkyCoord(truth["ra"], truth["dec"], unit="deg")
    flux = column_mjy(truth, f"flux_{TARGET_BAND}")
    keep = []
    for i in np.flatnonzero(flux >= min_flux):
        near = coords.separation(coords[i]).arcsec < isolation_arcsec
        near[i] = False
        if not np.any(flux[near] > neighbour_fraction * flux[i]):
            keep.append(i)
    return np.asarray(keep, int)


def plain_peaks(m: Map, nsigma: float = 3.0) -> Table:
    """A map read the way a quick script reads it: every local maximum in a 3 × 3 box above
    ``nsigma`` × the map's robust scatter (1.4826 × the median absolute deviation of its
    finite pixels), its pixel value taken as the source's flux (mJy; a point source of S mJy
    peaks at S mJy/beam). No PSF fit, no grouping: a source broken into a checkerboard, or
    drawn wider and fainter than its beam, reads here as it does to a user's eye.

    Returns a Table of ``ra``, ``dec`` (deg), ``x``, ``y`` (pixels) and ``flux`` (mJy),
    brightest first; ``meta["sigma_mjy"]`` is the scatter used."""
    from photutils.detection import find_peaks
    from photutils.utils.exceptions import NoDetectionsWarning

    data = np.asarray(m.to(u.mJy / u.beam).data, np.float64)
    finite = np.isfinite(data)
    sigma = robust_std(data[finite])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        peaks = find_peaks(np.where(finite, data, np.nanmin(data) if finite.any() else 0.0), nsigma * sigma,
                           box_size=3, mask=~finite)
    if peaks is None or not len(peaks):
        table = Table({"ra": [] * u.deg, "dec": [] * u.deg, "x": np.array([], float), "y": np.array([], float),
                       "flux": [] * u.mJy})
    else:
        x, y = np.asarray(peaks["x_peak"], float), np.asarray(peaks["y_peak"], float)
        ra, dec = m.wcs.pixel_to_world_values(x, y)
        order = np.argsort(-np.asarray(peaks["peak_value"], float))
        table = Table({"ra": (np.asarray(ra) % 360)[order] * u.deg, "dec": np.asarray(dec)[order] * u.deg,
                       "x": x[order], "y": y[order], "flux": np.asarray(peaks["peak_value"], float)[order] * u.mJy})
    table.meta.update({"reading": "plain local maxima (3 x 3) above nsigma x robust scatter", "nsigma": nsigma,
                       "sigma_mjy": sigma})
    return table


def split_sources(peaks: Table, truth: Table, min_flux: float = 20.0, radius_arcsec: float = 8.0,
                  isolation_arcsec: float = 16.0, neighbour_fraction: float = 0.2) -> dict:
    """How often the plain reading (:func:`plain_peaks`) breaks a bright source in two.

    For each truth source above ``min_flux`` (450 µm, mJy) with no other truth source
    brighter than ``neighbour_fraction`` of it within ``isolation_arcsec`` (so a second peak
    cannot be a real neighbour), the number of peaks within ``radius_arcsec``. Returns
    ``n_sources``, ``n_split`` (sources with two or more peaks), ``peaks_per_source`` (mean)
    and ``split_ids`` (indices into ``truth``)."""
    flux = column_mjy(truth, f"flux_{TARGET_BAND}")
    coords = SkyCoord(truth["ra"], truth["dec"], unit="deg")
    bright = np.flatnonzero(flux >= min_flux)
    found = SkyCoord(peaks["ra"], peaks["dec"], unit="deg") if len(peaks) else None
    counts, ids = [], []
    for i in bright:
        near = coords.separation(coords[i]).arcsec < isolation_arcsec
        near[i] = False
        if np.any(flux[near] > neighbour_fraction * flux[i]):
            continue
        n = int(np.sum(found.separation(coords[i]).arcsec < radius_arcsec)) if found is not None else 0
        counts.append(n)
        ids.append(int(i))
    counts = np.asarray(counts, int)
    return {"n_sources": int(len(counts)), "n_split": int(np.sum(counts >= 2)),
            "peaks_per_source": float(counts.mean()) if len(counts) else float("nan"),
            "split_ids": [i for i, n in zip(ids, counts) if n >= 2]}


def inner_region(catalogue: Table, grid_map: Map, edge_arcsec: float) -> np.ndarray:
    """Rows of ``catalogue`` inside ``grid_map``'s valid area, at least ``edge_arcsec`` from its edge."""
    x, y = grid_map.wcs.world_to_pixel(SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg"))
    margin = edge_arcsec / grid_map.pixel_scale.to_value(u.arcsec)
    ny, nx = grid_map.shape
    inside = (x >= margin) & (x <= nx - 1 - margin) & (y >= margin) & (y <= ny - 1 - margin)
    ix = np.clip(np.round(x).astype(int), 0, nx - 1)
    iy = np.clip(np.round(y).astype(int), 0, ny - 1)
    return inside & np.isfinite(grid_map.data[iy, ix])


#: Flux bins (mJy) in which errors are calibrated and checked.
ERROR_BINS_MJY = (3.0, 5.0, 9.0, 15.0, 30.0, 100.0)


def robust_std(z: np.ndarray) -> float:
    z = z[np.isfinite(z)]
    return float(1.4826 * np.median(np.abs(z - np.median(z)))) if len(z) >= 5 else float("nan")


def error_statistics(sources: Table, bins=ERROR_BINS_MJY, by: str = "flux_true") -> dict:
    """Per flux bin (of ``by``): the robust standard deviation of z = (S_out − S_true)/σ,
    the fraction of sources whose ±1σ interval holds the truth, and the same for the
    deboosted flux's 16–84 % interval."""
    s, e, t = (np.asarray(sources[k], float) for k in ("flux", "flux_err", "flux_true"))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (s - t) / e
    out = {"bins_mjy": list(bins), "n": [], "z_robust_std": [], "coverage_68": [], "deboosted_coverage_68": [],
           "z_median": []}
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (np.asarray(sources[by], float) >= lo) & (np.asarray(sources[by], float) < hi)
        out["n"].append(int(sel.sum()))
        out["z_robust_std"].append(robust_std(z[sel]))
        out["z_median"].append(float(np.median(z[sel])) if sel.sum() >= 5 else float("nan"))
        out["coverage_68"].append(float(np.mean(np.abs(z[sel]) <= 1)) if sel.sum() >= 5 else float("nan"))
        if "flux_deboosted_lo" in sources.colnames and sel.sum() >= 5:
            lo_d = np.asarray(sources["flux_deboosted_lo"], float)
            hi_d = np.asarray(sources["flux_deboosted_hi"], float)
            out["deboosted_coverage_68"].append(float(np.mean((t[sel] >= lo_d[sel]) & (t[sel] <= hi_d[sel]))))
        else:
            out["deboosted_coverage_68"].append(float("nan"))
    return out


def calibrate_errors(sources: Table, bins=ERROR_BINS_MJY) -> dict:
    """Factors that make the reported errors of ``sources`` (see :func:`source_errors`)
    match the scatter of measured around true fluxes: per bin of *measured* flux — what
    the map shows where the factor is applied — the robust standard deviation of
    (S_out − S_true)/σ. Returns ``flux_mjy`` (bin centres, geometric) and ``factor``, with
    the statistics before calibration."""
    s, e, t = (np.asarray(sources[k], float) for k in ("flux", "flux_err", "flux_true"))
    centres, factors = [], []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (s >= lo) & (s < hi)
        value = robust_std((s[sel] - t[sel]) / e[sel])
        if np.isfinite(value) and value > 0:
            centres.append(float(np.sqrt(lo * hi)))
            factors.append(round(value, 4))
    if not factors:
        raise ValueError("too few matched sources to calibrate the errors; use more or larger calibration fields")
    return {"flux_mjy": centres, "factor": factors, "n_sources": len(s),
            "before": error_statistics(sources, bins, by="flux")}


#: Bins of true flux (mJy) in which :func:`fit_flux_curve` sets the median S_out/S_true to 1.
#: It starts at 5 mJy: fainter sources are found only when noise and confusion lift them, so
#: their median ratio measures the selection (what deboosting treats), not the network.
FLUX_CURVE_BINS_MJY = (5.0, 7.0, 9.0, 12.0, 16.0, 22.0, 30.0, 45.0, 70.0, np.inf)


def fit_flux_curve(flux: np.ndarray, flux_true: np.ndarray, bins=FLUX_CURVE_BINS_MJY, min_sources: int = 50,
                   iterations: int = 50) -> FluxCurve:
    """The :class:`~galaxysr.maps.FluxCurve` that makes the median of c(S_out) S_out / S_true
    one in every bin of true flux, from matched pairs (measured ``flux``, ``flux_true``, mJy).

    Bins with fewer than ``min_sources`` pairs merge into the next (the last into the one
    before). Each bin's node is the median measured flux of its sources — where the factor is
    applied, a catalogue knowing only what it measured — and the factors are refined by
    fixed-point iteration, since a bin's sources spread over its neighbours' nodes. Factors
    are kept within [0.5, 2].

    Why per bin: one factor that puts bright sources right boosts the faint ones, whose PSF
    fluxes confusion already lifts (0.4, seeds 0–2: by a further 12–21 % at 5–9 mJy).
    """
    s, t = np.asarray(flux, float), np.asarray(flux_true, float)
    ok = np.isfinite(s) & np.isfinite(t) & (s > 0) & (t > 0)
    s, t = s[ok], t[ok]
    edges = [bins[0]]
    for hi in bins[1:]:
        if np.count_nonzero((t >= edges[-1]) & (t < hi)) >= min_sources:
            edges.append(hi)
    if len(edges) < 2:
        raise ValueError(f"only {np.count_nonzero(t >= bins[0])} matched sources above {bins[0]} mJy; a flux "
                         f"curve needs at least {min_sources}: use more or larger calibration fields")
    edges[-1] = bins[-1]  # the brightest sources join the last full bin
    members = [(t >= lo) & (t < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    nodes = np.array([np.median(s[sel]) for sel in members])
    keep = np.concatenate([[True], np.diff(nodes) > 0])  # a node out of order adds nothing
    nodes, members = nodes[keep], [m for m, k in zip(members, keep) if k]
    factors = np.ones(len(nodes))
    for _ in range(iterations):
        corrected = s * FluxCurve(tuple(nodes), tuple(factors))(s)
        ratio = np.array([np.median(corrected[sel] / t[sel]) for sel in members])
        factors = np.clip(factors / ratio, 0.5, 2.0)
        if np.max(np.abs(ratio - 1)) < 1e-4:
            break
    return FluxCurve(tuple(float(round(v, 4)) for v in nodes), tuple(float(round(v, 5)) for v in factors))


def jsonable(value):
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value




def binned_table(scores: dict) -> QTable:
    """The per-flux-bin numbers of :func:`score` as a table with units: bin edges and
    centres (mJy), completeness and its reference count (by true flux), purity and its
    detection count (by measured flux), median S_out/S_true with 16/84 percentiles and the
    median offset (arcsec) (by true flux)."""
    bins = np.asarray(scores["bins_mjy"], float)
    ratio = np.asarray(scores["flux_ratio_16_50_84"], float)
    return QTable({"flux_lo": bins[:-1] * u.mJy, "flux_hi": bins[1:] * u.mJy,
                   "flux_centre": np.asarray(scores["bin_centres_mjy"]) * u.mJy,
                   "completeness": np.asarray(scores["completeness"], float),
                   "n_reference": np.asarray(scores["n_reference_per_bin"], int),
                   "purity": np.asarray(scores["purity"], float),
                   "n_detections": np.asarray(scores["n_detections_per_bin"], int),
                   "flux_ratio_16": ratio[:, 0], "flux_ratio_50": ratio[:, 1], "flux_ratio_84": ratio[:, 2],
                   "median_offset": np.asarray(scores["median_offset_arcsec_per_bin"], float) * u.arcsec})
