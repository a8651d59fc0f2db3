"""Training data: Fields → aligned (input, target) arrays → `tf.data` tile streams.

*Simulated* fields (``galaxysr simulate``): SPIRE maps reprojected onto the output grid;
the target is the noise-free 450 µm sky rendered from the truth catalogue with the
SCUBA-2 beam, and, for sky-model networks, the same truth drawn through a narrow Gaussian
(:class:`galaxysr.losses.SkyModelLoss`). *Real* pairs: SPIRE maps reprojected onto the SCUBA-2 450 map's footprint
at the output pixel scale; target pixels whose 450 rms exceeds a limit are NaN, and tiles
are only drawn where enough of the target is good. A real folder with SPIRE maps only (the
archive's files as downloaded will do) gives a pair with no target, on the 250 µm map's
footprint, for the re-observation term (:class:`galaxysr.losses.ReobservationLoss`).

Each training sample is a pure function of (seed, sample index) — crop, 90° rotation and
flip come from stateless random ops — so a resumed run sees exactly the samples an
uninterrupted run would, and several workers can split the stream without overlap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
from astropy import units as u

from .cells import CATALOGUE_BANDS, PLANE_OFFSETS, source_planes
from .conventions import InputConventions, condition
from .instruments import get_band
from .maps import Field, MapError, output_grid, read_field, reproject_map, write_field
from .model import ModelConfig
from .noise import with_noise
from .simulate import SIMULATOR_VERSION, SimulationConfig, SkyPrior, column_mjy, render_catalogue, simulate_field

from .config import CALIBRATION_SEEDS, EVALUATION_SEEDS, SIM_DIR, VALIDATION_SEED  # noqa: F401  (re-exported)
from .config import ConfigRecord, option

__all__ = ["DataConfig", "resolve_path", "Pair", "stack_inputs", "prepare_simulated", "prepare_real", "read_real_folder", "tile_origins",
           "sim_field_dir", "SIMULATION_FILE", "cached_field", "ensure_simulated_fields", "load_pairs",
           "TileStream", "turn_offsets"]


@dataclass(frozen=True)
class DataConfig(ConfigRecord):
    """Where training data comes from.

    Attributes
    ----------
    sim_dir : str
        Folder of simulated fields (``field_SEED`` sub-folders); missing fields, and
        fields simulated with other settings, are simulated into it on first use.
    n_sim_fields, sim_area_deg2, first_seed : int, float, int
        Training fields: seeds ``first_seed … first_seed + n_sim_fields - 1``.
    randomise : bool
        Draw every simulated field's sky, noise and calibration from ``prior`` (domain
        randomisation); ``False`` simulates every field with the reference sky.
    prior : SkyPrior
        The distribution of training skies.
    valid_seed : int
        Seed of the held-out validation field.
    n_valid_tiles : int
        Validation tiles drawn from it.
    real_dirs : tuple of str
        Real (or mock-real) pairs: Field folders with SPIRE maps, ``scuba2_450.fits`` and
        ``scuba2_450_rms.fits``; or SPIRE maps alone (a Field folder, or the archive's files as
        downloaded), which only the re-observation term trains on (``LossConfig.reobservation``
        > 0). Empty: simulated data only.
    real_max_rms_mjy : float
        450 µm target pixels noisier than this (mJy/beam) are masked.
    real_min_good_fraction : float
        A real tile is used only if this fraction of its target pixels is good.
    target_min_mjy : float
        Simulated targets (the 7.9″ map and the narrow-kernel sky) hold only the sources at
        least this bright at 450 µm (0: all). Fainter ones are in the SPIRE inputs as
        confusion but cannot be placed. Measured at 2 mJy (3000-step runs): no sharper output,
        catalogue fluxes 1.17 of the truth; so all sources are kept by default.
    bright_sources : int
        Bright galaxies (0.2–3 Jy at 250 µm) added to each training field
        (:attr:`galaxysr.simulate.SimulationConfig.bright_sources`), so the network learns the
        dynamic range of real skies.
    """

    sim_dir: str = option(SIM_DIR, flag="--sim-dir", help="folder of simulated training fields")
    n_sim_fields: int = option(16, flag="--n-sim-fields", help="simulated training fields")
    sim_area_deg2: float = option(0.16, flag="--sim-area", help="area of each simulated field (deg²)")
    first_seed: int = 1
    randomise: bool = option(True, flag="--no-randomise", negate=True,
                             help="simulate every training field with the reference sky instead of drawing from "
                                  "the prior")
    prior: SkyPrior = field(default_factory=SkyPrior)
    valid_seed: int = VALIDATION_SEED
    n_valid_tiles: int = 32
    real_dirs: tuple[str, ...] = ("data/mock_real",)
    real_max_rms_mjy: float = 2.0
    real_min_good_fraction: float = 0.6
    target_min_mjy: float = 0.0
    bright_sources: int = 3

    #: Runs before 0.3 had neither.
    LEGACY: ClassVar[dict] = {"bright_sources": 0, "target_min_mjy": 0.0}
    WHAT: ClassVar[str] = "data setting(s)"

    def simulation(self, seed: int) -> SimulationConfig:
        """The simulation of training or validation field ``seed`` (drawing its sky from
        the prior when ``randomise``: a few seconds)."""
        if self.randomise:
            return self.prior.draw(seed, self.sim_area_deg2, bright_sources=self.bright_sources)
        return SimulationConfig(area_deg2=self.sim_area_deg2, seed=seed, bright_sources=self.bright_sources)

    def recipe(self, seed: int) -> dict:
        """What identifies field ``seed`` on disk (compared before reusing a cached field)."""
        recipe = {"simulator_version": SIMULATOR_VERSION, "seed": seed, "area_deg2": self.sim_area_deg2,
                  "prior": self.prior.to_dict() if self.randomise else None}
        if self.bright_sources:
            recipe["bright_sources"] = self.bright_sources
        return recipe


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists (or is absolute), else the same relative path inside
    the installed package (``data/mock_real`` → ``galaxysr/data/mock_real``), so the shipped
    data is found from any working directory and from a non-editable install."""
    from importlib.resources import files

    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    packaged = Path(str(files("galaxysr"))) / path
    return packaged if packaged.exists() else path


