"""Sources on a grid of cells: the targets of a per-cell catalogue head, and a catalogue back.

The catalogue head (:func:`galaxysr.model.build_generator` with ``catalogue_head``) is trained
on these targets, and its outputs are read back by :func:`decode_cells`. A truth catalogue is encoded in two steps so that the tile augmentation of
:class:`galaxysr.datasets.TileStream` (90° rotations and flips) cannot put offsets and cells out
of step:

1. :func:`source_planes` — per output pixel, the **blend** of the truth sources whose centre falls
   in it: each band's flux summed, the centre weighted by the target band's flux, kept as its
   offset from the pixel centre. These planes are an image, so they are rotated and flipped with
   the tile (:func:`augment_planes` turns the offsets with it).
2. :func:`cell_targets` — per cell of ``cell`` × ``cell`` pixels (2 × 2 of 2″ pixels: the 4″ cells
   of the generator's last decoder level), the blend of its pixels' blends (fluxes summed, centre
   weighted by the target flux: the same blend as from the sources themselves), its presence
   (target flux at least ``min_flux_mjy``), its offset from the cell centre in cells, and log10
   fluxes in every band.

Why the blend and not the brightest source of a cell: two sources in one 4″ cell are 4″ apart at
most, half the 7.9″ beam, so no map can tell them apart, and a blend keeps the flux the map holds
(the cell's drawn beam is then the same map as the two sources'), where the brightest source alone
would drop the fainter one's flux.

:func:`cells_to_sources` reads cells back into a catalogue (one source per cell above a
probability threshold, neighbours not merged: how a trained head spreads a source over cells is
for the head's own decoder to settle).

Array conventions: images are (y, x, channel) as everywhere in galaxysr, pixel centres at integer
coordinates (astropy's ``world_to_pixel``), offsets in (dy, dx) order.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from .instruments import TARGET_BAND

__all__ = ["source_planes", "augment_planes", "cell_targets", "cells_to_sources", "PLANE_OFFSETS",
           "CATALOGUE_BANDS", "CELL_LAYOUT", "CELL_CHANNELS", "CELL_PIXELS", "decode_cells", "isotonic", "PRESENCE_GRID",
           "presence_calibration", "calibrated_p", "presence_cards", "presence_from_keywords",
           "error_scales", "RAYLEIGH_MEDIAN"]

#: Channels of :func:`source_planes` before the fluxes: the blend's offset (dy, dx) in pixels.
PLANE_OFFSETS = 2
#: The bands in which the catalogue head reports fluxes, by wavelength.
CATALOGUE_BANDS = ("spire_250", "spire_350", TARGET_BAND, "spire_500")
#: Output pixels per cell side: the last decoder level of the generator is at half the output
#: pixels (2 × 2″ = 4″ cells).
CELL_PIXELS = 2
#: The catalogue head's raw outputs per cell, in order: the presence logit; the offset of the
#: source from the cell centre (dy, dx, in cells) and log σ of each; log10 of the flux in mJy in
#: each of :data:`CATALOGUE_BANDS`, then log σ (dex) of each.
CELL_LAYOUT = ("logit", "dy", "dx", "log_sigma_dy", "log_sigma_dx",
               *(f"log_flux_{b}" for b in CATALOGUE_BANDS), *(f"log_sigma_flux_{b}" for b in CATALOGUE_BANDS))
CELL_CHANNELS = len(CELL_LAYOUT)


def _fluxes_mjy(truth: Table, bands: tuple[str, ...]) -> np.ndarray:
    """(n, len(bands)) fluxes in mJy from the truth's ``flux_<band>`` columns (units if given)."""
    out = []
    for band in bands:
        column = truth[f"flux_{band}"]
        unit = getattr(column, "unit", None)
        out.append(np.asarray(column, float) * (u.Unit(unit).to(u.mJy) if unit is not None else 1.0))
    return np.stack(out, axis=-1)


