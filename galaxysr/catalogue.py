"""Blind source extraction and photometry on any Map (super-resolved, SPIRE or SCUBA-2).

Two methods. ``"psf"`` (any map): peaks above a S/N threshold (photutils ``find_peaks``)
seed PSF photometry with a circular Gaussian of the map's beam (photutils
``PSFPhotometry``); sources closer than 1.5 FWHM are fitted together (``SourceGrouper``),
which deblends close pairs. ``"sky"`` (a super-resolved map with its sky model): the sky
model's components — local maxima with the sky pixels around them — are grouped within
half a beam; a source's flux is the sum of its group's flux and its position the
flux-weighted centre. Fluxes are in mJy: a point source of S mJy peaks at S mJy/beam.

Noise: a map with a per-pixel uncertainty (a super-resolved map's ``ERROR`` plane, a noise
map) is thresholded against it, and a source's ``flux_err`` is that uncertainty at its
position — the error of a peak, which is what the PSF amplitude measures on a map whose
errors are correlated over a beam. Other maps use their sigma-clipped scatter. See
docs/inference.md for the columns, flags and the calibration of the errors.
"""

from __future__ import annotations

import datetime
import sys
import warnings
from dataclasses import replace

import numpy as np
from astropy import units as u
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable, Table

from . import __version__
from .cells import CATALOGUE_BANDS, calibrated_p, decode_cells, presence_from_keywords
from .config import CATALOGUE_METHODS, HEAD_P_MIN
from .errors import refuse_existing
from .instruments import FWHM_PER_SIGMA, TARGET_BAND
from .maps import FLAG_BLENDED, FLAG_EDGE, MJY_PER_BEAM, Map

__all__ = ["extract_sources", "head_sources", "draw_catalogue", "measured_plane", "HEAD_COLUMNS", "HEAD_P_MIN", "forced_photometry", "point_source_design", "refine_positions", "blend_inflation", "sky_components", "DEFAULT_METHOD", "default_method", "deboost", "map_rms", "write_catalogue", "write_priors", "COLUMNS", "DEFAULT_FLOOR_MJY",
           "MAX_GROUP", "owned_rows", "drawn_cards"]

#: Largest group of overlapping sources fitted jointly (see _psf_photometry).
MAX_GROUP = 12
#: Default detection floor (mJy/beam): a super-resolved map's error is small in blank sky,
#: and features below this are not trusted as sources (docs/inference.md).
DEFAULT_FLOOR_MJY = 2.0
#: Deboosting prior: the 450 µm counts are taken as dN/dS ∝ S^-2.59 (Wang et al. 2017,
#: STUDIES) above this flux (mJy), where sources are distinct at 7.9″ resolution (about
#: the 450 µm confusion noise); no prior mass below it.
DEBOOST_MIN_MJY = 1.0
DEBOOST_SLOPE = -2.59

#: The columns of a catalogue and what they mean (also written into the table's meta).
COLUMNS = {
    "id": "running number, brightest first",
    "ra": "right ascension (ICRS) of the PSF fit or of the sky model's flux-weighted centre [deg]",
    "dec": "declination (ICRS), as ra [deg]",
    "x": "column of the source on the map grid, 0-based, pixel centres at integers (numpy/astropy)",
    "y": "row of the source, as x",
    "flux": "flux density: the PSF fit's peak in mJy/beam (method psf; times the model's flux calibration "
            "for a super-resolved map, see meta flux_calibration) or the sum of the sky model's "
            "components within half a beam (method sky) [mJy]",
    "flux_err": "1-sigma error of flux: the map's uncertainty at the source (ERROR plane or rms; times the "
                "flux calibration's factor where flux has one) [mJy]",
    "snr": "flux / flux_err",
    "det_snr": "detection significance: flux / the map's background uncertainty at the source "
               "(median of the uncertainty over the surrounding 4 x 4 beams)",
    "flux_deboosted": "posterior median flux with the 450 um counts prior (Wang et al. 2017) [mJy]",
    "flux_deboosted_lo": "16th percentile of that posterior [mJy]",
    "flux_deboosted_hi": "84th percentile of that posterior [mJy]",
    "group_size": "number of sources fitted jointly with this one (psf), or within 1.5 beam FWHM of it (sky); "
                  "1 = isolated",
    "flags": "bits: 1 blended, 2 within a beam of the map edge or of a pixel without data, "
             "4 an input map had a gap filled here, 8 an input map's noise here is over twice its median",
}


#: Method ``"head"``: the columns it adds to :data:`COLUMNS` (description, unit).
HEAD_COLUMNS = {
    "p_real": ("probability that the source is real: the catalogue head's score calibrated on fields of the "
               "training distribution (see meta p_real)", None),
    "p": ("the catalogue head's own probability that a source is centred here (uncalibrated)", None),
    "pos_err": ("1-sigma positional error per axis (catalogue head) [arcsec]", u.arcsec),
    **{f"flux_{band}{suffix}": (f"{band}: the catalogue head's posterior median flux{what} [mJy]", u.mJy)
       for band in CATALOGUE_BANDS if band != TARGET_BAND
       for suffix, what in (("", ""), ("_err", ", 1-sigma error (half its 16-84 % range)"))},
}
#: The head's raw p below which a detection is not decoded (p_real is then read above it).
HEAD_DECODE_P = 0.05


def map_rms(m: Map) -> np.ndarray | float:
    """Per-pixel 1σ noise (mJy/beam): the noise (or error) map if there is one, else the
    sigma-clipped standard deviation of the map (instrumental + confusion)."""
    if m.noise is not None:
        return m.to(MJY_PER_BEAM).noise
    _, _, std = sigma_clipped_stats(m.to(MJY_PER_BEAM).data, sigma=3.0, maxiters=10)
    return float(std)