@dataclass
class Pair:
    """Aligned inputs (H, W, C) and target (H, W) in mJy/beam on one output grid, and where the
    truth is known (simulated fields) the truth drawn through a narrow kernel (H, W; mJy) and, for
    a catalogue head, its sources as per-pixel blends (H, W, 2 + 4; :func:`galaxysr.cells.source_planes`
    in :data:`~galaxysr.cells.CATALOGUE_BANDS`). A ``spire_only`` pair (real SPIRE maps without a
    450 µm map) has a target that is NaN everywhere."""

    inputs: np.ndarray
    target: np.ndarray
    wcs: object
    name: str
    sky_target: np.ndarray | None = None
    planes: np.ndarray | None = None
    spire_only: bool = False


def stack_inputs(field: Field, config: ModelConfig, conventions: InputConventions, wcs, shape) -> np.ndarray:
    """The network's input channels for ``field`` on (wcs, shape), (H, W, C) in mJy/beam:
    the SPIRE maps of ``config.input_bands`` under the model's ``conventions``
    (:func:`galaxysr.conventions.condition`: point-source mJy/beam, background removed as
    prediction removes it), then (``config.noise_inputs``) their 1σ noise maps (a map
    without one gets :func:`galaxysr.noise.estimate_white_noise`)."""
    maps = [reproject_map(with_noise(condition(field[b], conventions.background).map)[0], wcs, shape)
            for b in config.input_bands]
    channels = [m.data for m in maps]
    if config.noise_inputs:
        channels += [m.noise for m in maps]
    return np.stack(channels, axis=-1)


def prepare_simulated(field: Field, config: ModelConfig, conventions: InputConventions,
                      sky_fwhm_arcsec: float | None = None, target_min_mjy: float = 0.0) -> Pair:
    """Inputs and noise-free target for a simulated field (truth catalogue required) of the
    sources at least ``target_min_mjy`` bright in the target band; with ``sky_fwhm_arcsec``,
    also those drawn through a Gaussian of that FWHM (peak = flux)."""
    if field.truth is None:
        raise MapError(f"{field.path}: no truth.ecsv, so no noise-free target; simulated fields "
                       "are made by `galaxysr simulate`")
    wcs, shape = output_grid(field[config.input_bands[0]], conventions.pixel)
    inputs = stack_inputs(field, config, conventions, wcs, shape)
    band = get_band(config.target_band)
    truth = field.truth[column_mjy(field.truth, f"flux_{band.name}") >= target_min_mjy]
    target = render_catalogue(truth, band, wcs, shape).astype(np.float32)
    sky = None if sky_fwhm_arcsec is None else \
        render_catalogue(truth, band, wcs, shape, fwhm=sky_fwhm_arcsec * u.arcsec).astype(np.float32)
    # Every truth source, however faint, adds to its cell's blend (the map holds its flux too).
    planes = source_planes(field.truth, wcs, shape, CATALOGUE_BANDS, config.target_band).astype(np.float32) \
        if config.catalogue_head else None
    return Pair(inputs, target, wcs, field.path, sky, planes)