def source_planes(truth: Table, wcs, shape: tuple[int, int], bands: tuple[str, ...],
                  target_band: str = TARGET_BAND) -> np.ndarray:
    """The truth sources on the pixel grid ``(wcs, shape)``: (H, W, 2 + len(bands)) float64.

    Per pixel: the offset (dy, dx, pixels) of the blend's centre from the pixel centre, weighted
    by ``target_band``'s flux, then each of ``bands``' fluxes summed (mJy). Pixels without a source
    are 0. Sources outside the grid, or without flux in the target band, are left out.

    Parameters
    ----------
    truth : astropy.table.Table
        ``ra``, ``dec`` (deg) and ``flux_<band>`` (mJy, or with units) of every band in ``bands``
        and of ``target_band``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the grid.
    shape : (int, int)
        (H, W) of the grid.
    """
    if target_band not in bands:
        raise ValueError(f"the target band {target_band} must be one of the bands encoded ({', '.join(bands)})")
    h, w = shape
    planes = np.zeros((h, w, PLANE_OFFSETS + len(bands)))
    if len(truth) == 0:
        return planes
    x, y = wcs.world_to_pixel(SkyCoord(np.asarray(truth["ra"], float), np.asarray(truth["dec"], float), unit="deg"))
    flux = _fluxes_mjy(truth, bands)
    weight = flux[:, bands.index(target_band)]
    iy, ix = np.round(y).astype(int), np.round(x).astype(int)
    keep = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w) & (weight > 0)
    iy, ix, dy, dx, weight, flux = iy[keep], ix[keep], (y - iy)[keep], (x - ix)[keep], weight[keep], flux[keep]
    np.add.at(planes, (iy, ix, 0), weight * dy)
    np.add.at(planes, (iy, ix, 1), weight * dx)
    for b in range(len(bands)):
        np.add.at(planes, (iy, ix, PLANE_OFFSETS + b), flux[:, b])
    total = planes[..., PLANE_OFFSETS + bands.index(target_band)]
    held = total > 0
    planes[held, :PLANE_OFFSETS] /= total[held, None]
    return planes


