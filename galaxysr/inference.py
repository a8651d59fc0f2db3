"""Super-resolve SPIRE maps of any size with a trained ModelArtifact.

An output grid at the model's pixel scale covers the 250 µm map's footprint (TAN, same
centre). The grid is processed one strip of tiles at a time: the SPIRE maps are resampled
onto the strip, cut into overlapping tiles, run through the network in batches and
blended with a smooth window; finished rows are streamed to disk. Memory therefore
depends on the map's width, not its area, and nothing is written under the final name
until the whole map is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from . import __version__
from .instruments import get_band
from .maps import (FLAG_FILLED, FLAG_LOW_COVERAGE, MJY_PER_BEAM, Map, MapError, Resampler, finer_wcs, output_grid,
                   sky_model_header)
from .console import quiet_native_output
from .errors import OutputExistsError, refuse_existing
from .model import ModelConfig
from .noise import fill_gaps, with_noise

__all__ = ["SHIPPED_MODEL", "MissingBandError", "ModelArtifact", "load_artifact", "load_model", "super_resolve", "input_maps",
           "record_calibration", "blend_window", "tile_starts", "check_inputs", "Plan", "plan", "StripRunner", "unpack_sky",
           "super_resolve_maps", "MapWriter", "file_sha256", "provenance", "digest", "recorded", "outputs_to_make"]

#: The model shipped with the package.
SHIPPED_MODEL = files("galaxysr") / "data" / "model"
#: What prediction did to its inputs, one line per band (the command line shows it).
LOG = logging.getLogger("galaxysr")


@dataclass
class ModelArtifact:
    """A trained model folder: SavedModel and/or ``.keras`` plus ``config.json``."""

    path: Path
    config: ModelConfig
    meta: dict
    model_file: Path

    @property
    def name(self) -> str:
        """Which model this is: ``shipped`` for the model shipped with galaxysr, else the
        folder it was loaded from (as given)."""
        try:
            if self.path.resolve() == Path(str(SHIPPED_MODEL)).resolve():
                return "shipped"
        except OSError:
            pass
        return str(self.path)

    @cached_property
    def sha256(self) -> str:
        """Hash of the model's weights files (first 16 hex digits)."""
        digest = hashlib.sha256()
        paths = sorted(self.model_file.rglob("*")) if self.model_file.is_dir() else [self.model_file]
        for path in paths:
            if path.is_file():
                digest.update(path.relative_to(self.model_file.parent).as_posix().encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    @cached_property
    def predict_fn(self):
        """Callable: normalised tiles (B, H, W, C) float32 → (B, H, W, 1), or (B, H, W, 2)
        (map, error scale) for models with an uncertainty head."""
        import tensorflow as tf

        if self.model_file.is_dir():
            loaded = tf.saved_model.load(str(self.model_file))
            self._keep = loaded  # the concrete function needs its object alive
            return lambda x: loaded.serve(tf.constant(x)).numpy()
        import keras

        from .model import pixel_shuffle_layer

        pixel_shuffle_layer()  # registers the layer before loading
        model = keras.saving.load_model(self.model_file, compile=False)
        return lambda x: model(x, training=False).numpy()


def load_artifact(path: str | os.PathLike | None = None) -> ModelArtifact:
    """Load a model: an artifact folder, a SavedModel folder or a ``.keras`` file.

    ``config.json`` (written by ``train.py``) is looked for in the folder and beside the
    file; it records the bands, pixel scale and flux scaling that give the numbers meaning.
    ``None`` loads the shipped model.
    """
    path = Path(SHIPPED_MODEL if path is None else path)
    if not path.exists():
        raise MapError(f"{path}: no such model; give a model folder written by train.py "
                       "(runs/NAME/model), its saved_model/ folder or its model.keras")
    if path.is_dir() and (path / "saved_model").is_dir():
        folder, model_file = path, path / "saved_model"
    elif path.is_dir() and (path / "saved_model.pb").exists():
        folder, model_file = path.parent, path
    elif path.is_dir() and (path / "model.keras").exists():
        folder, model_file = path, path / "model.keras"
    elif path.suffix == ".keras":
        folder, model_file = path.parent, path
    else:
        raise MapError(f"{path}: not a galaxysr model (no saved_model/, saved_model.pb or model.keras)")
    config_path = next((p for p in (folder / "config.json", path / "config.json") if p.exists()), None)
    if config_path is None:
        raise MapError(f"{path}: no config.json beside the model; it records the bands, pixel scale "
                       "and flux scaling — copy it from the train.py run folder (runs/NAME/model)")
    try:
        meta = json.loads(config_path.read_text())
        config = ModelConfig.from_dict(meta["train"]["model"])
    except json.JSONDecodeError as error:
        raise MapError(f"{config_path}: not valid JSON ({error}); restore it from the train.py run folder") from None
    except KeyError as error:
        raise MapError(f"{config_path}: no {error} entry; it is not a galaxysr model configuration") from None
    except (TypeError, ValueError) as error:
        raise MapError(f"{config_path}: {error}; it was written by another galaxysr version or edited — "
                       "restore it from the train.py run folder") from None
    return ModelArtifact(path=folder, config=config, meta=meta, model_file=model_file)


class MissingBandError(MapError):
    """A SPIRE band the model needs was neither given nor found beside the 250 µm file."""

    def __init__(self, message: str, band: str):
        super().__init__(message)
        self.band = band


#: What ``super_resolve`` and friends accept as a map: see :func:`galaxysr.maps.as_map`.
MapLike = object


def load_model(model=None) -> ModelArtifact:
    """A trained model: ``None`` (the shipped one), a model folder written by ``train.py``,
    its ``saved_model/`` folder or ``model.keras``, or an already loaded ModelArtifact."""
    return model if isinstance(model, ModelArtifact) else load_artifact(model)


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
        measured beam ``.beam_fwhm``); ``.write(path)`` saves it as FITS.

    Examples
    --------
    >>> from galaxysr import super_resolve
    >>> result = super_resolve("spire_250.fits")            # doctest: +SKIP
    >>> result.write("spire_450.fits")                       # doctest: +SKIP
    """
    with quiet_native_output():
        artifact = load_model(model)
        maps = input_maps(artifact, spire250, spire350, spire500)
        return super_resolve_maps(maps, artifact, overlap=overlap, batch_size=batch_size, progress=progress,
                                  noise=noise, background=background)


def input_maps(artifact: ModelArtifact, spire250, spire350=None, spire500=None) -> dict[str, Map]:
    """The Maps the model needs (band name → Map) from what was given (see
    :func:`super_resolve`), finding missing 350/500 µm files beside a 250 µm path."""
    from .maps import as_map, sibling_band_path

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


def record_calibration(artifact: ModelArtifact, beam: dict | None = None, errors: dict | None = None) -> ModelArtifact:
    """Store measured calibrations in the artifact's ``config.json`` and reload it.

    ``beam`` (see :func:`galaxysr.evaluate.measure_effective_beam`): its FWHM becomes
    ``ModelConfig.effective_fwhm_arcsec`` (written to every output header and used as the
    catalogue's PSF). ``errors`` (see :func:`galaxysr.evaluate.calibrate_errors`): its
    nodes and factors become ``ModelConfig.error_calibration``. The whole measurements are
    kept under ``effective_beam`` and ``error_calibration``. Neither given: both are
    removed, so that a model is re-calibrated from its raw outputs, not on top of an earlier
    calibration.
    """
    path = artifact.path / "config.json"
    meta = json.loads(path.read_text())
    if beam is None and errors is None:  # forget earlier calibrations: measure afresh
        meta["train"]["model"].update(effective_fwhm_arcsec=None, error_calibration=None)
        meta.pop("effective_beam", None)
        meta.pop("error_calibration", None)
    if beam is not None:
        fwhm = float(beam["fwhm_arcsec"])
        if not np.isfinite(fwhm) or fwhm <= 0:
            raise ValueError(f"{artifact.path}: the measured beam FWHM is {fwhm}; not recording it")
        meta["train"]["model"]["effective_fwhm_arcsec"] = round(fwhm, 3)
        meta["effective_beam"] = beam
    if errors is not None:
        meta["train"]["model"]["error_calibration"] = [list(errors["flux_mjy"]), list(errors["factor"])]
        meta["error_calibration"] = errors
    path.write_text(json.dumps(meta, indent=2))
    return load_artifact(artifact.path)


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
        """A 1×1 Map carrying the output's WCS, band, unit, beam and provenance. A sky-model
        network's map is drawn at the band's beam; a legacy map network's beam is its
        measured one (when recorded)."""
        config = self.artifact.config
        fwhm = None if config.has_sky or config.effective_fwhm_arcsec is None else \
            config.effective_fwhm_arcsec * u.arcsec
        return Map(np.zeros((1, 1), np.float32), self.wcs, get_band(config.target_band), MJY_PER_BEAM,
                   source="galaxysr", fwhm=fwhm, meta=dict(self.meta))


def plan(maps: dict[str, Map], artifact: ModelArtifact, overlap: int | None = None, noise: dict | None = None,
         header_extra: dict | None = None, background: str | None = None) -> Plan:
    """The :class:`Plan` of super-resolving ``maps`` (band → Map) with ``artifact``.

    Each map is first brought to the model's input conventions
    (:func:`galaxysr.conventions.condition`): point-source mJy/beam, background removed by
    the model's method or ``background`` (``"filter"``, ``"median"``, ``"none"``)."""
    from .conventions import condition

    config = artifact.config
    check_inputs(maps, config)
    method = config.background if background is None else background
    inputs, noise_note, filled, backgrounds, notes, conventions = {}, {}, {}, {}, [], {}
    for band in config.input_bands:
        conditioned = condition(maps[band], method)
        backgrounds[band] = conditioned.background
        notes.append(conditioned.note())
        conventions.update(conditioned.header())
        m = conditioned.map
        if config.noise_inputs:
            m, noise_note[band] = with_noise(m, (noise or {}).get(band))
        inputs[band], filled[band] = fill_gaps(m)
    wcs, shape = output_grid(inputs[config.input_bands[0]], config.pixel_arcsec * u.arcsec)
    ny, nx = shape
    tile = config.tile
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be between 0 and the tile size {tile}, got {overlap}")
    pad_y, pad_x = max(ny, tile), max(nx, tile)  # maps smaller than a tile are padded, not refused
    meta = dict(header_extra or {})
    model_name = artifact.name if len(artifact.name) <= 60 else "..." + artifact.name[-57:]
    meta.update({"GSRVER": (__version__, "galaxysr version"), "GSRMODEL": (model_name, "model: shipped, or its folder"),
                 "GSRHASH": (artifact.sha256, "sha256 of model weights (16 hex)"),
                 "PIXSCALE": (config.pixel_arcsec, "[arcsec] pixel scale"),
                 "GSRBANDS": (",".join(config.input_bands), "input SPIRE bands")})
    meta["BKGMETH"] = (method, "input background removal (filter/median/none)")
    if method != config.background:
        meta["BKGMETH"] = (method, f"input background; the model was trained with {config.background}")
    meta.update(conventions)
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

        Returns ``(numerator, weights, flags, sky)`` over rows [y0, y0 + tile) and columns
        [x_lo, x_hi): the window-weighted sums of the map (and error) predictions, the
        window weights, the strip's quality bits, and the window-weighted sum of the sky
        model on its f-times finer grid (weights: each map pixel's, repeated; ``None`` for a
        legacy map network); ``None`` if the strip has no data."""
        job, config, tile = self.job, self.job.artifact.config, self.job.tile
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
        numerator = np.zeros((planes, *shape))
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
                numerator[1, :, c] += w * scaling.error_mjy(predicted[k, ..., 0], error) * config.error_factor(flux)
            if sky is not None:
                fine = unpack_sky(predicted[k, ..., channels["sky"]], f)
                sky[:, (x0 - x_lo) * f:(x0 - x_lo + tile) * f] += np.kron(w, np.ones((f, f))) * fine
            weights[:, c] += w
        return numerator, weights, flags, sky

    def warn_if_saturated(self) -> None:
        """Legacy map networks only: a sky-model network has no ceiling."""
        if self.ceiling_hit and not self.job.artifact.config.has_sky:
            ceiling = self.job.artifact.config.scaling.ceiling_mjy
            warnings.warn(f"some 250 µm pixels exceed the model's flux ceiling ({ceiling:g} mJy/beam); predicted "
                          "fluxes there saturate at the ceiling", stacklevel=3)


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
                       noise: dict | None = None, background: str | None = None) -> Map | Path:
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
        ``sky_oversample`` times finer; a ``SKYMODEL`` extension) comes with it.
    """
    from tqdm import tqdm

    artifact = artifact or load_artifact()
    job = plan(maps, artifact, overlap, noise, header_extra, background)
    for note in job.notes:
        LOG.info(note)
    runner = StripRunner(job, batch_size)
    tile, (pad_y, pad_x) = job.tile, job.pad
    config = artifact.config
    f = config.sky_oversample if config.has_sky else 0
    writer = MapWriter(job.template(), job.shape, out_path, overwrite, with_error=config.uncertainty_head,
                       sky_oversample=f)
    # Accumulators for output rows [base, base + 2 tiles): a strip starts less than a tile
    # below the previous one, so rows above the current strip are final and are flushed.
    planes = 2 if config.uncertainty_head else 1
    numerator = np.zeros((planes, 2 * tile, pad_x), np.float64)
    weights = np.zeros((2 * tile, pad_x), np.float64)
    flags = np.zeros((2 * tile, pad_x), np.uint8)
    sky = np.zeros((2 * tile * f, pad_x * f), np.float64) if f else None
    base = 0
    try:
        for y0 in tqdm(job.ys, desc="super-resolving", unit="strip", disable=not progress):
            if y0 + tile > base + 2 * tile:
                shift = y0 - base
                writer.write_blended(base, numerator[:, :shift], weights[:shift], flags[:shift],
                                     None if sky is None else sky[:shift * f])
                numerator, weights, flags = (np.roll(a, -shift, a.ndim - 2) for a in (numerator, weights, flags))
                numerator[:, -shift:], weights[-shift:], flags[-shift:] = 0.0, 0.0, 0
                if sky is not None:
                    sky = np.roll(sky, -shift * f, 0)
                    sky[-shift * f:] = 0.0
                base = y0
            out = runner.run(y0, 0, pad_x, job.xs)
            if out is None:
                continue
            num, w, strip_flags, strip_sky = out
            numerator[:, y0 - base:y0 - base + tile] += num
            weights[y0 - base:y0 - base + tile] += w
            flags[y0 - base:y0 - base + tile] |= strip_flags
            if sky is not None:
                sky[(y0 - base) * f:(y0 - base + tile) * f] += strip_sky
        writer.write_blended(base, numerator[:, : pad_y - base], weights[: pad_y - base], flags[: pad_y - base],
                             None if sky is None else sky[: (pad_y - base) * f])
        result = writer.finish()
    except BaseException:
        writer.abort()
        raise
    runner.warn_if_saturated()
    return result


class MapWriter:
    """Collects finished output rows — the map, its error (if any), its flags and its sky
    model (if any) — in order, into memory or streamed into a FITS file: the map through a
    StreamingHDU, the rest through temporary memory-mapped files appended as ``ERROR``,
    ``FLAGS`` and ``SKYMODEL`` extensions at the end. Nothing appears under the final name
    until :meth:`finish`; :meth:`abort` removes the partial files. Memory does not grow with
    the map."""

    def __init__(self, template: Map, shape, out_path=None, overwrite: bool = False, with_error: bool = False,
                 sky_oversample: int = 0):
        self.shape = shape
        self.template = template
        self.with_error = with_error
        self.sky_oversample = int(sky_oversample)
        sky_shape = (shape[0] * self.sky_oversample, shape[1] * self.sky_oversample)
        self.out_path = None if out_path is None else Path(out_path)
        self.scratch = []
        if self.out_path is None:
            self.image = np.full(shape, np.nan, np.float32)
            self.error = np.full(shape, np.nan, np.float32) if with_error else None
            self.flags = np.zeros(shape, np.uint8)
            self.sky = np.full(sky_shape, np.nan, np.float32) if self.sky_oversample else None
            return
        refuse_existing(self.out_path, overwrite)
        header = template.header()
        header["NAXIS1"], header["NAXIS2"] = shape[1], shape[0]
        header.add_history("Super-resolved with galaxysr (Lauritsen et al. 2021 method)")
        self.header = header
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self._scratch(".part")
        self.stream = fits.StreamingHDU(self.tmp, _image_header(header, shape))
        self.error = np.memmap(self._scratch(".err"), np.float32, "w+", shape=shape) if with_error else None
        self.flags = np.memmap(self._scratch(".flg"), np.uint8, "w+", shape=shape)
        self.sky = np.memmap(self._scratch(".sky"), np.float32, "w+", shape=sky_shape) if self.sky_oversample else None

    def _scratch(self, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".{self.out_path.name}.", suffix=suffix, dir=self.out_path.parent)
        os.close(handle)
        self.scratch.append(Path(name))
        return Path(name)

    def write_rows(self, y0: int, image: np.ndarray, error: np.ndarray | None, flags: np.ndarray,
                   sky: np.ndarray | None = None) -> None:
        """Rows ``y0 … y0 + len(image) − 1``, in order (mJy/beam, mJy/beam, uint8; the sky
        model's f·len(image) rows, mJy per sky pixel)."""
        n = min(len(image), self.shape[0] - y0)
        if n <= 0:
            return
        if self.with_error:
            self.error[y0:y0 + n] = error[:n]
        self.flags[y0:y0 + n] = flags[:n]
        if self.sky is not None:
            f = self.sky_oversample
            self.sky[y0 * f:(y0 + n) * f] = sky[:n * f]
        if self.out_path is None:
            self.image[y0:y0 + n] = image[:n]
        else:
            self.stream.write(np.asarray(image[:n], ">f4"))

    def write_blended(self, y0: int, numerator: np.ndarray, weights: np.ndarray, flags: np.ndarray,
                      sky: np.ndarray | None = None) -> None:
        """Rows from window-weighted sums: (planes, rows, ≥ nx) numerator, (rows, ≥ nx)
        weights, and the sky model's (f·rows, ≥ f·nx) sum under the same weights; NaN where
        no tile had data."""
        nx = self.shape[1]
        w = weights[:, :nx]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(w > 0, numerator[:, :, :nx] / w, np.nan).astype(np.float32)
            if sky is not None and self.sky is not None:
                f = self.sky_oversample
                fine_w = np.kron(w, np.ones((f, f)))
                sky = np.where(fine_w > 0, sky[:, :nx * f] / fine_w, np.nan).astype(np.float32)
        self.write_rows(y0, values[0], values[1] if len(values) > 1 else None, flags[:, :nx], sky)

    def finish(self):
        """The Map (in memory) or the written file's path."""
        if self.out_path is None:
            return replace(self.template, data=self.image, noise=self.error, flags=self.flags, sky_model=self.sky,
                           sky_oversample=max(self.sky_oversample, 1))
        self.stream.close()
        if self.with_error:
            self.error.flush()
            header = self.template.wcs.to_header(relax=True)
            header["BUNIT"] = (self.header["BUNIT"], "1 sigma uncertainty of the primary map")
            header["EXTNAME"] = "ERROR"
            fits.append(self.tmp, np.asarray(self.error), header)
        self.flags.flush()
        header = self.template.wcs.to_header(relax=True)
        header["EXTNAME"] = "FLAGS"
        header["COMMENT"] = "quality bits per pixel; see galaxysr.maps FLAG_* and docs/inference.md"
        fits.append(self.tmp, np.asarray(self.flags), header)
        if self.sky is not None:
            self.sky.flush()
            header = sky_model_header(finer_wcs(self.template.wcs, self.sky_oversample), self.sky_oversample)
            header["EXTNAME"] = "SKYMODEL"
            fits.append(self.tmp, np.asarray(self.sky), header)
        self.error = self.flags = self.sky = None  # release the memory maps before deleting their files
        os.replace(self.tmp, self.out_path)
        _apply_umask(self.out_path)
        for path in self.scratch[1:]:
            path.unlink(missing_ok=True)
        return self.out_path

    def abort(self) -> None:
        if self.out_path is None:
            return
        try:
            self.stream.close()
        except Exception:  # the partial files are deleted either way
            pass
        self.error = self.flags = self.sky = None
        for path in self.scratch:
            path.unlink(missing_ok=True)


def _apply_umask(path: Path) -> None:
    """Give a file made by ``tempfile`` (mode 0600) the permissions the user's umask gives
    ordinary new files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def file_sha256(source: str) -> str | None:
    """SHA-256 (hex) of the file ``source`` names, or None if it is not a file (computed
    once per file version: the path, size and modification time key a cache)."""
    path = Path(str(source))
    if not path.is_file():
        return None
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(sources: dict, artifact: ModelArtifact, options: dict) -> str:
    """A digest (64 hex) of what makes an output what it is: the galaxysr version, the
    model's hash, each input's SHA-256 (band → path; a source that is not a file by its
    name) and the output-changing ``options``. Written as ``GSRPROV``; a rerun whose digest
    matches an existing output's has nothing to do."""
    record = {"galaxysr": __version__, "model": artifact.sha256,
              "inputs": {band: file_sha256(src) or str(src) for band, src in sorted(sources.items())},
              "options": {k: options[k] for k in sorted(options)}}
    return digest(record)


def digest(*parts) -> str:
    """SHA-256 (64 hex) of ``parts`` as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def recorded(path: str | os.PathLike, key: str = "GSRPROV") -> str | None:
    """The provenance ``key`` an existing galaxysr output records (a FITS header card, or a
    table's meta), or None (not there, not a galaxysr output, unreadable)."""
    from astropy.table import Table

    path = Path(path)
    try:
        if path.suffix.lower() in (".fits", ".fit", ".fts"):
            with fits.open(path) as hdul:
                return next((h.header[key] for h in hdul if key in h.header), None)
        return Table.read(path).meta.get(key)
    except Exception:  # a file that is not a galaxysr output records nothing
        return None


def outputs_to_make(outputs: list, overwrite: bool = False) -> list[bool]:
    """For each (path or None, provenance key, expected digest): whether it must be made.
    An existing output recording the same digest is up to date; one that does not is
    refused — before any work — unless ``overwrite``, which remakes every output asked for."""
    todo = []
    for path, key, expected in outputs:
        if not path:
            todo.append(False)
        elif overwrite:
            todo.append(True)
        elif Path(path).exists() and recorded(path, key) == expected:
            todo.append(False)
        elif Path(path).exists() and not overwrite:
            raise OutputExistsError(path, "already exists and was not made from these inputs, model and options")
        else:
            todo.append(True)
    return todo


def _image_header(header: fits.Header, shape) -> fits.Header:
    out = fits.Header()
    out["SIMPLE"] = True
    out["BITPIX"] = -32
    out["NAXIS"] = 2
    out["NAXIS1"] = shape[1]
    out["NAXIS2"] = shape[0]
    for card in header.cards:
        if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", ""):
            out.append(card)
        elif card.keyword == "" and card.value:
            out.append(card)
    return out