def read_real_folder(folder: str | os.PathLike, bands: tuple[str, ...]) -> Field:
    """A real folder's maps of ``bands``: a Field folder (``spire_250.fits`` …, optionally
    ``scuba2_450.fits`` with its rms), or SPIRE maps as the Herschel archive names them (one FITS
    file per band whose name holds the band's array name or wavelength: PSW/250, PMW/350,
    PLW/500), read in their own units (:func:`galaxysr.conventions.condition` converts them as
    prediction does)."""
    from .maps import FIELD_FILES, read_map

    folder = Path(folder)
    if any((folder / FIELD_FILES[b]).exists() for b in bands):
        return read_field(folder, bands)
    paths = {}
    for band in (b for b in bands if b.startswith("spire")):
        # The array name first: an archive file name's digits (obsid, timestamp) may hold "250".
        tokens = [t.lower() for t in get_band(band).filter_names if t.isalpha()] + [band[-3:]]
        for token in tokens:
            found = sorted(p for p in folder.glob("*.fits*") if token in p.name.lower())
            if found:
                break
        if len(found) != 1:
            raise MapError(f"{folder}: {'no' if not found else len(found)} {band} maps found (a FITS file named "
                           f"{FIELD_FILES[band]}, or one whose name holds {' or '.join(tokens)}); a real "
                           "folder holds one map per SPIRE band and optionally scuba2_450.fits with its rms")
        paths[band] = found[0]
    return Field(maps={b: read_map(p, band=b) for b, p in paths.items()}, path=str(folder))


def prepare_spire_only(field: Field, config: ModelConfig, conventions: InputConventions) -> Pair:
    """Inputs of a real folder without a 450 µm map, on the first input map's footprint at the
    output pixel scale; the target is NaN everywhere (the supervised terms skip it, the
    re-observation term reads the inputs)."""
    wcs, shape = output_grid(field[config.input_bands[0]], conventions.pixel)
    inputs = stack_inputs(field, config, conventions, wcs, shape)
    return Pair(inputs, np.full(shape, np.nan, np.float32), wcs, field.path, spire_only=True)


def prepare_real(field: Field, config: ModelConfig, conventions: InputConventions, max_rms_mjy: float) -> Pair:
    """Inputs and masked 450 µm target for a real pair, on the 450 map's footprint; a folder
    with SPIRE maps only gives a pair without a target (:func:`prepare_spire_only`)."""
    if config.target_band not in field.maps:
        return prepare_spire_only(field, config, conventions)
    target_map = field[config.target_band]
    if target_map.noise is None:
        raise MapError(f"{field.path}: the 450 µm map has no rms map (scuba2_450_rms.fits or a "
                       "NOISE/VARIANCE extension); it is needed to mask poorly covered pixels")
    wcs, shape = output_grid(target_map, conventions.pixel)
    target = reproject_map(target_map, wcs, shape)
    inputs = stack_inputs(field, config, conventions, wcs, shape)
    overlap = np.isfinite(inputs).all(-1) & np.isfinite(target.data)
    if not overlap.any():
        raise MapError(f"{field.path}: the 450 µm map does not overlap the SPIRE maps "
                       f"({', '.join(config.input_bands)}); check the files belong to the same field")
    good = overlap & (target.noise <= max_rms_mjy)
    return Pair(inputs, np.where(good, target.data, np.nan).astype(np.float32), wcs, field.path)