def augment_planes(planes: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``planes`` rotated by ``k`` × 90° (as ``tf.image.rot90`` / ``np.rot90`` turn an image, counter-
    clockwise in (y, x)) and then, with ``flip``, mirrored in x (``tf.reverse(tile, [1])``) — what
    :class:`galaxysr.datasets.TileStream` does to a tile — with the offsets turned alike: one
    rotation takes (dy, dx) to (−dx, dy), the mirror (dy, dx) to (dy, −dx)."""
    out = np.rot90(planes, k, axes=(0, 1)).copy()
    dy, dx = out[..., 0].copy(), out[..., 1].copy()
    for _ in range(k % 4):
        dy, dx = -dx, dy
    if flip:
        out = out[:, ::-1].copy()
        dy, dx = dy[:, ::-1], -dx[:, ::-1]
    out[..., 0], out[..., 1] = dy, dx
    return out


def cell_targets(planes: np.ndarray, cell: int, bands: tuple[str, ...], target_band: str = TARGET_BAND,
                 min_flux_mjy: float = 2.0) -> np.ndarray:
    """Per cell of ``cell`` × ``cell`` pixels: (H/cell, W/cell, 3 + len(bands)) float64 —
    presence (1 where the blend's ``target_band`` flux is at least ``min_flux_mjy``, else 0), the
    blend's offset (dy, dx) from the cell centre in cells (−0.5 to 0.5), and log10 of each band's
    blended flux in mJy (NaN in cells without a source, and for a band without flux)."""
    h, w, c = planes.shape
    if h % cell or w % cell:
        raise ValueError(f"the grid {h}×{w} is not a whole number of {cell}×{cell} cells")
    target = PLANE_OFFSETS + bands.index(target_band)
    blocks = planes.reshape(h // cell, cell, w // cell, cell, c)
    weight = blocks[..., target]
    local = np.arange(cell) - (cell - 1) / 2  # pixel centres relative to the cell centre
    pos_y = (local[None, :, None, None] + blocks[..., 0]) * weight
    pos_x = (local[None, None, None, :] + blocks[..., 1]) * weight
    total = weight.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        dy = np.where(total > 0, pos_y.sum(axis=(1, 3)) / total, 0.0) / cell
        dx = np.where(total > 0, pos_x.sum(axis=(1, 3)) / total, 0.0) / cell
        flux = blocks[..., PLANE_OFFSETS:].sum(axis=(1, 3))
        log_flux = np.where(flux > 0, np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
    present = total >= min_flux_mjy
    log_flux[~present] = np.nan
    return np.concatenate([present[..., None].astype(float), np.where(present, dy, 0.0)[..., None],
                           np.where(present, dx, 0.0)[..., None], log_flux], axis=-1)


def cells_to_sources(cells: np.ndarray, wcs, cell: int, bands: tuple[str, ...], threshold: float = 0.5) -> Table:
    """A catalogue from per-cell presence probabilities, offsets and log10 fluxes (the layout of
    :func:`cell_targets`) on the pixel grid ``wcs`` (pixels of ``cell`` × ``cell`` per cell): one
    source per cell whose probability is at least ``threshold`` — ``ra``, ``dec`` (deg), ``p`` and
    ``flux_<band>`` (mJy) — brightest first. Neighbouring cells are not merged."""
    p = cells[..., 0]
    iy, ix = np.nonzero(p >= threshold)
    centre = (cell - 1) / 2
    y = iy * cell + centre + cells[iy, ix, 1] * cell
    x = ix * cell + centre + cells[iy, ix, 2] * cell
    sky = wcs.pixel_to_world(x, y)
    table = Table({"ra": sky.ra.deg * u.deg, "dec": sky.dec.deg * u.deg, "p": p[iy, ix]})
    for b, band in enumerate(bands):
        table[f"flux_{band}"] = 10 ** cells[iy, ix, 3 + b] * u.mJy
    target = f"flux_{TARGET_BAND}" if TARGET_BAND in bands else f"flux_{bands[0]}"
    table.sort(target, reverse=True)
    return table


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _suppress_ties(candidates: tuple, p: np.ndarray) -> tuple:
    """Of local maxima that tie (two neighbouring cells of equal probability: a source on their
    border), keep the first in order of probability, then row, then column."""
    iy, ix = candidates
    order = np.lexsort((ix, iy, -p[iy, ix]))
    taken = np.zeros(p.shape, bool)
    keep = []
    for k in order:
        y, x = iy[k], ix[k]
        if not taken[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any():
            keep.append(k)
            taken[y, x] = True
    keep = np.asarray(keep, int)
    return iy[keep], ix[keep]


def decode_cells(raw: np.ndarray, wcs, pixel_arcsec: float, threshold: float = 0.5, cell: int = CELL_PIXELS,
                 bands: tuple[str, ...] = CATALOGUE_BANDS, position_scale: float = 1.0,
                 flux_sigma_scale: tuple[float, ...] | None = None) -> Table:
    """The catalogue head's raw outputs (h, w, :data:`CELL_CHANNELS`) per cell of ``cell`` ×
    ``cell`` pixels of the grid ``wcs`` (pixels of ``pixel_arcsec``) → a catalogue.

    A source is split between neighbouring cells when its centre lies near their border, so
    detections are merged: a cell is a source when its probability is the largest of its 3 × 3
    neighbourhood (of two that tie, the first), and the source's probability ``p`` is the sum of the neighbourhood's
    (the expected number of sources centred there, at most 1). Kept when ``p`` ≥ ``threshold``;
    position and fluxes are the peak cell's. ``p`` is the network's, uncalibrated; the σ's are the
    network's times ``position_scale`` and ``flux_sigma_scale`` (one per band: a calibration's,
    :func:`presence_calibration`).

    Returns
    -------
    astropy.table.Table
        ``ra``, ``dec`` (deg), ``pos_err`` (arcsec, 1σ per axis), ``p``, ``p_peak`` (the peak cell's); per band ``flux_<band>``
        (the posterior median 10^μ, mJy), ``flux_<band>_lo`` / ``_hi`` (its 16 / 84 %) and
        ``flux_<band>_err`` (half their difference); brightest (target band) first.
    """
    from scipy.ndimage import maximum_filter, uniform_filter

    n = len(bands)
    # Cells without data (NaN: off a real map's coverage) hold no source; as NaN they would also
    # spread through the separable filters below (a NaN poisons whole columns of a running sum).
    p_cell = np.nan_to_num(_sigmoid(raw[..., 0].astype(np.float64)), nan=0.0)
    peak = (p_cell >= maximum_filter(p_cell, size=3, mode="constant")) & (p_cell > 0)
    p_sum = np.minimum(uniform_filter(p_cell, size=3, mode="constant") * 9.0, 1.0)
    iy, ix = _suppress_ties(np.nonzero(peak & (p_sum >= threshold)), p_cell)
    centre = (cell - 1) / 2
    y = iy * cell + centre + raw[iy, ix, 1] * cell
    x = ix * cell + centre + raw[iy, ix, 2] * cell
    sky = wcs.pixel_to_world(x, y)
    sigma = np.exp(np.clip(raw[iy, ix, 3:5].astype(np.float64), -6, 2)) * cell * pixel_arcsec * position_scale
    flux_sigma_scale = (1.0,) * n if flux_sigma_scale is None else tuple(flux_sigma_scale)
    table = Table({"ra": sky.ra.deg * u.deg, "dec": sky.dec.deg * u.deg,
                   "pos_err": np.sqrt(0.5 * (sigma**2).sum(-1)) * u.arcsec, "p": p_sum[iy, ix],
                   "p_peak": p_cell[iy, ix]})
    table["ra"].description, table["dec"].description = "right ascension (ICRS)", "declination (ICRS)"
    table["pos_err"].description = "1σ positional error per axis (catalogue head)"
    table["p"].description = "probability that a source is centred here (catalogue head, uncalibrated)"
    table["p_peak"].description = "the peak cell's own probability (catalogue head, uncalibrated)"
    for b, band in enumerate(bands):
        mean = raw[iy, ix, 5 + b].astype(np.float64)
        dex = np.exp(np.clip(raw[iy, ix, 5 + n + b].astype(np.float64), -6, 2)) * flux_sigma_scale[b]
        lo, hi = 10 ** (mean - dex), 10 ** (mean + dex)
        for suffix, values, what in (("", 10**mean, "posterior median flux"), ("_lo", lo, "16th percentile of the flux"),
                                     ("_hi", hi, "84th percentile of the flux"),
                                     ("_err", 0.5 * (hi - lo), "1σ flux error (half the 16–84 % range)")):
            table[f"flux_{band}{suffix}"] = values * u.mJy
            table[f"flux_{band}{suffix}"].description = f"{band}: {what} (catalogue head)"
    target = f"flux_{TARGET_BAND}" if TARGET_BAND in bands else f"flux_{bands[0]}"
    table.sort(target, reverse=True)
    return table


def isotonic(score: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing fit of ``outcome`` (0/1: was the detection real) against ``score``
    (pool-adjacent-violators): ``(nodes, values)``, so that ``np.interp(s, nodes, values)`` is the
    calibrated probability of a detection of score ``s`` (flat beyond the ends)."""
    order = np.argsort(score, kind="stable")
    s, y = np.asarray(score, float)[order], np.asarray(outcome, float)[order]
    means, weights, lo = [], [], []
    for k in range(len(s)):
        means.append(y[k]), weights.append(1.0), lo.append(k)
        while len(means) > 1 and means[-2] >= means[-1]:
            w = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            weights[-2] = w
            del means[-1], weights[-1], lo[-1]
    hi = [*(start - 1 for start in lo[1:]), len(s) - 1]
    nodes = np.array([0.5 * (s[a] + s[b]) for a, b in zip(lo, hi)])
    return nodes, np.asarray(means)


#: Scores at which a presence calibration is recorded: :func:`isotonic`'s steps resampled, so the
#: record is short and the same size for every model.
PRESENCE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 21))