def background_rms(m: Map, fwhm_px: float) -> np.ndarray | float:
    """The uncertainty of the blank sky around each pixel (mJy/beam): the median of
    :func:`map_rms` over blocks of 4 × 4 beams, expanded back to the map's pixels.

    A super-resolved map's ERROR plane is large *on* sources — a source's peak is uncertain
    in position and shape, so the pixel error there grows with its flux — which makes it the
    right ``flux_err`` but the wrong yardstick for detection: a bright source would never
    reach a fixed S/N against it. Detection is judged against the sky around the source.
    """
    rms = map_rms(m)
    if np.ndim(rms) == 0:
        return rms
    rms = np.asarray(rms, np.float64)
    block = max(1, int(round(4 * fwhm_px)))
    ny, nx = -(-rms.shape[0] // block), -(-rms.shape[1] // block)
    padded = np.full((ny * block, nx * block), np.nan)
    padded[:rms.shape[0], :rms.shape[1]] = rms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # blocks with no data stay NaN
        medians = np.nanmedian(padded.reshape(ny, block, nx, block), axis=(1, 3))
    return np.repeat(np.repeat(medians, block, 0), block, 1)[:rms.shape[0], :rms.shape[1]]


def deboost(flux: np.ndarray, err: np.ndarray, min_flux_mjy: float = DEBOOST_MIN_MJY,
            slope: float = DEBOOST_SLOPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deboosted fluxes: median and 16/84th percentiles of the posterior
    p(S | S_obs) ∝ N(S_obs; S, σ) × S^slope for S ≥ ``min_flux_mjy`` (mJy).

    Sources near a detection threshold are more often faint ones scattered up than bright
    ones scattered down, because faint sources are many (Coppin et al. 2005); the counts
    prior undoes that on average. Returns (median, lo, hi) in mJy.
    """
    flux, err = np.atleast_1d(np.asarray(flux, float)), np.atleast_1d(np.asarray(err, float))
    out = np.full((3, len(flux)), np.nan)
    for i, (s, e) in enumerate(zip(flux, err)):
        if not (np.isfinite(s) and np.isfinite(e) and e > 0):
            continue
        grid = np.linspace(min_flux_mjy, max(s + 8 * e, 2 * min_flux_mjy), 2000)
        log_post = slope * np.log(grid) - 0.5 * ((s - grid) / e) ** 2
        post = np.exp(log_post - log_post.max())
        cdf = np.cumsum(post)
        cdf /= cdf[-1]
        out[:, i] = np.interp([0.5, 0.16, 0.84], cdf, grid)
    return out[0], out[1], out[2]


#: A sky-model component is seeded only at a sky pixel holding more than this fraction of
#: the detection floor (see :func:`sky_components`).
SKY_PEAK_FLOOR = 0.05

#: The catalogue of a map without catalogue-head cells: PSF fits on the map. Measured on the
#: held-out sky with the 0.3 model (docs/evaluation/report.md): PSF completeness ≥ 15 mJy 95.6 %,
#: S_out/S_true ≥ 9 mJy 0.945, purity ≥ 92.6 %; sky-model components 92.2 %, 1.158 (their sums take
#: in the spread the network leaves around each source), 93.6 %. A map with cells gets the head's
#: catalogue (:func:`default_method`).
DEFAULT_METHOD = "psf"


def default_method(m: Map) -> str:
    """The catalogue ``extract_sources`` makes of ``m`` when no method is named: the catalogue
    head's (``"head"``) for a map of a catalogue-head network, which on the held-out sky finds
    98.5 % of the sources above 15 mJy and 61 % at 5–10 mJy where PSF fits on the same map find
    93.6 % and 30 % (docs/evaluation.md); else PSF fits (:data:`DEFAULT_METHOD`)."""
    return "head" if m.cells is not None else DEFAULT_METHOD


def sky_components(sky: np.ndarray, group_px: float, radius_px: float, floor: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sources of a sky model (mJy per sky pixel): its components — each local maximum
    above ``floor`` with the sky pixels that belong to it (its watershed basin) within
    ``radius_px`` of it — grouped friends-of-friends within ``group_px``. Returns x, y (the
    group's flux-weighted centre, sky-grid pixels), flux (the group's sum, mJy) and the
    number of components in each group.

    ``floor`` keeps the faint haze a network leaves over blank sky from seeding components
    (and from chaining neighbours into one group)."""
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    from skimage.segmentation import watershed

    sky = np.where(np.isfinite(sky), np.asarray(sky, np.float64), 0.0)
    positive = sky > 0
    peaks = (sky == ndimage.maximum_filter(sky, size=3, mode="constant")) & (sky > floor) & positive
    markers, n = ndimage.label(peaks)
    if n == 0:
        empty = np.array([], float)
        return empty, empty, empty, np.array([], int)
    # Each positive pixel goes to the peak whose basin it lies in, if that peak is near.
    labels = watershed(-sky, markers, mask=positive)
    index = np.arange(1, n + 1)
    py, px = (np.asarray(v) for v in zip(*ndimage.center_of_mass(peaks, markers, index)))
    yy, xx = np.indices(sky.shape)
    lab = np.clip(labels - 1, 0, n - 1)
    near = (labels > 0) & (np.hypot(yy - py[lab], xx - px[lab]) <= radius_px)
    labels = np.where(near, labels, 0)
    flux = ndimage.sum(sky, labels, index)
    cy = ndimage.sum(sky * yy, labels, index)
    cx = ndimage.sum(sky * xx, labels, index)
    keep = flux > 0
    flux, cx, cy = flux[keep], cx[keep], cy[keep]
    points = np.column_stack([cx / flux, cy / flux])
    pairs = cKDTree(points).query_pairs(group_px, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(flux), len(flux)))
    _, members = connected_components(graph, directed=False)
    total = np.bincount(members, flux)
    x = np.bincount(members, cx) / total
    y = np.bincount(members, cy) / total
    return x, y, total, np.bincount(members)


def extract_sources(m: Map, snr: float = 4.0, min_flux_mjy: float = DEFAULT_FLOOR_MJY,
                    fwhm: u.Quantity | None = None, deblend: bool = True, command: str | None = None,
                    method: str | None = None, calibrate: bool = True, p_min: float = HEAD_P_MIN) -> Table:
    """Sources in ``m`` above ``snr`` × the uncertainty of the sky around them and above
    ``min_flux_mjy``.

    Parameters
    ----------
    m : Map
        Any brightness unit; converted to mJy/beam.
    snr : float
        Detection threshold in units of the uncertainty of the sky around each source
        (:func:`background_rms`); ``flux_err`` is the uncertainty at the source itself.
    min_flux_mjy : float
        Absolute floor on the detection threshold (mJy/beam; :data:`DEFAULT_FLOOR_MJY`).
    fwhm : Quantity, optional
        PSF FWHM; default the map's beam (``Map.beam_fwhm``: a super-resolved map's measured
        beam, else the band's from the instrument table).
    deblend : bool
        Fit groups of close sources jointly (PSF photometry); otherwise peak fluxes.
    command : str, optional
        The command line to record (default: this process's).
    method : str, optional
        ``"psf"`` (peaks and PSF photometry on the map), ``"sky"`` (components of the map's
        sky model grouped within half a beam: flux their sum, position their flux-weighted
        centre; needs ``m.sky_model``), ``"head"`` (the catalogue head's sources, from
        ``m.cells``: see :func:`head_sources`). Default: :func:`default_method` — the head's
        for a map that has cells, else PSF.
    calibrate : bool
        Apply the map's flux calibration (``m.flux_curves``, a super-resolved map's: see
        :class:`galaxysr.maps.FluxCurve`) to PSF fluxes and their errors, for the reading
        used — against the map's uncertainty plane, or its scatter when it has none. Not
        applied with another ``fwhm`` than the map's (the curve was measured at its beam).
        Method ``"head"`` applies it to its forced fluxes alike.
    p_min : float
        Method ``"head"`` only: the least ``p_real`` kept (``snr`` does not apply there; the
        floor ``min_flux_mjy`` does, on the forced flux).

    Returns
    -------
    Table
        The columns of :data:`COLUMNS` (with units), brightest first; ``meta`` records the
        band, beam, threshold, noise, the column descriptions, the pixel convention and the
        provenance (galaxysr version, model hash and input SHA-256s from ``m.meta``, date,
        command line).
    """
    from photutils.detection import find_peaks
    from photutils.utils.exceptions import NoDetectionsWarning

    method = default_method(m) if method is None else method
    if method not in CATALOGUE_METHODS:
        raise ValueError(f"method must be one of {', '.join(CATALOGUE_METHODS)}, got {method!r}")
    if method == "sky" and m.sky_model is None:
        raise ValueError(f"{m.source}: has no sky model (SKYMODEL extension) to draw sources from; "
                         "use method='psf', or a map super-resolved by a sky-model network")
    if method == "head" and m.cells is None:
        raise ValueError(f"{m.source}: has no catalogue-head cells (CELLS extension) to read sources from; use "
                         "method='psf', or a map super-resolved by a model trained with --catalogue-head")
    m = measured_plane(m).to(MJY_PER_BEAM)
    data = m.data.astype(np.float64)
    valid = np.isfinite(data)
    pixel = m.pixel_scale
    reading = "head" if method == "head" else "error" if m.noise is not None else "scatter"
    curve = m.flux_curves.get(reading) if calibrate and method in ("psf", "head") and fwhm is None else None
    fwhm = m.beam_fwhm if fwhm is None else fwhm
    fwhm_px = float((fwhm / pixel).decompose())
    sigma_px = fwhm_px / FWHM_PER_SIGMA
    rms_map = np.broadcast_to(np.asarray(map_rms(m), np.float64), data.shape)
    sky_map = np.broadcast_to(np.asarray(background_rms(m, fwhm_px), np.float64), data.shape)
    threshold = np.maximum(snr * np.nan_to_num(sky_map, nan=np.inf), min_flux_mjy)
    box = max(3, int(round(fwhm_px)) | 1)
    found, extra = None, {}
    if method == "head":
        found, extra = _head_found(m, valid, rms_map, min_flux_mjy, p_min, fwhm_px)
        threshold = np.full(data.shape, min_flux_mjy)  # p_real, not the S/N, chose them
    elif method == "sky":
        f = m.sky_oversample
        sx, sy, flux, _ = sky_components(np.where(np.kron(valid, np.ones((f, f))) > 0, m.sky_model, np.nan),
                                         0.5 * fwhm_px * f, 0.5 * fwhm_px * f, SKY_PEAK_FLOOR * min_flux_mjy)
        x, y = (sx - (f - 1) / 2) / f, (sy - (f - 1) / 2) / f  # sky grid → map grid
        ix = np.clip(np.round(x).astype(int), 0, data.shape[1] - 1)
        iy = np.clip(np.round(y).astype(int), 0, data.shape[0] - 1)
        inside = (x >= 0) & (x <= data.shape[1] - 1) & (y >= 0) & (y <= data.shape[0] - 1) & valid[iy, ix]
        inside &= flux >= threshold[iy, ix]
        x, y, flux = x[inside], y[inside], flux[inside]
        if len(x):
            found = (x, y, flux, _neighbours(x, y, 1.5 * fwhm_px))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            peaks = find_peaks(np.where(valid, data, 0.0), threshold, box_size=box, mask=~valid,
                               border_width=max(1, int(np.ceil(fwhm_px / 2))))
        if peaks is not None and len(peaks):
            x = np.asarray(peaks["x_peak"], float)
            y = np.asarray(peaks["y_peak"], float)
            flux = np.asarray(peaks["peak_value"], float)
            group = np.ones(len(x), int)
            if deblend:
                # Fit weights: the blank sky's uncertainty around each source, not the pixel's. A
                # super-resolved map's ERROR is large on its sources; weighting by it would lean
                # the fit on the wings, and make fluxes depend on the error calibration.
                x, y, flux, group = _psf_photometry(data, valid, sky_map, x, y, flux, fwhm_px, sigma_px)
            found = (x, y, flux, group)
    table = _empty_table() if method != "head" else _empty_head_table()
    if found is not None:
        x, y, flux, group = found[:4]
        ix = np.clip(np.round(x).astype(int), 0, data.shape[1] - 1)
        iy = np.clip(np.round(y).astype(int), 0, data.shape[0] - 1)
        err = rms_map[iy, ix] if len(found) == 4 else found[4]
        # The fit moves fluxes; what is kept meets the stated S/N and floor after it.
        good = np.isfinite(flux) & np.isfinite(err) & (flux >= threshold[iy, ix])
        x, y, flux, err, group, ix, iy = (v[good] for v in (x, y, flux, err, group, ix, iy))
        extra = {k: v[good] for k, v in extra.items()}
        det_snr = flux / sky_map[iy, ix]  # significance on the map as it is, before calibration
        if curve is not None:
            factor = curve(flux)  # a linear correction of the estimate scales its error alike
            flux, err = flux * factor, err * factor
            if method == "head" and "head_error" in m.flux_curves:  # and the head's errors are made honest
                err = err * m.flux_curves["head_error"](flux)
        order = np.argsort(-flux)
        x, y, flux, err, group, ix, iy, det_snr = (v[order] for v in (x, y, flux, err, group, ix, iy, det_snr))
        extra = {k: v[order] for k, v in extra.items()}
        ra, dec = m.wcs.pixel_to_world_values(x, y)
        flags = _flags(m, valid, ix, iy, group, fwhm_px)
        # The head's S450 posterior is its own deboosted flux; the other methods' is the counts prior's.
        median, lo, hi = (extra.pop(k) for k in ("flux_deboosted", "flux_deboosted_lo", "flux_deboosted_hi")) \
            if method == "head" else deboost(flux, err)
        table = Table({"id": np.arange(1, len(x) + 1), "ra": np.asarray(ra) % 360 * u.deg,
                       "dec": np.asarray(dec) * u.deg, "x": x, "y": y, "flux": flux * u.mJy,
                       "flux_err": err * u.mJy, "snr": flux / err, "det_snr": det_snr,
                       "flux_deboosted": median * u.mJy,
                       "flux_deboosted_lo": lo * u.mJy, "flux_deboosted_hi": hi * u.mJy,
                       "group_size": group, "flags": flags.astype(np.uint8)})
        for name, values in extra.items():
            unit = HEAD_COLUMNS[name][1]
            table[name] = values if unit is None else values * unit
    for name, text in COLUMNS.items():
        table[name].description = text
    if method == "head":
        for name, (text, _) in HEAD_COLUMNS.items():
            table[name].description = text
        table["flux"].description = ("flux density fitted at the head's position on the map (forced photometry, "
                                     "times the model's flux calibration) [mJy]")
        table["flux_deboosted"].description = "the catalogue head's posterior median S450 [mJy]"
        table["flux_deboosted_lo"].description = "16th percentile of the head's S450 posterior [mJy]"
        table["flux_deboosted_hi"].description = "84th percentile of the head's S450 posterior [mJy]"
        presence = presence_from_keywords(m.meta)
        table.meta["p_real"] = ("uncalibrated: the head's p (the model has no presence calibration)"
                                if presence is None else
                                f"calibrated on fields of the training distribution from the head's {presence['score']}")
        table.meta["p_min"] = p_min
    table.meta.update({"band": m.band.name, "method": method, "fwhm_arcsec": float(fwhm.to_value(u.arcsec)),
                       "snr": snr,
                       "min_flux_mjy": min_flux_mjy, "source": m.source,
                       "rms_mjy_beam": float(np.nanmedian(rms_map)),
                       "noise": "the map's uncertainty plane" if m.noise is not None else "sigma-clipped scatter",
                       "flux_calibration": "none" if curve is None else
                       f"{reading} reading: factors {min(curve.factors):.3f}-{max(curve.factors):.3f} at "
                       f"{curve.nodes_mjy[0]:.1f}-{curve.nodes_mjy[-1]:.1f} mJy (model calibration)",
                       "pixel_convention": "x, y 0-based with pixel centres at integers (numpy/astropy)",
                       "columns": dict(COLUMNS), "galaxysr_version": __version__,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "command": command if command is not None else " ".join(sys.argv)})
    table.meta.update({k: (v[0] if isinstance(v, tuple) else v) for k, v in m.meta.items()})
    return table


def forced_photometry(m: Map, x: np.ndarray, y: np.ndarray, fwhm: u.Quantity | None = None,
                      radius_fwhm: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Fluxes (mJy) of point sources at fixed pixel positions ``x``, ``y`` of ``m``, fitted
    jointly: the map (mJy/beam) ≈ Σᵢ Sᵢ × a unit-peak Gaussian of ``fwhm`` (default the map's
    beam, :attr:`Map.beam_fwhm`) at (xᵢ, yᵢ), by linear least squares over the valid pixels
    within ``radius_fwhm`` FWHM of a source (:func:`point_source_design`, ``scipy.sparse.linalg.lsqr``:
    a sparse design, so thousands of overlapping sources cost a second). The flux of a point source
    is its peak, as :func:`extract_sources` measures it, and blended neighbours share their light as
    the fit says. Errors: the map's uncertainty at each position (:func:`map_rms`), as the PSF
    catalogue quotes them, widened by what sharing the light with neighbours costs (from the
    normal equations: :func:`blend_inflation`). A source on no valid pixel gets NaN."""
    from scipy.sparse.linalg import lsqr

    m = m.to(MJY_PER_BEAM)
    data = m.data.astype(np.float64)
    fwhm_px = float(((m.beam_fwhm if fwhm is None else fwhm) / m.pixel_scale).decompose())
    x, y = np.asarray(x, float), np.asarray(y, float)
    design, used = point_source_design(np.isfinite(data), x, y, fwhm_px / FWHM_PER_SIGMA,
                                       int(np.ceil(radius_fwhm * fwhm_px)))
    # lsqr stops when the fluxes are good to ~1e-7 of the map: far below any noise (1e-10 cost 3× the time).
    flux = lsqr(design, data.ravel()[used], atol=1e-7, btol=1e-7)[0] if len(used) else np.zeros(len(x))
    seen = np.asarray((design != 0).sum(axis=0)).ravel() > 0
    flux = np.where(seen, flux, np.nan)
    ix = np.clip(np.round(x).astype(int), 0, data.shape[1] - 1)
    iy = np.clip(np.round(y).astype(int), 0, data.shape[0] - 1)
    err = np.broadcast_to(np.asarray(map_rms(m), np.float64), data.shape)[iy, ix] * blend_inflation(design)
    return flux, np.where(seen, err, np.nan)


def _beam_pixels(valid: np.ndarray, x: np.ndarray, y: np.ndarray, reach: int) -> tuple:
    """Every (source, pixel) pair of sources at ``x``, ``y`` and the valid pixels within ``reach``
    of their pixel: (source index, pixel column, pixel row, row index into ``used``, ``used`` — the
    flat indices of the pixels reached)."""
    shape = valid.shape
    offsets = np.arange(-reach, reach + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    py = np.round(y)[:, None] + dy.ravel()[None, :]
    px = np.round(x)[:, None] + dx.ravel()[None, :]
    column = np.repeat(np.arange(len(x)), dy.size).reshape(py.shape)
    inside = (py >= 0) & (py < shape[0]) & (px >= 0) & (px < shape[1])
    py, px, column = py[inside].astype(int), px[inside].astype(int), column[inside]
    keep = valid[py, px]
    py, px, column = py[keep], px[keep], column[keep]
    used, row = np.unique(py * shape[1] + px, return_inverse=True)
    return column, px, py, row, used


def point_source_design(valid: np.ndarray, x: np.ndarray, y: np.ndarray, sigma_px: float, reach: int):
    """The sparse design of point sources at pixel positions ``x``, ``y`` on a grid with data where
    ``valid``: column i is a unit-peak circular Gaussian of ``sigma_px`` centred on (xᵢ, yᵢ), sampled
    at the pixel centres (as :func:`galaxysr.simulate.render_sources` draws) within ``reach`` pixels
    of the source's pixel. Rows are the valid pixels any source reaches.

    Returns
    -------
    design : scipy.sparse.csr_matrix
        (rows, len(x)).
    used : ndarray of int
        The rows' flat pixel indices into ``valid``.
    """
    from scipy.sparse import coo_matrix

    column, px, py, row, used = _beam_pixels(valid, x, y, reach)
    value = np.exp(-0.5 * ((px - x[column]) ** 2 + (py - y[column]) ** 2) / sigma_px**2)
    return coo_matrix((value, (row, column)), shape=(len(used), len(x))).tocsr(), used


def refine_positions(m: Map, x: np.ndarray, y: np.ndarray, flux: np.ndarray, radius_fwhm: float = 1.0,
                     max_shift_fwhm: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Positions of point sources near pixel positions ``x``, ``y`` of ``m`` (fluxes ``flux``, mJy),
    refined jointly on the map: one Gauss–Newton step of the model Σᵢ Sᵢ × a unit-peak Gaussian of the
    map's beam at (xᵢ, yᵢ) in every source's flux and position at once (a sparse design of three
    columns per source, each scaled to unit norm, solved by damped ``scipy.sparse.linalg.lsqr``), so
    blended neighbours share the light as a joint PSF fit would. A source moves at most one pixel
    along each axis and ``max_shift_fwhm`` beam FWHM in all; one with no positive flux stays.

    Measured (the catalogue head's detections, held-out sky): one step places sources as a photutils
    PSF fit started there does (median offset above 10 mJy 1.80″ against 1.82″; 0.61″ against the
    head's own 1.12″ at 30–50 mJy) in a second per 0.25 deg²; more steps did not do better.
    """
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import lsqr

    m = m.to(MJY_PER_BEAM)
    data = m.data.astype(np.float64)
    x, y, flux = (np.asarray(v, np.float64) for v in (x, y, flux))
    n = len(x)
    if n == 0:
        return x, y
    fwhm_px = float((m.beam_fwhm / m.pixel_scale).decompose())
    sigma = fwhm_px / FWHM_PER_SIGMA
    column, px, py, row, used = _beam_pixels(np.isfinite(data), x, y, int(np.ceil(radius_fwhm * fwhm_px)))
    ux, uy = px - x[column], py - y[column]
    beam = np.exp(-0.5 * (ux**2 + uy**2) / sigma**2)
    resid = data.ravel()[used] - np.bincount(row, weights=beam * flux[column], minlength=len(used))
    gain = flux[column] * beam / sigma**2
    jacobian = coo_matrix((np.concatenate([beam, gain * ux, gain * uy]),
                           (np.tile(row, 3), np.concatenate([column, column + n, column + 2 * n]))),
                          shape=(len(used), 3 * n)).tocsc()
    norm = np.sqrt(np.asarray(jacobian.multiply(jacobian).sum(axis=0)).ravel())
    norm[norm == 0] = 1.0
    # One damped step needs no more than a few digits (1e-8 cost three times the iterations).
    step = lsqr(jacobian @ diags(1.0 / norm), resid, damp=0.1, atol=1e-5, btol=1e-5, iter_lim=200)[0] / norm
    movable = flux > 0
    shift_x = np.where(movable, np.clip(step[n:2 * n], -1, 1), 0.0)
    shift_y = np.where(movable, np.clip(step[2 * n:], -1, 1), 0.0)
    limit = max_shift_fwhm * fwhm_px
    scale = np.minimum(1.0, limit / np.maximum(np.hypot(shift_x, shift_y), 1e-12))
    return x + shift_x * scale, y + shift_y * scale


def blend_inflation(design) -> np.ndarray:
    """Per source, how much a joint fit widens its flux error over the same source alone:
    √[(AᵀA)⁻¹ᵢᵢ (AᵀA)ᵢᵢ] from the normal equations of the design A (1 for an isolated source),
    inverted per group of overlapping sources (connected components of AᵀA)."""
    from scipy.sparse.csgraph import connected_components

    normal = (design.T @ design).tocsr()
    diagonal = normal.diagonal()
    inflation = np.ones(normal.shape[0])
    n_groups, label = connected_components(normal, directed=False)
    for group in np.flatnonzero(np.bincount(label) > 1):
        members = np.flatnonzero(label == group)
        if len(members) > 500:  # a chain too long to invert densely: its members keep 1
            continue
        block = normal[members][:, members].toarray()
        with np.errstate(invalid="ignore"):
            try:
                inverse = np.linalg.inv(block)  # a well-posed group: 5× faster than the SVD of pinv
            except np.linalg.LinAlgError:       # two sources on one pixel: their blend is what is known
                inverse = np.linalg.pinv(block)
            inflation[members] = np.sqrt(np.clip(np.diag(inverse) * diagonal[members], 1.0, None))
    return inflation


def _neighbours(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """For each position, how many positions (itself included) lie within ``radius``."""
    from scipy.spatial import cKDTree

    points = np.column_stack([x, y])
    return np.array([len(n) for n in cKDTree(points).query_ball_point(points, radius)], int)


def _flags(m: Map, valid: np.ndarray, ix: np.ndarray, iy: np.ndarray, group: np.ndarray,
           fwhm_px: float) -> np.ndarray:
    """Per-source quality bits (:data:`COLUMNS`)."""
    from scipy.ndimage import distance_transform_edt

    flags = np.where(group > 1, FLAG_BLENDED, 0)
    padded = np.pad(valid, 1, constant_values=False)  # the map edge counts as missing data
    distance = distance_transform_edt(padded)[1:-1, 1:-1]
    flags |= np.where(distance[iy, ix] <= fwhm_px, FLAG_EDGE, 0)
    if m.flags is not None:
        flags |= m.flags[iy, ix]
    return flags


def measured_plane(m: Map) -> Map:
    """The plane catalogues are measured on: a catalogue-head network's per-pixel map (``m.mean``,
    on which its flux curves, errors and forced photometry were calibrated) when ``m``'s image is
    that catalogue drawn through the beam, else ``m`` itself. A catalogue-head network's per-pixel
    map is measured at the band's beam, as it was calibrated, also where it is the image and its
    header gives its wider measured beam (a survey mosaic, which keeps the cells)."""
    if m.mean is not None:
        return replace(m, data=m.mean, mean=None, mean_fwhm=None)
    return replace(m, fwhm=None) if m.cells is not None and m.fwhm is not None else m


def draw_catalogue(table: Table, m: Map, weight: str | None = "p_real") -> np.ndarray:
    """``table``'s sources drawn through ``m``'s beam on its grid (mJy/beam): each a Gaussian of
    the band's FWHM at its (``x``, ``y``) with peak ``flux`` × ``weight`` (its probability of
    being real, so a source the network is sure of is exactly the beam with peak = flux and an
    uncertain one is drawn faintly; negative fluxes are drawn as 0). NaN where ``m`` has no data."""
    from .simulate import render_sources

    flux = np.clip(np.nan_to_num(u.Quantity(table["flux"], u.mJy).value), 0.0, None)
    if weight is not None:
        flux = flux * np.asarray(table[weight], float)
    sigma = float((m.band.fwhm / m.pixel_scale).decompose()) / FWHM_PER_SIGMA
    drawn = render_sources(np.asarray(table["x"], float), np.asarray(table["y"], float), flux, m.shape, sigma) \
        if len(table) else np.zeros(m.shape)
    return np.where(np.isfinite(m.data), drawn, np.nan).astype(np.float32)


def drawn_cards(n_sources: int) -> dict:
    """The header card of a map drawn from the catalogue head's ``n_sources`` detections."""
    return {"GSRDRAWN": (int(n_sources), "sources drawn: the head's catalogue, p_real x flux")}


def head_sources(m: Map, p_min: float = HEAD_P_MIN) -> Table:
    """The catalogue head's detections in ``m`` (a map super-resolved by a catalogue-head
    network: ``m.cells``) with ``p_real`` ≥ ``p_min``, before photometry: ``x``, ``y`` (map
    pixels), ``p_real`` (the model's presence calibration of the head's score, or the raw ``p``
    when the model has none), and :func:`galaxysr.cells.decode_cells`' columns (σ's scaled by
    the same calibration). Every decoded detection's position is refined on the per-pixel map
    (:func:`refine_positions`) and its S450 fitted there (``flux_forced``, ``flux_forced_err``:
    :func:`forced_photometry`, uncalibrated), all of them jointly, whatever ``p_min``. Detections off
    the map's data are dropped. A map that keeps its decoded detections (``m.decoded``, made with
    the same presence calibration) is not decoded again. Most users want
    ``extract_sources(m, method="head")``."""
    presence = presence_from_keywords(m.meta) or {}
    head = m.decoded if m.decoded is not None and m.decoded.meta.get("presence") == presence else _decode(m, presence)
    return head[np.asarray(head["p_real"]) >= p_min]


#: A catalogue-head map wider than this (map pixels, plus the halo on both sides) is decoded in
#: blocks of this side, so that memory holds one block's designs, not the whole map's.
DECODE_BLOCK_PIXELS = 2048

#: Map pixels beyond a block that its decoding sees (a multiple of the cells): 192″ at 2″, two dozen
#: beams, where a joint fit's coupling is long gone (blocks and the whole map agree to 1e-3 in flux).
DECODE_HALO_PIXELS = 96


def _decode(m: Map, presence: dict, block: int | None = None, halo: int = DECODE_HALO_PIXELS) -> Table:
    """:func:`head_sources` at p_real ≥ 0, decoded with the presence calibration ``presence``
    ({} for none); its ``meta["presence"]`` says which. A map larger than ``block`` (default
    :data:`DECODE_BLOCK_PIXELS`) plus its halo is decoded block by block, each with a ``halo`` of
    map pixels around it, keeping the detections each block owns (as ``galaxysr survey`` does)."""
    from astropy.table import vstack

    from .maps import section

    if m.cells is None:
        raise ValueError(f"{m.source}: has no catalogue-head cells (CELLS extension)")
    block = DECODE_BLOCK_PIXELS if block is None else block
    ny, nx = m.shape
    if max(ny, nx) <= block + 2 * halo:
        return _decode_whole(m, presence)
    k = m.cell_pixels
    block, halo = -(-block // k) * k, -(-halo // k) * k  # blocks and halos start on cell borders
    tables = []
    for y_lo in range(0, ny, block):
        for x_lo in range(0, nx, block):
            y_hi, x_hi = min(y_lo + block, ny), min(x_lo + block, nx)
            a, c = max(y_lo - halo, 0), max(x_lo - halo, 0)
            sub = section(m, (a, min(y_hi + halo, ny)), (c, min(x_hi + halo, nx)))
            if not np.isfinite(sub.data).any():
                continue
            tables.append(owned_rows(_decode_whole(sub, presence), (a, c), (y_lo, y_hi, x_lo, x_hi)))
    if not tables:  # no data anywhere: the columns, empty
        return _decode_whole(m, presence)
    head = vstack(tables, metadata_conflicts="silent")
    head.meta = dict(tables[0].meta)
    return head


def owned_rows(table: Table, origin: tuple[int, int], core: tuple[int, int, int, int]) -> Table:
    """The rows of ``table`` — sources found on a section of a map whose first pixel is the map's
    (row, column) ``origin`` — that the block ``core`` (rows [y_lo, y_hi), columns [x_lo, x_hi) of
    the map) owns by their rounded position, their ``x``, ``y`` moved onto the map's grid: how a
    map read in overlapping blocks lists each source once."""
    y_lo, y_hi, x_lo, x_hi = core
    x, y = np.asarray(table["x"], float) + origin[1], np.asarray(table["y"], float) + origin[0]
    owned = (np.round(y) >= y_lo) & (np.round(y) < y_hi) & (np.round(x) >= x_lo) & (np.round(x) < x_hi)
    table = table[owned]
    table["x"], table["y"] = x[owned], y[owned]
    return table


def _decode_whole(m: Map, presence: dict) -> Table:
    """:func:`_decode` of ``m`` at once."""
    head = decode_cells(m.cells, m.wcs, float(m.pixel_scale.to_value(u.arcsec)), threshold=HEAD_DECODE_P,
                        cell=m.cell_pixels, position_scale=presence.get("pos_err_scale", 1.0),
                        flux_sigma_scale=presence.get("flux_sigma_scale"))
    head["p_real"] = head["p"] if not presence else calibrated_p(presence, np.asarray(head[presence["score"]]))
    head = head[_on_data(m, head)]
    # The head places a source within its 4″ cell; the per-pixel map places bright ones better (at
    # 30–50 mJy 0.6″ against 1.1″ on the held-out sky): every detection is moved by one joint fit step.
    plane = measured_plane(m)
    x, y = m.wcs.world_to_pixel_values(np.asarray(head["ra"], float), np.asarray(head["dec"], float))
    peak = plane.to(MJY_PER_BEAM).data[np.round(y).astype(int), np.round(x).astype(int)]  # on data: _on_data
    x, y = refine_positions(plane, x, y, np.nan_to_num(peak.astype(np.float64)))
    head["x"], head["y"] = x, y
    ra, dec = m.wcs.pixel_to_world_values(x, y)
    head["ra"], head["dec"] = np.asarray(ra) % 360 * u.deg, np.asarray(dec) * u.deg
    head = head[_on_data(m, head)]
    # Photometry of every detection jointly, whatever p_min: a fainter neighbour takes its share of
    # the light, and a catalogue cut at any p_min is a subset of the map drawn from all of them.
    head["flux_forced"], head["flux_forced_err"] = forced_photometry(plane, np.asarray(head["x"], float),
                                                                     np.asarray(head["y"], float))
    head.meta["presence"] = presence
    return head


def _on_data(m: Map, table: Table) -> np.ndarray:
    """Which rows of ``table`` (``ra``, ``dec``) fall on a pixel of ``m`` with data."""
    x, y = m.wcs.world_to_pixel_values(np.asarray(table["ra"], float), np.asarray(table["dec"], float))
    ix, iy = np.round(np.asarray(x, float)).astype(int), np.round(np.asarray(y, float)).astype(int)
    inside = (ix >= 0) & (ix < m.shape[1]) & (iy >= 0) & (iy < m.shape[0])
    inside[inside] = np.isfinite(m.data[iy[inside], ix[inside]])
    return inside


def _head_found(m: Map, valid, rms_map, min_flux_mjy: float, p_min: float, fwhm_px: float) -> tuple:
    """:func:`extract_sources`' ``found`` (x, y, forced flux, group size, forced error) and the
    head's own columns (:data:`HEAD_COLUMNS`, and its S450 posterior as the deboosted flux)."""
    head = head_sources(m, p_min)
    if not len(head):
        return None, {}
    x, y = np.asarray(head["x"], float), np.asarray(head["y"], float)
    flux, err = np.asarray(head["flux_forced"], float), np.asarray(head["flux_forced_err"], float)
    extra = {"p_real": np.asarray(head["p_real"], float), "p": np.asarray(head["p"], float),
             "pos_err": np.asarray(head["pos_err"], float)}
    for band in CATALOGUE_BANDS:
        column = f"flux_{band}"
        if band == TARGET_BAND:
            for suffix in ("", "_lo", "_hi"):
                extra[f"flux_deboosted{suffix}"] = np.asarray(head[f"{column}{suffix}"], float)
        else:
            extra[column], extra[f"{column}_err"] = np.asarray(head[column], float), np.asarray(head[f"{column}_err"], float)
    return (x, y, flux, _neighbours(x, y, 1.5 * fwhm_px), err), extra


def _empty_head_table() -> Table:
    table = _empty_table()
    for name, (_, unit) in HEAD_COLUMNS.items():
        table[name] = np.array([], float) if unit is None else np.array([], float) * unit
    return table


def _empty_table() -> Table:
    mjy = [] * u.mJy
    return Table({"id": np.array([], int), "ra": [] * u.deg, "dec": [] * u.deg, "x": np.array([], float),
                  "y": np.array([], float), "flux": mjy, "flux_err": mjy, "snr": np.array([], float),
                  "det_snr": np.array([], float),
                  "flux_deboosted": mjy, "flux_deboosted_lo": mjy, "flux_deboosted_hi": mjy,
                  "group_size": np.array([], int), "flags": np.array([], np.uint8)})


def _psf_photometry(data, valid, sky_rms, x, y, flux, fwhm_px, sigma_px):
    """Joint Gaussian-PSF fits of positions and fluxes; returns x, y, peak fluxes (mJy)
    and the size of each source's fitted group."""
    from photutils.psf import CircularGaussianPRF, PSFPhotometry, SourceGrouper

    beam_px = 2 * np.pi * sigma_px**2  # integral of a unit-peak Gaussian, in pixels
    psf = CircularGaussianPRF(fwhm=fwhm_px)
    psf.fwhm.fixed = True
    fit_shape = max(5, int(np.ceil(1.5 * fwhm_px)) | 1)
    photometry = PSFPhotometry(psf, fit_shape, aperture_radius=fwhm_px, xy_bounds=(fwhm_px / 2, fwhm_px / 2))
    error = np.where(np.isfinite(sky_rms) & (sky_rms > 0), sky_rms, np.nanmax(sky_rms[np.isfinite(sky_rms)]))
    if not np.all(error > 0):
        error = np.full_like(data, 1e-3)
    # Group sources closer than 1.5 FWHM for joint fits (deblending); in crowded or noisy
    # maps such groups can chain into hundreds of sources, whose joint fit is intractable,
    # so sources of groups larger than MAX_GROUP are fitted on their own.
    groups = np.asarray(SourceGrouper(1.5 * fwhm_px)(x, y))
    ids, sizes = np.unique(groups, return_counts=True)
    size_of = dict(zip(ids, sizes))
    group_size = np.array([size_of[g] for g in groups])
    oversize = np.isin(groups, ids[sizes > MAX_GROUP])
    groups = groups.copy()
    groups[oversize] = groups.max() + 1 + np.arange(oversize.sum())
    init = QTable({"x": x, "y": y, "flux": flux * beam_px, "group_id": groups})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit-quality warnings are reported in the flags column
        result = photometry(np.where(valid, data, 0.0), mask=~valid, error=error, init_params=init)
    fx = np.asarray(result["x_fit"], float)
    fy = np.asarray(result["y_fit"], float)
    fflux = np.asarray(result["flux_fit"], float) / beam_px
    return fx, fy, fflux, group_size


def write_catalogue(table: Table, path, overwrite: bool = False) -> None:
    """Write a catalogue; the format follows the suffix (.ecsv keeps every unit, column
    description and meta entry; FITS keeps units, descriptions and the scalar meta)."""
    path = refuse_existing(path, overwrite)
    if path.suffix.lower() in (".fits", ".fit", ".fts"):
        table = table.copy(copy_data=False)
        table.meta = {k[:8].upper(): v for k, v in table.meta.items()
                      if isinstance(v, (str, int, float, bool)) and len(str(v)) <= 68}
    table.write(path, overwrite=overwrite)


def write_priors(catalogue: Table, path, overwrite: bool = False, colour_max: float = 3.0,
                 provenance: str | None = None) -> None:
    """Write the positions of ``catalogue`` as a prior list for XID+ (Hurley et al. 2017).

    A FITS binary table with ``ID``, ``RA``, ``Dec`` (deg), ``S450`` and ``S450_err`` (mJy),
    and for each SPIRE band ``flux_lower_<band>`` and ``flux_upper_<band>`` (mJy): the
    bounds of XID+'s uniform flux prior, 0.01 mJy and ``colour_max`` × (S450 + 3σ) — wide
    enough for any dust SED galaxysr trains on (S250/S450 ≤ 2.4), so the SPIRE maps, not
    the prior, set the fluxes. Use them as
    ``prior.prior_cat(t["RA"], t["Dec"], path, flux_lower=t["flux_lower_250"],
    flux_upper=t["flux_upper_250"], ID=t["ID"])`` (docs/inference.md).
    """
    path = refuse_existing(path, overwrite)
    s450 = u.Quantity(catalogue["flux"], u.mJy).value
    err = u.Quantity(catalogue["flux_err"], u.mJy).value
    priors = Table({"ID": np.asarray(catalogue["id"]), "RA": u.Quantity(catalogue["ra"], u.deg),
                    "Dec": u.Quantity(catalogue["dec"], u.deg), "S450": s450 * u.mJy, "S450_err": err * u.mJy})
    upper = colour_max * (s450 + 3 * err)
    for band in ("250", "350", "500"):
        priors[f"flux_lower_{band}"] = np.full(len(s450), 0.01) * u.mJy
        priors[f"flux_upper_{band}"] = upper * u.mJy
    priors.meta.update({"ORIGIN": "galaxysr", "GSRVER": __version__, "BAND": TARGET_BAND,
                        "COMMENT": "XID+ prior list: positions from a galaxysr super-resolved map"})
    if provenance:
        priors.meta["GSRCAT"] = provenance
    priors.write(path, format="fits", overwrite=overwrite)
