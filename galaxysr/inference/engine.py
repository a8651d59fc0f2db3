"""The tiling engine: a :class:`Plan` of a job (inputs as the network sees them, output and tile
grids, header), a :class:`StripRunner` that runs one row of tiles through the network, and the
:class:`StripSums` they are blended in — the same three pieces serve :func:`super_resolve_maps`
and :mod:`galaxysr.survey`, so both give the same pixels.

An output grid at the model's pixel scale covers the 250 µm map's footprint (TAN, same
centre). The grid is processed one strip of tiles at a time: the SPIRE maps are resampled
onto the strip, cut into overlapping tiles, run through the network in batches and
blended with a smooth window; finished rows are streamed to disk. Memory therefore
depends on the map's width, not its area.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy import units as u

from .. import __version__
from ..console import quiet_native_output
from ..instruments import get_band
from ..errors import refuse_existing
from ..maps import FLAG_FILLED, FLAG_LOW_COVERAGE, MJY_PER_BEAM, Map, MapError, Resampler, output_grid, write_map
from ..cells import CELL_CHANNELS, CELL_PIXELS, presence_cards
from ..model import ModelConfig
from ..noise import fill_gaps, with_noise
from .artifact import ModelArtifact, load_artifact, load_model
from .provenance import file_sha256
from .writer import MapWriter

__all__ = ["MissingBandError", "super_resolve", "input_maps", "blend_window", "tile_starts", "check_inputs", "Plan",
           "plan", "StripRunner", "StripSums", "unpack_sky", "super_resolve_maps", "draw_head_map"]

#: What prediction did to its inputs, one line per band (the command line shows it).
LOG = logging.getLogger("galaxysr")


class MissingBandError(MapError):
    """A SPIRE band the model needs was neither given nor found beside the 250 µm file."""

    def __init__(self, message: str, band: str):
        super().__init__(message)
        self.band = band


#: What ``super_resolve`` and friends accept as a map: see :func:`galaxysr.maps.as_map`.
MapLike = object


def super_resolve(spire250: MapLike, spire350: MapLike | None = None, spire500: MapLike | None = None, *,
                  model=None, noise: dict | None = None, overlap: int | None = None, batch_size: int = 16,
                  progress: bool = False, background: str | None = None) -> Map:
    """Super-resolve SPIRE maps to SCUBA-2 450 µm resolution.

    Parameters
    ----------
    spire250, spire350, spire500
        The SPIRE maps, each a FITS path, an ``HDUList`` or image HDU, an ``(image, WCS)``
        tuple (a Quantity image carries its unit), an ``NDData``/``CCDData`` or a
        :class:`~galaxysr.maps.Map`, in mJy/beam, Jy/beam or MJy/sr. When ``spire250`` is a
        path, the 350/500 µm files are found beside it by name ('250' → '350', PSW → PMW…)
        unless given.
    model : optional
        See :func:`load_model`; default the shipped model.
    noise : dict, optional
        Band name (``"spire_250"``…) → 1σ instrumental noise (mJy/beam, a number or an
        array on that map's grid). Default: the map's own noise (an SMAP ``error``
        extension, an NDData uncertainty), else an estimate from the map.
    overlap, batch_size, progress
        Tiling: overlap in output pixels (default a quarter tile), tiles per network call,
        and whether to show a progress bar.
    background : str, optional
        How the inputs' background is removed (:mod:`galaxysr.conventions`): default the
        model's own convention (``"filter"``); ``"median"``, or ``"none"`` to switch it off.
        Extended-source calibrated maps (MJy/sr) are always converted to point-source
        mJy/beam. What was done is in the result's ``meta`` (``CALnnn``, ``BKGnnn``,
        ``BKGMETH``) and logged (logger ``galaxysr``, level INFO).

    Returns
    -------
    Map
        The 450 µm map (``.data`` in ``.unit`` = mJy/beam, ``.wcs``, ``.error``, the
        measured beam ``.beam_fwhm``); :func:`galaxysr.maps.write_map` saves it as FITS.

    Examples
    --------
    >>> from galaxysr import super_resolve, write_map
    >>> result = super_resolve("spire_250.fits")            # doctest: +SKIP
    >>> write_map(result, "spire_450.fits")                  # doctest: +SKIP
    """
    with quiet_native_output():
        artifact = load_model(model)
        maps = input_maps(artifact, spire250, spire350, spire500)
        return super_resolve_maps(maps, artifact, overlap=overlap, batch_size=batch_size, progress=progress,
                                  noise=noise, background=background)


def input_maps(artifact: ModelArtifact, spire250, spire350=None, spire500=None) -> dict[str, Map]:
    """The Maps the model needs (band name → Map) from what was given (see
    :func:`super_resolve`), finding missing 350/500 µm files beside a 250 µm path."""
    from ..maps import as_map, sibling_band_path

    given = {"spire_250": spire250, "spire_350": spire350, "spire_500": spire500}
    maps = {}
    for band in artifact.config.input_bands:
        obj = given[band]
        if obj is None and isinstance(spire250, (str, os.PathLike)):
            if not Path(spire250).exists():
                raise MapError(f"{spire250}: no such file; check the path of the 250 µm map")
            obj = sibling_band_path(Path(spire250), band)
            if not obj.exists():
                raise MissingBandError(f"{obj}: the model needs the {band} map and it is not beside {spire250} "
                                       "under that name; give it explicitly", band)
        if obj is None:
            raise MissingBandError(f"the model needs the {band} map and none was given: pass it as "
                                   f"spire{band[-3:]}=… (a FITS path, HDU or HDUList, (image, WCS) or NDData), as the "
                                   "250 µm map was passed", band)
        maps[band] = as_map(obj, band)
    return maps


def blend_window(tile: int, floor: float = 1e-3) -> np.ndarray:
    """Separable sin² (Hann) taper for blending overlapping tiles, floored so map edges,
    covered by one tile only, keep a finite weight."""
    w = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    return np.maximum(np.outer(w, w), floor).astype(np.float32)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering ``length`` pixels; the last one flush with the end (or 0)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def check_inputs(maps: dict[str, Map], config: ModelConfig) -> None:
    """Every band the model needs is there, and is a map of that band. (NaN holes are not
    refused here: the plan fills gaps within a beam of data and flags them.)"""
    for band in config.input_bands:
        if band not in maps:
            raise MapError(f"the model needs the {band} map and it was not given")
        if maps[band].band.name != band:
            raise MapError(f"{maps[band].source}: is a {maps[band].band.name} map, passed as {band}")


@dataclass
class Plan:
    """Everything about a super-resolution job that is fixed before any tile is run: the
    inputs as fed to the network (mJy/beam, noise, gaps filled), the output grid, the tile
    grid and the output header. :func:`super_resolve_maps` runs it all at once;
    :mod:`galaxysr.survey` runs it block by block on a cluster, with the same strips and
    tiles, so both give the same pixels."""

    artifact: ModelArtifact
    inputs: dict            # band → Map as fed to the network
    filled: dict            # band → bool array of the NaN pixels filled
    median_noise: dict      # band → median 1σ noise (mJy/beam), for the low-coverage flag
    wcs: object             # output grid
    shape: tuple            # (ny, nx)
    pad: tuple              # (pad_y, pad_x): at least one tile
    ys: list                # tile origins (rows)
    xs: list                # tile origins (columns)
    meta: dict              # FITS keywords of the output (provenance)
    backgrounds: dict = field(default_factory=dict)  # band → background removed (native grid) or None
    notes: list = field(default_factory=list)        # what was done to the inputs, one line per band

    @property
    def tile(self) -> int:
        return self.artifact.config.tile

    def template(self) -> Map:
        """A 1×1 Map carrying the output's WCS, band, unit, beam, flux calibration and provenance. A sky-model
        network's map is drawn at the band's beam; a legacy map network's beam is its
        measured one (when recorded)."""
        config = self.artifact.config
        measured = self.artifact.calibration.fwhm_arcsec
        fwhm = None if config.has_sky or measured is None else measured * u.arcsec
        return Map(np.zeros((1, 1), np.float32), self.wcs, get_band(config.target_band), MJY_PER_BEAM,
                   source="galaxysr", fwhm=fwhm, meta=dict(self.meta),
                   flux_curves=self.artifact.calibration.flux_curves())


def plan(maps: dict[str, Map], artifact: ModelArtifact, overlap: int | None = None, noise: dict | None = None,
         header_extra: dict | None = None, background: str | None = None) -> Plan:
    """The :class:`Plan` of super-resolving ``maps`` (band → Map) with ``artifact``.

    Each map is first brought to the model's input conventions
    (:func:`galaxysr.conventions.condition`): point-source mJy/beam, background removed by
    the model's method or ``background`` (``"filter"``, ``"median"``, ``"none"``)."""
    from ..conventions import condition

    config, conventions = artifact.config, artifact.conventions
    check_inputs(maps, config)
    method = conventions.background if background is None else background
    inputs, noise_note, filled, backgrounds, notes, cards = {}, {}, {}, {}, [], {}
    for band in config.input_bands:
        conditioned = condition(maps[band], method)
        backgrounds[band] = conditioned.background
        notes.append(conditioned.note())
        cards.update(conditioned.header())
        m = conditioned.map
        if config.noise_inputs:
            m, noise_note[band] = with_noise(m, (noise or {}).get(band))
        inputs[band], filled[band] = fill_gaps(m)
    wcs, shape = output_grid(inputs[config.input_bands[0]], conventions.pixel)
    ny, nx = shape
    tile = config.tile
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be between 0 and the tile size {tile}, got {overlap}")
    pad_y, pad_x = max(ny, tile), max(nx, tile)  # maps smaller than a tile are padded, not refused
    if "cells" in config.output_channels:
        # Every tile must start on a cell border, so that the tiles' cells are the same cells
        # and blend like the map: an even padded grid and an even stride.
        cell = CELL_PIXELS
        if overlap % cell:
            raise ValueError(f"overlap must be a multiple of {cell} output pixels for a model with a catalogue "
                             f"head (its cells are {cell} pixels wide), got {overlap}")
        pad_y, pad_x = -(-pad_y // cell) * cell, -(-pad_x // cell) * cell
    meta = dict(header_extra or {})
    model_name = artifact.name if len(artifact.name) <= 60 else "..." + artifact.name[-57:]
    meta.update({"GSRVER": (__version__, "galaxysr version"), "GSRMODEL": (model_name, "model: shipped, or its folder"),
                 "GSRHASH": (artifact.sha256, "sha256 of model weights (16 hex)"),
                 "PIXSCALE": (conventions.pixel_arcsec, "[arcsec] pixel scale"),
                 "GSRBANDS": (",".join(config.input_bands), "input SPIRE bands")})
    meta.update(presence_cards(artifact.calibration.presence))
    meta["BKGMETH"] = (method, "input background removal (filter/median/none)")
    if method != conventions.background:
        meta["BKGMETH"] = (method, f"input background; the model was trained with {conventions.background}")
    meta.update(cards)
    for band in config.input_bands:
        meta[f"IN{band[-3:]}"] = (Path(maps[band].source).name[:60], f"input {band} map")
        if band in noise_note:
            meta[f"NSRC{band[-3:]}"] = (noise_note[band][:60], f"{band} noise fed to the model")
        meta[f"FILL{band[-3:]}"] = (int(filled[band].sum()), f"{band} NaN pixels filled (within a beam)")
        digest = file_sha256(maps[band].source)
        if digest:
            meta[f"SHA{band[-3:]}"] = digest  # sha256 of the input file (64 hex: no room for a comment)
    median_noise = {b: float(np.nanmedian(m.noise)) for b, m in inputs.items() if m.noise is not None}
    return Plan(artifact, inputs, filled, median_noise, wcs, shape, (pad_y, pad_x),
                tile_starts(pad_y, tile, tile - overlap), tile_starts(pad_x, tile, tile - overlap), meta,
                backgrounds, notes)


class StripRunner:
    """Runs the network over strips of a :class:`Plan` (one row of tiles, any span of
    columns) and returns their contributions to the blended output."""

    def __init__(self, job: Plan, batch_size: int = 16):
        self.job, self.batch_size = job, batch_size
        self.bands = job.artifact.config.input_bands
        self.resamplers = {b: Resampler(job.inputs[b]) for b in self.bands}
        self.gaps = {b: Resampler(replace(job.inputs[b], data=job.filled[b].astype(np.float32), noise=None))
                     for b in self.bands if job.filled[b].any()}
        self.window = blend_window(job.tile)
        self.ceiling_hit = False

    def run(self, y0: int, x_lo: int, x_hi: int, x0s: list[int]):
        """Tiles starting at row ``y0`` and columns ``x0s`` (all within [x_lo, x_hi)).

        Returns ``(numerator, weights, flags, sky, cells)`` over rows [y0, y0 + tile) and columns
        [x_lo, x_hi): the window-weighted sums of the map (and error) predictions, the window
        weights, the strip's quality bits, the window-weighted sum of the sky model on its
        f-times finer grid (weights: each map pixel's, repeated; ``None`` for a legacy map
        network) and, for a catalogue-head network, the window-weighted sums of its
        :data:`~galaxysr.cells.CELL_CHANNELS` raw cell outputs once per cell (weights: the
        window's at each cell's first pixel; ``y0`` and every column origin on cell borders;
        ``None`` without a head); ``None`` if the strip has no data."""
        job, config, tile = self.job, self.job.artifact.config, self.job.tile
        calibration = job.artifact.calibration
        scaling = config.scaling
        shape = (tile, x_hi - x_lo)
        region_wcs = _region_wcs(job.wcs, y0, x_lo, shape)
        strip = [self.resamplers[b].onto(region_wcs, shape, origin=(y0, x_lo)) for b in self.bands]
        flags = np.zeros(shape, np.uint8)
        for band, m in zip(self.bands, strip):
            if band in self.gaps:
                gaps = self.gaps[band].onto(region_wcs, shape, origin=(y0, x_lo)).data
                flags |= np.where(np.nan_to_num(gaps) > 0.05, FLAG_FILLED, 0).astype(np.uint8)
            if band in job.median_noise and m.noise is not None:
                flags |= np.where(np.nan_to_num(m.noise) > 2 * job.median_noise[band], FLAG_LOW_COVERAGE,
                                  0).astype(np.uint8)
        channels = [m.data for m in strip] + ([m.noise for m in strip] if config.noise_inputs else [])
        stack = np.stack(channels, -1)
        valid = np.isfinite(stack).all(-1)
        if not valid.any():
            return None
        self.ceiling_hit |= bool(np.nanmax(stack[..., 0]) > scaling.ceiling_mjy)
        normalised = scaling.forward(np.where(np.isfinite(stack), stack, 0.0)).astype(np.float32)
        tiles = np.stack([normalised[:, x0 - x_lo:x0 - x_lo + tile] for x0 in x0s])
        predict = job.artifact.predict_fn
        predicted = np.concatenate([predict(tiles[i:i + self.batch_size])
                                    for i in range(0, len(tiles), self.batch_size)]).astype(np.float64)
        channels = config.output_channels
        planes = 1 + ("error" in channels)
        cells = channels.get("cells")
        numerator = np.zeros((planes, *shape))
        # Cells are blended once per cell, at its first pixel: the pixels a cell repeats its values
        # over would be blended to the same numbers and then dropped.
        cell_sums = np.zeros((CELL_CHANNELS, -(-tile // CELL_PIXELS), -(-shape[1] // CELL_PIXELS))) if cells else None
        weights = np.zeros(shape)
        f = config.sky_oversample
        sky = np.zeros((tile * f, shape[1] * f)) if "sky" in channels else None
        for k, x0 in enumerate(x0s):
            c = slice(x0 - x_lo, x0 - x_lo + tile)
            w = self.window * valid[:, c]
            flux = scaling.inverse(predicted[k, ..., 0])
            numerator[0, :, c] += w * flux
            if planes == 2:
                error = predicted[k, ..., channels["error"].start]
                numerator[1, :, c] += w * scaling.error_mjy(predicted[k, ..., 0], error) * calibration.error_factor(flux)
            if cells:
                first = slice((x0 - x_lo) // CELL_PIXELS, (x0 - x_lo + tile) // CELL_PIXELS)
                cell_sums[:, :, first] += (w[::CELL_PIXELS, ::CELL_PIXELS]
                                           * np.moveaxis(predicted[k, ::CELL_PIXELS, ::CELL_PIXELS, cells], -1, 0))
            if sky is not None:
                fine = unpack_sky(predicted[k, ..., channels["sky"]], f)
                sky[:, (x0 - x_lo) * f:(x0 - x_lo + tile) * f] += np.kron(w, np.ones((f, f))) * fine
            weights[:, c] += w
        return numerator, weights, flags, sky, cell_sums

    def warn_if_saturated(self) -> None:
        """Legacy map networks only: a sky-model network has no ceiling."""
        if self.ceiling_hit and not self.job.artifact.config.has_sky:
            ceiling = self.job.artifact.config.scaling.ceiling_mjy
            warnings.warn(f"some 250 µm pixels exceed the model's flux ceiling ({ceiling:g} mJy/beam); predicted "
                          "fluxes there saturate at the ceiling", stacklevel=3)


class StripSums:
    """Window-weighted sums of strips (:meth:`StripRunner.run`'s results) over a band of output
    rows, and the blended rows they give: the map (and its error) as sums over weights, the
    flags OR-ed, the sky model (``oversample`` times finer; 0 for a legacy map network) under
    the same weights. :func:`super_resolve_maps` keeps two tiles of rows and drops the rows it
    has written; :mod:`galaxysr.survey` keeps one block. ``cell_planes``: the catalogue head's raw
    outputs (:data:`~galaxysr.cells.CELL_CHANNELS`, or 0), summed once per cell of
    :data:`~galaxysr.cells.CELL_PIXELS` pixels (rows added, dropped and read start on cell borders)."""

    def __init__(self, rows: int, cols: int, planes: int, oversample: int = 0, cell_planes: int = 0):
        f = self.oversample = int(oversample)
        c = CELL_PIXELS
        self.planes = planes
        self.numerator = np.zeros((planes, rows, cols))
        self.cells = np.zeros((cell_planes, -(-rows // c), -(-cols // c))) if cell_planes else None
        self.weights = np.zeros((rows, cols))
        self.flags = np.zeros((rows, cols), np.uint8)
        self.sky = np.zeros((rows * f, cols * f)) if f else None

    def add(self, row: int, strip: tuple) -> None:
        """Add a strip whose first row is row ``row`` of these sums."""
        numerator, weights, flags, sky, cells = strip
        rows = slice(row, row + len(weights))
        self.numerator[:, rows] += numerator
        self.weights[rows] += weights
        self.flags[rows] |= flags
        if self.sky is not None:
            f = self.oversample
            self.sky[f * rows.start:f * rows.stop] += sky
        if self.cells is not None:
            first = row // CELL_PIXELS
            self.cells[:, first:first + cells.shape[1], :cells.shape[2]] += cells

    def drop(self, n: int) -> None:
        """Forget the first ``n`` rows (written out); the rows freed at the end start empty."""
        self.numerator, self.weights, self.flags = (np.roll(a, -n, a.ndim - 2)
                                                    for a in (self.numerator, self.weights, self.flags))
        self.numerator[:, -n:], self.weights[-n:], self.flags[-n:] = 0.0, 0.0, 0
        if self.sky is not None:
            self.sky = np.roll(self.sky, -n * self.oversample, 0)
            self.sky[-n * self.oversample:] = 0.0
        if self.cells is not None:
            k = n // CELL_PIXELS
            self.cells = np.roll(self.cells, -k, 1)
            self.cells[:, -k:] = 0.0

    def blended(self, rows: slice, cols: slice) -> tuple:
        """``(image, error or None, flags, sky or None, cells or None)`` of ``rows`` × ``cols``:
        float32 in mJy/beam (the sky in mJy per sky pixel; the cells' raw outputs once per cell,
        (cell rows, cell columns, planes)), NaN where no tile had data."""
        w = self.weights[rows, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(w > 0, self.numerator[:, rows, cols] / w, np.nan).astype(np.float32)
            sky = cells = None
            if self.sky is not None:
                f = self.oversample
                fine_w = np.kron(w, np.ones((f, f)))
                fine = self.sky[f * rows.start:f * rows.stop, f * cols.start:f * cols.stop]
                sky = np.where(fine_w > 0, fine / fine_w, np.nan).astype(np.float32)
            if self.cells is not None:
                c = CELL_PIXELS
                first_w = w[::c, ::c]  # the weights at each cell's first pixel
                part = self.cells[:, rows.start // c:rows.start // c + first_w.shape[0],
                                  cols.start // c:cols.start // c + first_w.shape[1]]
                cells = np.moveaxis(np.where(first_w > 0, part / first_w, np.nan).astype(np.float32), 0, -1)
        return values[0], values[1] if self.planes > 1 else None, self.flags[rows, cols], sky, cells


def unpack_sky(packed: np.ndarray, oversample: int) -> np.ndarray:
    """A sky model packed by space-to-depth, (H, W, f²), back onto its grid (fH, fW)."""
    h, w, _ = packed.shape
    f = oversample
    return packed.reshape(h, w, f, f).transpose(0, 2, 1, 3).reshape(h * f, w * f)


def _region_wcs(wcs, y0: int, x0: int, shape: tuple[int, int]):
    region = wcs.deepcopy()
    region.wcs.crpix[0] -= x0
    region.wcs.crpix[1] -= y0
    region.pixel_shape = (shape[1], shape[0])
    return region


def super_resolve_maps(maps: dict[str, Map], artifact: ModelArtifact | None = None, overlap: int | None = None,
                       batch_size: int = 16, progress: bool = True, out_path: str | os.PathLike | None = None,
                       overwrite: bool = False, header_extra: dict | None = None,
                       noise: dict | None = None, background: str | None = None,
                       draw: bool | None = None) -> Map | Path:
    """Super-resolve SPIRE ``maps`` (band name → Map) to the model's target band (the
    engine behind :func:`super_resolve` and ``predict.py``).

    Parameters
    ----------
    maps : dict
        SPIRE maps in any brightness unit; converted to mJy/beam.
    artifact : ModelArtifact, optional
        Default: the shipped model.
    overlap : int, optional
        Tile overlap in output pixels (default: a quarter tile).
    batch_size : int
        Tiles per network call.
    out_path : path, optional
        Stream the result into this FITS file (written under a temporary name, renamed
        at the end) and return its path; otherwise return the Map in memory.
    noise : dict, optional
        Band name → 1σ instrumental noise (mJy/beam, a number or an array on that map's
        grid) for models that take the noise as input. Default: each map's own noise map
        (SMAP ``error`` extension), else an estimate from the map
        (:func:`galaxysr.noise.estimate_white_noise`); the header says which.

    Returns
    -------
    Map or Path
        450 µm map in mJy/beam on a TAN grid at the model's pixel scale, NaN where the
        inputs had no data within a beam; its beam (``Map.fwhm``, header ``BMAJ``/``BMIN``)
        is the model's measured output beam when known. Models with an uncertainty head
        also give the map's 1σ error (``Map.noise``; an ``ERROR`` extension in the file);
        ``Map.flags`` (a ``FLAGS`` extension) marks filled gaps and low input coverage. A
        sky-model network's sky (``Map.sky_model``, mJy per sky pixel on a grid
        ``sky_oversample`` times finer; a ``SKYMODEL`` extension) comes with it, and a
        catalogue-head network's raw cell outputs (``Map.cells``; a ``CELLS`` extension), which
        ``extract_sources(…, method="head")`` reads.
    draw : bool, optional
        Catalogue-head networks (default: yes): the image is the head's catalogue drawn through
        the beam (:func:`draw_head_map`), the per-pixel map moves to ``Map.mean`` (a ``MEAN``
        extension). Such a map is made in memory before it is written.
    """
    artifact = artifact or load_artifact()
    config = artifact.config
    cell_planes = CELL_CHANNELS if "cells" in config.output_channels else 0
    draw = bool(cell_planes) if draw is None else draw
    if draw and not cell_planes:
        raise ValueError(f"{artifact.name}: has no catalogue head to draw a map from (draw=True needs a model "
                         "trained with --catalogue-head)")
    if draw and out_path is not None:
        refuse_existing(Path(out_path), overwrite)  # before the work, as the streamed writer does
    job = plan(maps, artifact, overlap, noise, header_extra, background)
    for note in job.notes:
        LOG.info(note)
    runner = StripRunner(job, batch_size)
    f = config.sky_oversample if config.has_sky else 0
    writer = MapWriter(job.template(), job.shape, None if draw else out_path, overwrite,
                       with_error=config.uncertainty_head, sky_oversample=f,
                       cell_pixels=CELL_PIXELS if cell_planes else 0)
    sums = StripSums(2 * job.tile, job.pad[1], 2 if config.uncertainty_head else 1, f, cell_planes)
    result = _stream_strips(job, runner, sums, writer, progress)
    runner.warn_if_saturated()
    if draw:
        measured = artifact.calibration.fwhm_arcsec
        result = draw_head_map(result, None if measured is None else measured * u.arcsec)
        if out_path is not None:
            result = write_map(result, out_path, overwrite=overwrite)
    return result


def _stream_strips(job: Plan, runner: StripRunner, sums: StripSums, writer: MapWriter, progress: bool):
    """Run ``job``'s strips top to bottom, blending them in ``sums`` (two tiles of rows from
    ``base``) and handing every row that no later strip reaches to ``writer``: a strip starts
    less than a tile below the previous one, so rows above it are final. Returns what the
    writer finishes with (the Map, or the path written); on any error the writer's partial
    file is removed."""
    from tqdm import tqdm

    tile, pad_y, nx = job.tile, job.pad[0], job.shape[1]
    base = 0
    try:
        for y0 in tqdm(job.ys, desc="super-resolving", unit="strip", disable=not progress):
            if y0 + tile > base + 2 * tile:
                writer.write_rows(base, *sums.blended(slice(0, y0 - base), slice(0, nx)))
                sums.drop(y0 - base)
                base = y0
            out = runner.run(y0, 0, job.pad[1], job.xs)
            if out is not None:
                sums.add(y0 - base, out)
        writer.write_rows(base, *sums.blended(slice(0, pad_y - base), slice(0, nx)))
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def draw_head_map(m: Map, mean_fwhm: u.Quantity | None = None) -> Map:
    """A catalogue-head network's map as users see it: every source the head decodes (p ≥ 0.05,
    whatever its flux) drawn through the beam with peak = its forced flux × p_real
    (:func:`galaxysr.catalogue.draw_catalogue`), so a source the network is sure of is exactly the
    beam and nothing is drawn that is in neither the catalogue nor the data. ``m``'s per-pixel map
    becomes ``mean`` (``mean_fwhm``: its measured beam, the model's calibration); the rest (the
    per-pixel map's error, flags, sky model, cells) stays, and so do the decoded detections
    (``decoded``): a catalogue of the drawn map costs no second fit."""
    from ..catalogue import draw_catalogue, drawn_cards, extract_sources, head_sources

    m = replace(m, decoded=head_sources(m, p_min=0.0))  # kept: a catalogue of this map reads it again
    table = extract_sources(m, method="head", p_min=0.0, min_flux_mjy=-np.inf, command="")
    meta = {**m.meta, **drawn_cards(len(table))}
    return replace(m, data=draw_catalogue(table, m), mean=m.data, meta=meta, mean_fwhm=mean_fwhm)