def presence_calibration(score: np.ndarray, real: np.ndarray, name: str = "p_peak",
                         pos_err_scale: float = 1.0, flux_sigma_scale: tuple[float, ...] | None = None) -> dict:
    """A record of how often a detection of head score ``score`` (``p`` or ``p_peak`` of
    :func:`decode_cells`) is real (``real``: matched to a true source), fitted after training on
    fields of the training distribution: :func:`isotonic` read at :data:`PRESENCE_GRID`.

    Returns
    -------
    dict
        ``score`` (which column it calibrates), ``nodes`` and ``p_real`` (the calibrated
        probability at each node; :func:`calibrated_p` interpolates), ``n`` (detections used),
        ``n_real``; and the factors the head's σ's are scaled by — ``pos_err_scale`` (positions)
        and ``flux_sigma_scale`` (log-fluxes, one per :data:`CATALOGUE_BANDS`) — measured with it
        (:func:`error_scales`).
    """
    score, real = np.asarray(score, float), np.asarray(real, bool)
    if len(score) < 20 or real.all() or not real.any():
        raise ValueError(f"a presence calibration needs at least 20 detections, real and false among them; got "
                         f"{len(score)} ({int(real.sum())} real)")
    nodes, values = isotonic(score, real)
    grid = np.asarray(PRESENCE_GRID)
    flux_sigma_scale = (1.0,) * len(CATALOGUE_BANDS) if flux_sigma_scale is None else flux_sigma_scale
    return {"score": name, "nodes": grid.tolist(), "p_real": np.round(np.interp(grid, nodes, values), 4).tolist(),
            "n": int(len(score)), "n_real": int(real.sum()), "pos_err_scale": round(float(pos_err_scale), 4),
            "flux_sigma_scale": [round(float(k), 4) for k in flux_sigma_scale]}


