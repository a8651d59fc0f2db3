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
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from importlib.resources import files
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from . import __version__
from .instruments import get_band
from .maps import MJY_PER_BEAM, Map, MapError, Resampler, output_grid
from .model import ModelConfig

#: The model shipped with the package.
SHIPPED_MODEL = files("galaxysr") / "data" / "model"


@dataclass
class ModelArtifact:
    """A trained model folder: SavedModel and/or ``.keras`` plus ``config.json``."""

    path: Path
    config: ModelConfig
    meta: dict
    model_file: Path

    @property
    def name(self) -> str:
        """The training run's folder name (e.g. ``shipped`` for ``runs/shipped``)."""
        return Path(self.meta.get("train", {}).get("out_dir", self.path.name)).name

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
        """Callable: normalised tiles (B, H, W, C) float32 → (B, H, W, 1)."""
        import tensorflow as tf

        if self.model_file.is_dir():
            loaded = tf.saved_model.load(str(self.model_file))
            self._keep = loaded  # the concrete function needs its object alive
            return lambda x: loaded.serve(tf.constant(x)).numpy()
        import keras

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
        raise MapError(f"{path}: no such model; pass --model a folder written by train.py "
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
    meta = json.loads(config_path.read_text())
    config = ModelConfig.from_dict(meta["train"]["model"])
    return ModelArtifact(path=folder, config=config, meta=meta, model_file=model_file)


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


def _strip_wcs(wcs, y0: int, shape: tuple[int, int]):
    strip = wcs.deepcopy()
    strip.wcs.crpix[1] -= y0
    strip.pixel_shape = (shape[1], shape[0])
    return strip


def check_inputs(maps: dict[str, Map], config: ModelConfig) -> None:
    """Every band the model needs is there, in the right band, with finite data."""
    for band in config.input_bands:
        if band not in maps:
            raise MapError(f"the model needs the {band} map; pass it (--spire{band[-3:]})")
        if maps[band].band.name != band:
            raise MapError(f"{maps[band].source}: is a {maps[band].band.name} map, passed as {band}")


def super_resolve(maps: dict[str, Map], artifact: ModelArtifact | None = None, overlap: int | None = None,
                  batch_size: int = 16, progress: bool = True, out_path: str | os.PathLike | None = None,
                  overwrite: bool = False, header_extra: dict | None = None) -> Map | Path:
    """Super-resolve SPIRE ``maps`` (band name → Map) to the model's target band.

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

    Returns
    -------
    Map or Path
        450 µm map in mJy/beam on a TAN grid at the model's pixel scale, NaN where the
        inputs had no data.
    """
    from tqdm import tqdm

    artifact = artifact or load_artifact()
    config = artifact.config
    check_inputs(maps, config)
    maps = {b: maps[b].to(MJY_PER_BEAM) for b in config.input_bands}
    reference = maps[config.input_bands[0]]
    pixel = config.pixel_arcsec * u.arcsec
    wcs, shape = output_grid(reference, pixel)
    ny, nx = shape
    tile = config.tile
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be between 0 and the tile size {tile}, got {overlap}")
    stride = tile - overlap
    pad_y, pad_x = max(ny, tile), max(nx, tile)  # maps smaller than a tile are padded, not refused
    ys, xs = tile_starts(pad_y, tile, stride), tile_starts(pad_x, tile, stride)
    window = blend_window(tile)
    scaling = config.scaling
    predict = artifact.predict_fn

    target = get_band(config.target_band)
    header_extra = dict(header_extra or {})
    header_extra.update({"GSRVER": (__version__, "galaxysr version"), "GSRMODEL": (artifact.name, "model"),
                         "GSRHASH": (artifact.sha256, "sha256 of model weights (16 hex)"),
                         "PIXSCALE": (config.pixel_arcsec, "[arcsec] pixel scale"),
                         "GSRBANDS": (",".join(config.input_bands), "input SPIRE bands")})
    for band in config.input_bands:
        header_extra[f"IN{band[-3:]}"] = (Path(maps[band].source).name[:60], f"input {band} map")
    template = Map(np.zeros((1, 1), np.float32), wcs, target, MJY_PER_BEAM, source="galaxysr")

    writer = _RowWriter(template, shape, out_path, overwrite, header_extra)
    # Accumulators for output rows [base, base + 2 tiles): a strip starts less than a tile
    # below the previous one, so rows above the current strip are final and are flushed.
    numerator = np.zeros((2 * tile, pad_x), np.float64)
    weights = np.zeros_like(numerator)
    base = 0
    ceiling_hit = False
    resamplers = {b: Resampler(maps[b]) for b in config.input_bands}
    try:
        for y0 in tqdm(ys, desc="super-resolving", unit="strip", disable=not progress):
            if y0 + tile > base + 2 * tile:
                shift = y0 - base
                writer.write(base, numerator[:shift], weights[:shift])
                numerator, weights = np.roll(numerator, -shift, 0), np.roll(weights, -shift, 0)
                numerator[-shift:], weights[-shift:] = 0.0, 0.0
                base = y0
            strip_wcs = _strip_wcs(wcs, y0, (tile, pad_x))
            stack = np.stack([resamplers[b].onto(strip_wcs, (tile, pad_x)).data for b in config.input_bands], -1)
            valid = np.isfinite(stack).all(-1)
            if not valid.any():
                continue
            ceiling_hit |= bool(np.nanmax(stack[..., 0]) > scaling.ceiling_mjy)
            normalised = scaling.forward(np.where(np.isfinite(stack), stack, 0.0)).astype(np.float32)
            tiles = np.stack([normalised[:, x0:x0 + tile] for x0 in xs])
            predicted = np.concatenate([predict(tiles[i:i + batch_size])[..., 0]
                                        for i in range(0, len(tiles), batch_size)])
            r = y0 - base
            for k, x0 in enumerate(xs):
                w = window * valid[:, x0:x0 + tile]
                numerator[r:r + tile, x0:x0 + tile] += w * scaling.inverse(predicted[k].astype(np.float64))
                weights[r:r + tile, x0:x0 + tile] += w
        writer.write(base, numerator[: pad_y - base], weights[: pad_y - base])
        result = writer.finish()
    except BaseException:
        writer.abort()
        raise
    if ceiling_hit:
        warnings.warn(f"some 250 µm pixels exceed the model's flux ceiling ({scaling.ceiling_mjy:g} mJy/beam); "
                      "predicted fluxes there saturate at the ceiling", stacklevel=2)
    return result


class _RowWriter:
    """Collects finished output rows; streams them to a FITS file or into memory."""

    def __init__(self, template: Map, shape, out_path, overwrite: bool, header_extra: dict):
        self.shape = shape
        self.template = template
        self.out_path = None if out_path is None else Path(out_path)
        if self.out_path is None:
            self.image = np.full(shape, np.nan, np.float32)
            return
        if self.out_path.exists() and not overwrite:
            raise MapError(f"{self.out_path}: already exists; choose another name or pass --overwrite")
        header = template.header()
        header["NAXIS1"], header["NAXIS2"] = shape[1], shape[0]
        for key, value in header_extra.items():
            header[key] = value
        header.add_history("Super-resolved with galaxysr (Lauritsen et al. 2021 method)")
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{self.out_path.name}.", suffix=".part", dir=self.out_path.parent)
        os.close(handle)
        self.tmp = Path(tmp)
        self.stream = fits.StreamingHDU(self.tmp, _image_header(header, shape))

    def write(self, y0: int, numerator: np.ndarray, weights: np.ndarray) -> None:
        rows = numerator[:, : self.shape[1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(weights[:, : self.shape[1]] > 0, rows / weights[:, : self.shape[1]], np.nan)
        values = values[: max(0, self.shape[0] - y0)].astype(np.float32)
        if len(values) == 0:
            return
        if self.out_path is None:
            self.image[y0:y0 + len(values)] = values
        else:
            self.stream.write(values.astype(">f4"))

    def finish(self):
        if self.out_path is None:
            return replace(self.template, data=self.image)
        self.stream.close()
        os.replace(self.tmp, self.out_path)
        return self.out_path

    def abort(self) -> None:
        if self.out_path is not None and getattr(self, "tmp", None) and self.tmp.exists():
            try:
                self.stream.close()
            except Exception:  # the partial file is deleted either way
                pass
            self.tmp.unlink(missing_ok=True)


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
