"""Sources on a grid of cells: the targets of a per-cell catalogue head, and a catalogue back.

Groundwork for the catalogue head (issue "the network reports sources"): the network is not
wired to it yet. A truth catalogue is encoded in two steps so that the tile augmentation of
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

__all__ = ["source_planes", "augment_planes", "cell_targets", "cells_to_sources", "PLANE_OFFSETS"]

#: Channels of :func:`source_planes` before the fluxes: the blend's offset (dy, dx) in pixels.
PLANE_OFFSETS = 2


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