def tile_origins(pairs: list[Pair], tile: int, stride: int, min_good: float) -> np.ndarray:
    """(pair index, y0, x0) of every tile on a ``stride`` grid with enough good target (for a
    pair without a target, enough pixels with every input)."""
    from scipy.ndimage import uniform_filter

    origins = []
    for index, pair in enumerate(pairs):
        h, w = pair.target.shape
        if h < tile or w < tile:
            continue
        good = np.isfinite(pair.inputs).all(-1)
        if not pair.spire_only:
            good &= np.isfinite(pair.target)
        good = good.astype(np.float32)
        # Fraction of good pixels in the tile starting at each pixel.
        frac = uniform_filter(good, size=tile, mode="constant", origin=-(tile // 2))
        for y0 in range(0, h - tile + 1, stride):
            for x0 in range(0, w - tile + 1, stride):
                if frac[y0, x0] >= min_good:
                    origins.append((index, y0, x0))
    return np.asarray(origins, np.int32).reshape(-1, 3)


def sim_field_dir(config: DataConfig, seed: int) -> Path:
    return resolve_path(config.sim_dir) / f"field_{seed:05d}"


SIMULATION_FILE = "simulation.json"


def cached_field(folder: Path, recipe: dict, make) -> Path:
    """``folder`` holding the simulated field of ``recipe``: reused if its
    ``simulation.json`` records the same recipe, else (re)made by ``make()`` → a
    SimulationConfig, simulated, and written with its recipe and full configuration."""
    record = folder / SIMULATION_FILE
    recipe = json.loads(json.dumps(recipe))  # as it reads back from JSON (tuples become lists)
    if (folder / "truth.ecsv").exists() and record.exists():
        try:
            if json.loads(record.read_text()).get("recipe") == recipe:
                return folder
        except json.JSONDecodeError:
            pass
    config = make()
    write_field(simulate_field(config), folder, overwrite=True)
    record.write_text(json.dumps({"recipe": recipe, "simulation": config.to_dict()}, indent=1))
    return folder


def ensure_simulated_fields(config: DataConfig, seeds, progress: bool = True) -> list[Path]:
    """Folders of the simulated fields of ``seeds``, simulating those not on disk yet (or
    made with other settings)."""
    from tqdm import tqdm

    return [cached_field(sim_field_dir(config, s), config.recipe(s), lambda s=s: config.simulation(s))
            for s in tqdm(seeds, desc=f"simulated fields in {config.sim_dir}", unit="field", disable=not progress,
                          leave=False)]


def load_pairs(data: DataConfig, model: ModelConfig, conventions: InputConventions, progress: bool = True,
               sky_fwhm_arcsec: float | None = None):
    """(simulated training pairs, validation pair, real pairs), checked for usability; the
    simulated ones carry the truth drawn at ``sky_fwhm_arcsec`` for sky-model networks."""
    seeds = list(range(data.first_seed, data.first_seed + data.n_sim_fields))
    if data.valid_seed in seeds:
        raise ValueError(f"validation seed {data.valid_seed} is also a training seed; change "
                         "first_seed/n_sim_fields or valid_seed")
    folders = ensure_simulated_fields(data, [*seeds, data.valid_seed], progress)
    bands = (*model.input_bands, model.target_band)
    sky = sky_fwhm_arcsec if model.has_sky else None
    sim = [prepare_simulated(read_field(f, bands), model, conventions, sky, data.target_min_mjy) for f in folders[:-1]]
    valid = prepare_simulated(read_field(folders[-1], bands), model, conventions, sky, data.target_min_mjy)
    real = []
    for folder in data.real_dirs:
        path = resolve_path(folder)
        if not path.is_dir():
            hint = (" make a mock pair with `galaxysr mock-real --out data/mock_real`,"
                    if "mock_real" in str(folder) else "")
            raise MapError(f"{folder}: real-pair folder not found;{hint} or train on simulations only "
                           "with --sim-per-real 0")
        real.append(prepare_real(read_real_folder(path, bands), model, conventions, data.real_max_rms_mjy))
    return sim, valid, real


def turn_offsets(planes, turns, flip):
    """The (dy, dx) offsets (channels 0, 1) of per-pixel source planes that ``tf.image.rot90``
    turned by ``turns`` × 90° and then, with ``flip``, ``tf.reverse(…, [1])`` mirrored: each turn takes
    (dy, dx) to (−dx, dy), the mirror dx to −dx (TensorFlow; :func:`galaxysr.cells.augment_planes`
    is the NumPy original and the test of this)."""
    import tensorflow as tf

    cos = tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), turns % 4)
    sin = tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), turns % 4)
    dy, dx = planes[..., 0], planes[..., 1]
    dy, dx = cos * dy - sin * dx, sin * dy + cos * dx
    dx = tf.where(flip, -dx, dx)
    return tf.concat([tf.stack([dy, dx], -1), planes[..., 2:]], -1)