#: The median of |offset| / σ for a circular 2-D Gaussian of σ per axis: √(2 ln 2).
RAYLEIGH_MEDIAN = float(np.sqrt(2 * np.log(2)))


def error_scales(offset_arcsec: np.ndarray, pos_err_arcsec: np.ndarray, log_true: np.ndarray, log_mean: np.ndarray,
                 log_sigma: np.ndarray) -> tuple[float, tuple[float, ...]]:
    """Factors that make the head's σ's honest on matched detections: ``pos_err_scale`` so the
    median of offset / σ_pos is that of a 2-D Gaussian (:data:`RAYLEIGH_MEDIAN`), and per band
    (columns of ``log_true`` / ``log_mean`` / ``log_sigma``: log10 fluxes and σ in dex; NaN where a
    band is unknown) the robust std (1.4826 MAD) of (log_true − log_mean) / log_sigma."""
    ratio = np.asarray(offset_arcsec, float) / np.asarray(pos_err_arcsec, float)
    pos = float(np.nanmedian(ratio) / RAYLEIGH_MEDIAN)
    z = (np.asarray(log_true, float) - np.asarray(log_mean, float)) / np.asarray(log_sigma, float)
    scales = []
    for column in np.atleast_2d(z.T):
        column = column[np.isfinite(column)]
        scales.append(float(1.4826 * np.median(np.abs(column - np.median(column)))) if len(column) >= 10 else 1.0)
    return pos, tuple(scales)


def calibrated_p(record: dict, score: np.ndarray) -> np.ndarray:
    """The calibrated probability that detections of head score ``score`` are real, from a
    :func:`presence_calibration` record (linear between its nodes, flat beyond)."""
    return np.interp(np.asarray(score, float), np.asarray(record["nodes"], float), np.asarray(record["p_real"], float))


def presence_cards(record: dict | None) -> dict:
    """FITS cards of a :func:`presence_calibration` record, so that a super-resolved map carries
    its model's (as it carries its flux curves): ``GSRPSCOR`` the score, ``GSRPN`` the number of
    nodes, ``GSRPS<i>`` / ``GSRPR<i>`` the nodes and the calibrated probabilities. Empty for None."""
    if record is None:
        return {}
    cards = {"GSRPSCOR": (record["score"], "catalogue-head score that p_real calibrates"),
             "GSRPN": (len(record["nodes"]), "p_real calibration nodes (training distribution)")}
    for i, (node, p) in enumerate(zip(record["nodes"], record["p_real"]), 1):
        cards[f"GSRPS{i}"] = (float(node), "head score at the node")
        cards[f"GSRPR{i}"] = (float(p), "P(real) at the node")
    cards["GSRPPOS"] = (float(record.get("pos_err_scale", 1.0)), "head positional sigma scaled by")
    for band, k in zip(CATALOGUE_BANDS, record.get("flux_sigma_scale", ())):
        cards[f"GSRPF{band[-3:]}"] = (float(k), f"head {band} log-flux sigma scaled by")
    return cards


def presence_from_keywords(keywords: dict) -> dict | None:
    """The :func:`presence_calibration` record written by :func:`presence_cards` (keyword →
    value or (value, comment), as ``Map.meta`` holds them), or None."""
    def value(key):
        v = keywords.get(key)
        return v[0] if isinstance(v, tuple) else v

    n = value("GSRPN")
    if not isinstance(n, int) or n < 1:
        return None
    return {"score": str(value("GSRPSCOR")), "nodes": [float(value(f"GSRPS{i}")) for i in range(1, n + 1)],
            "p_real": [float(value(f"GSRPR{i}")) for i in range(1, n + 1)],
            "pos_err_scale": float(value("GSRPPOS") or 1.0),
            "flux_sigma_scale": [float(value(f"GSRPF{b[-3:]}") or 1.0) for b in CATALOGUE_BANDS]}