class TileStream:
    """Deterministic, augmented tiles from aligned pairs as a `tf.data.Dataset` factory.

    Sample ``i`` is a function of (seed, i) only: a tile origin, a 90° rotation and a flip
    drawn with stateless random ops. Inputs are NaN-filled with 0 and scaled with the
    model's :class:`~galaxysr.model.FluxScaling`; the target has two channels: the map
    (scaled; NaN = masked) and the narrow-kernel truth (mJy; NaN where unknown), and for a
    catalogue head six more, the truth's per-pixel blends (:func:`galaxysr.cells.source_planes`;
    NaN where unknown), whose offsets are turned and mirrored with the tile
    (:func:`turn_offsets`).

    For a sky-model network the target is masked within ``margin`` pixels of the tile edge
    (3σ of the target beam): a tile's sky model holds only the sources inside it, and the
    target's edge pixels carry light from sources beyond it, which the network could only
    imitate by painting flux along its edges.
    """

    def __init__(self, pairs: list[Pair], model: ModelConfig, conventions: InputConventions, seed: int,
                 stride: int = 8, min_good: float = 1.0, name: str = "tiles"):
        self.tile = model.tile
        self.scaling = model.scaling
        self.seed = int(seed)
        self.name = name
        self.margin = int(np.ceil(3 * get_band(model.target_band).sigma_pixels(conventions.pixel))) \
            if model.has_sky else 0
        self.n_planes = PLANE_OFFSETS + len(CATALOGUE_BANDS) if model.catalogue_head else 0
        self.origins = tile_origins(pairs, self.tile, stride, min_good)
        if len(self.origins) == 0:
            raise MapError(f"{name}: no usable {self.tile}×{self.tile} tiles in "
                           f"{', '.join(p.name for p in pairs)} (maps smaller than a tile, or too "
                           "little good 450 µm coverage); lower real_max_rms_mjy / "
                           "real_min_good_fraction, or use bigger fields")
        h = max(p.target.shape[0] for p in pairs)
        w = max(p.target.shape[1] for p in pairs)
        c = pairs[0].inputs.shape[-1]
        stack = np.full((len(pairs), h, w, c + 2 + self.n_planes), np.nan, np.float32)
        for i, p in enumerate(pairs):
            stack[i, : p.target.shape[0], : p.target.shape[1], :c] = p.inputs
            stack[i, : p.target.shape[0], : p.target.shape[1], c] = p.target
            if p.sky_target is not None:
                stack[i, : p.target.shape[0], : p.target.shape[1], c + 1] = p.sky_target
            if self.n_planes and p.planes is not None:
                stack[i, : p.target.shape[0], : p.target.shape[1], c + 2:] = p.planes
        self.stack, self.n_inputs = stack, c
        self.max_jitter = stride

    def sample(self, index):
        """(inputs, target) tile number ``index`` (a scalar int64 tensor)."""
        import tensorflow as tf

        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(self.seed, tf.int64), index]), 4)
        pick = tf.random.stateless_uniform([], seeds[0], 0, len(self.origins), dtype=tf.int32)
        origin = tf.gather(tf.constant(self.origins), pick)
        jitter = tf.random.stateless_uniform([2], seeds[1], 0, self.max_jitter, dtype=tf.int32)
        limit = tf.constant([self.stack.shape[1] - self.tile, self.stack.shape[2] - self.tile])
        yx = tf.minimum(origin[1:] + jitter, limit)
        tile = tf.slice(self._stack, [origin[0], yx[0], yx[1], 0], [1, self.tile, self.tile, -1])[0]
        turns = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
        tile = tf.image.rot90(tile, turns)
        flip = tf.random.stateless_uniform([], seeds[3], 0, 2, dtype=tf.int32)
        tile = tf.cond(flip > 0, lambda: tf.reverse(tile, [1]), lambda: tile)
        c = self.n_inputs
        inputs, target, sky = tile[..., :c], tile[..., c:c + 1], tile[..., c + 1:c + 2]
        inputs = self.scaling.forward(tf.where(tf.math.is_finite(inputs), inputs, 0.0))
        targets = [self.scaling.forward(target), sky]
        if self.n_planes:
            targets.append(turn_offsets(tile[..., c + 2:], turns, flip > 0))
        targets = tf.concat(targets, -1)
        if self.margin:
            m, inner = self.margin, self.tile - 2 * self.margin
            keep = tf.pad(tf.ones([inner, inner, 1], tf.bool), [[m, m], [m, m], [0, 0]])
            targets = tf.where(keep, targets, np.float32(np.nan))
        return inputs, targets

    def dataset(self, batch_size: int, start: int = 0, shard: int = 0, num_shards: int = 1):
        """Batches of samples ``start + shard, start + shard + num_shards, …`` (endless)."""
        import tensorflow as tf

        if not hasattr(self, "_stack"):
            self._stack = tf.constant(self.stack)
        ds = tf.data.Dataset.range(start + shard, np.iinfo(np.int64).max, num_shards)
        ds = ds.map(self.sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def take(self, n: int):
        """The first ``n`` samples as NumPy arrays (inputs, target)."""
        batch = next(iter(self.dataset(n)))
        return batch[0].numpy(), batch[1].numpy()
