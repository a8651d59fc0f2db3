"""The generator: a GalaxyGAN-style UNet (Keras 3 functional API) and its flux scaling.

Encoder levels: strided 4×4 Conv2D → BatchNorm → LeakyReLU. Decoder levels: a ×2
upsampling convolution (Conv2DTranspose as in GalaxyGAN, or a sub-pixel convolution) →
BatchNorm → Dropout (first levels) → LeakyReLU, concatenated with the encoder level of the
same size. The inputs are the SPIRE maps and, optionally, their noise maps.

Output (``ModelConfig.output = "sky_model"``, the default): the network says *where and how
much* — a non-negative **sky model**, flux density per sky-model pixel (mJy, on a grid
``sky_oversample`` times finer than the output map) — and a fixed, non-trainable layer
(:class:`BeamRender`) draws it through the target band's Gaussian beam from the instrument
table. A source placed in the sky model is therefore exactly the 7.9″ beam with peak =
flux, and no pixel-scale pattern of the network can reach the map: the beam passes 10⁻⁶ of
a 4″-period checkerboard. The legacy output (``"map"``, galaxysr ≤ 0.2) painted the map
itself, pixel by pixel, through a sigmoid. An optional second head predicts the
uncertainty of the output map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar
from functools import lru_cache

import numpy as np

from .beam import draw_through_beam, render_kernel, render_numpy  # noqa: F401  (re-exported)
from .config import UPSAMPLING_METHODS, ConfigRecord, option
from .conventions import InputConventions
from .instruments import SPIRE_BANDS, TARGET_BAND, get_band

__all__ = ["FluxScaling", "ModelConfig", "OUTPUT_BETA_INIT", "SKY_BETA_INIT", "render_kernel", "render_numpy",
           "draw_through_beam",
           "pixel_shuffle_layer", "galaxysr_layers", "build_generator", "build_discriminator"]


@dataclass(frozen=True)
class FluxScaling(ConfigRecord):
    """Invertible asinh stretch between mJy/beam and the network's [0, 1] range.

    ``y = asinh(S / softening) / asinh(ceiling / softening)``: linear for |S| ≪ softening
    (noise and faint sources keep their relative sizes), logarithmic above (bright sources
    do not dominate the L1 loss), and exactly 1 at ``ceiling`` (a normalisation point, not a
    limit: a sky-model network's output has no ceiling). Inputs may go below 0 and above 1;
    the sigmoid output of a legacy ``"map"`` network cannot, so its maps saturate at
    ``ceiling`` mJy/beam.
    """

    softening_mjy: float = 5.0
    ceiling_mjy: float = 500.0

    @property
    def norm(self) -> float:
        """asinh(ceiling / softening), dimensionless: the divisor that maps ``ceiling_mjy`` to 1."""
        return float(np.arcsinh(self.ceiling_mjy / self.softening_mjy))

    def forward(self, flux_mjy):
        """mJy/beam → normalised (works on NumPy arrays and tensors)."""
        if isinstance(flux_mjy, np.ndarray) or np.isscalar(flux_mjy):
            return np.arcsinh(np.asarray(flux_mjy) / self.softening_mjy) / self.norm
        import tensorflow as tf

        return tf.asinh(flux_mjy / self.softening_mjy) / self.norm

    def inverse(self, y):
        """Normalised → mJy/beam (works on NumPy arrays and tensors)."""
        if isinstance(y, np.ndarray) or np.isscalar(y):
            return self.softening_mjy * np.sinh(np.asarray(y) * self.norm)
        import tensorflow as tf

        return self.softening_mjy * tf.sinh(y * self.norm)

    def error_mjy(self, y: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """1σ error (mJy/beam) of a predicted value ``y`` whose Laplace error scale in
        normalised units is ``scale``: √2 × scale × dS/dy (NumPy)."""
        y = np.asarray(y, np.float64)
        return np.sqrt(2.0) * np.asarray(scale) * self.softening_mjy * self.norm * np.cosh(y * self.norm)


#: Settings of experiments that galaxysr 0.4 removed (docs/training.md records how they did),
#: with the value at which they did nothing: a model saved with that value loads as before.
ABANDONED_SETTINGS = {"sky_head": "pixels", "sharpen_power": 1.0, "sharpen_fwhm_arcsec": None,
                      "sharpen_iterations": None}


def _drop_abandoned_experiments(data: dict) -> None:
    """Remove the settings of :data:`ABANDONED_SETTINGS` from a saved model config, or refuse a
    model that used one of those experiments (its network has layers galaxysr no longer has)."""
    for name, inert in ABANDONED_SETTINGS.items():
        if name not in data:
            continue
        value = data.pop(name)
        if inert is not None and value != inert:
            raise ValueError(f"this model was trained with {name}={value!r}, an experiment galaxysr 0.4 removed "
                             "(docs/training.md); load it with galaxysr 0.3, or retrain it with this version")


@dataclass(frozen=True)
class ModelConfig(ConfigRecord):
    """Architecture of a generator (the grid and background of its inputs are its
    :class:`~galaxysr.conventions.InputConventions`).

    Attributes
    ----------
    input_bands : tuple of str
        SPIRE bands fed as channels, in order (a 250-only model is ``("spire_250",)``).
    target_band : str
        The band the output imitates.
    tile : int
        Training tile side in pixels (128 px = 4.3′ at 2″, several SPIRE 500 beams).
        The network is fully convolutional: any multiple of 2**depth works at inference.
    depth : int
        Number of stride-2 levels.
    base_filters, max_filter_factor : int
        Filters at level i are ``base_filters * min(2**i, max_filter_factor)``.
    dropout : float
        Dropout rate on the first ``dropout_levels`` decoder levels. GalaxyGAN used 0.5;
        a sky-model network has to place each source to an arcsecond, and with 0.5 it could
        not even fit eight training tiles' sky (the sky term stayed at the empty sky's value,
        0.019, for 600 steps; 0.012 without dropout), so the default is 0.
    leaky_slope : float
        LeakyReLU negative slope.
    scaling : FluxScaling
        mJy/beam ⇄ network units, for inputs and output.
    noise_inputs : bool
        Feed each band's 1σ instrumental noise map as an extra channel (after the maps),
        so the network knows how deep its input is.
    upsampling : str
        ``"transpose"`` (4×4 Conv2DTranspose, GalaxyGAN), ``"subpixel"`` (3×3 Conv2D to
        4× the channels, then a pixel shuffle; Shi et al. 2016), which has no
        checkerboard pattern, or ``"subpixel_head"``: transposed convolutions inside the
        decoder and sub-pixel ones for the full-resolution output heads, where a
        checkerboard would be seen pixel for pixel (costs little: the heads are thin,
        while sub-pixel convolutions throughout cost +45 % per training step on a CPU).
    uncertainty_head : bool
        Add a second output channel: the predicted scale b of the output's error
        (Laplace, normalised units), trained by :class:`galaxysr.losses.UncertaintyLoss`.
    output : str
        ``"sky_model"``: a non-negative sky model (mJy per sky-model pixel) drawn through
        the fixed target beam (:class:`BeamRender`); ``"map"``: the legacy sigmoid map head
        of galaxysr ≤ 0.2.
    full_resolution_head : bool
        Give the sky-model head a decoder level of its own at the output pixel scale, with
        the input maps as its skip connection (see build_generator).
    catalogue_head : bool
        Add the per-cell catalogue head (:func:`_catalogue_head`; default since 0.5): for every 4″
        cell of the last decoder level, the logit that a source is centred there, its position in
        the cell and log10 fluxes in :data:`galaxysr.cells.CATALOGUE_BANDS` (means and log σ),
        trained by :class:`galaxysr.losses.CatalogueLoss` on the simulated truth. Models saved
        before it existed have none.
    cell_min_flux_mjy : float
        What "a source in this cell" means for the catalogue head: a blend of at least this
        target-band flux (mJy). 2 mJy at 450 µm: ≈ 3σ of the 7.9″ map's confusion and depth.
    sky_oversample : int
        Sky-model pixels per output pixel side (2: a 1″ sky model under a 2″ map, so
        positions are held to 1″ and a source split over neighbouring sky pixels renders
        at most 1 % wider than the beam).
    """

    input_bands: tuple[str, ...] = option(SPIRE_BANDS, flag="--bands", nargs="+", choices=SPIRE_BANDS,
                                          help="input SPIRE bands")
    target_band: str = TARGET_BAND
    tile: int = option(128, flag="--tile", help="tile side (pixels)")
    depth: int = option(6, flag="--depth", help="UNet levels")
    base_filters: int = option(16, flag="--base-filters", help="filters of the first level")
    max_filter_factor: int = 8
    dropout: float = option(0.0, flag="--dropout",
                            help="dropout rate on the first {dropout_levels} decoder levels (GalaxyGAN used 0.5)")
    dropout_levels: int = 2
    leaky_slope: float = 0.2
    scaling: FluxScaling = field(default_factory=FluxScaling)
    noise_inputs: bool = option(True, flag="--no-noise-inputs", negate=True,
                                help="do not feed the SPIRE noise maps to the network")
    upsampling: str = option("subpixel_head", flag="--upsampling", choices=UPSAMPLING_METHODS,
                             help="decoder upsampling: transposed convolutions (GalaxyGAN), sub-pixel convolutions, "
                                  "or sub-pixel for the output heads only")
    uncertainty_head: bool = option(True, flag="--no-uncertainty-head", negate=True, help="no error-map output")
    output: str = "sky_model"
    sky_oversample: int = 2
    full_resolution_head: bool = False
    catalogue_head: bool = option(True, flag="--no-catalogue-head", negate=True,
                                  help="no per-cell probabilistic catalogue head (galaxysr.cells): the map "
                                       "alone, catalogued by PSF fits, as galaxysr 0.4")
    cell_min_flux_mjy: float = 2.0

    def __post_init__(self):
        for name in (*self.input_bands, self.target_band):
            get_band(name)
        if self.tile % 2**self.depth:
            raise ValueError(f"tile {self.tile} is not a multiple of 2**depth = {2**self.depth}")
        if self.upsampling not in UPSAMPLING_METHODS:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING_METHODS)}, got {self.upsampling!r}")
        if self.output not in ("sky_model", "map"):
            raise ValueError(f"output must be 'sky_model' or 'map', got {self.output!r}")
        if self.sky_oversample < 1:
            raise ValueError(f"sky_oversample must be a positive integer, got {self.sky_oversample}")
        if self.catalogue_head and not self.has_sky:
            raise ValueError("the catalogue head needs a sky-model network (output='sky_model')")

    @property
    def has_sky(self) -> bool:
        """Whether the network outputs a sky model (drawn through the beam)."""
        return self.output == "sky_model"

    @property
    def output_channels(self) -> dict:
        """Where each output lives in the network's last axis: ``map`` (normalised map),
        ``error`` (its error scale, with the uncertainty head), ``sky`` (the sky model drawn
        into the map, in mJy per sky pixel, packed ``sky_oversample²`` channels per output
        pixel by space-to-depth) and ``cells`` (the catalogue head's raw outputs, each cell's
        repeated over its 2 × 2 output pixels; layout :data:`galaxysr.cells.CELL_LAYOUT`), as
        slices."""
        out, at = {"map": slice(0, 1)}, 1
        if self.uncertainty_head:
            out["error"], at = slice(at, at + 1), at + 1
        if self.has_sky:
            out["sky"], at = slice(at, at + self.sky_oversample**2), at + self.sky_oversample**2
        if self.catalogue_head:
            from .cells import CELL_CHANNELS

            out["cells"] = slice(at, at + CELL_CHANNELS)
        return out

    @property
    def beam_fwhm_arcsec(self) -> float:
        """FWHM of the target band's beam (arcsec): what a sky-model network draws its map
        at (a legacy map network's measured beam is its artifact's calibration)."""
        return float(get_band(self.target_band).fwhm.to_value("arcsec"))

    @property
    def n_channels(self) -> int:
        """Input channels: one per band, and one more per band for its noise map."""
        return len(self.input_bands) * (2 if self.noise_inputs else 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    #: Models written before these existed had none of them (and painted the map itself).
    LEGACY: ClassVar[dict] = {"noise_inputs": False, "upsampling": "transpose", "uncertainty_head": False,
                              "output": "map", "catalogue_head": False}
    WHAT: ClassVar[str] = "model setting(s)"

    @classmethod
    def _upgrade(cls, data: dict) -> dict:
        _drop_abandoned_experiments(data)
        moved = [k for k in InputConventions.IN_MODEL_SETTINGS if k in data]
        if moved:
            raise ValueError(f"{', '.join(moved)}: input conventions, not model settings; read a saved training "
                             "config with TrainConfig.from_dict (or InputConventions.split_from), which moves them")
        # Before 0.4 calibration was written into the model settings; it is the artifact's
        # Calibration record now (galaxysr.inference.artifact.read_calibration reads it there).
        data.pop("effective_fwhm_arcsec", None)
        data.pop("error_calibration", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


#: Initial offset of the legacy map head's output BatchNorm (see build_generator).
OUTPUT_BETA_INIT = -3.0
#: Initial bias of the sky-model head: softplus(−7) ≈ 0.001, a sky of
#: ≈ 0.02 mJy per 1″ pixel, i.e. a blank map of ≈ 0.4 mJy/beam, not a bright fog.
SKY_BETA_INIT = -7.0


@lru_cache(maxsize=1)
def galaxysr_layers():
    """galaxysr's Keras layers (:mod:`galaxysr.layers`), imported — and registered for
    ``.keras`` loading — on first use so that importing this module does not import Keras:
    ``PixelShuffle``, ``BeamRender``, ``SkyActivation``, ``AsinhScale`` and ``SpaceToDepth``
    (a namespace of classes)."""
    import types

    from . import layers

    return types.SimpleNamespace(PixelShuffle=layers.PixelShuffle, SpaceToDepth=layers.SpaceToDepth,
                                 BeamRender=layers.BeamRender, SkyActivation=layers.SkyActivation,
                                 AsinhScale=layers.AsinhScale)


def pixel_shuffle_layer():
    """The ``PixelShuffle`` layer class (registers every galaxysr layer for loading)."""
    return galaxysr_layers().PixelShuffle


class _Blocks:
    """The generator's building blocks for one ModelConfig (on the grid of its input
    conventions): synchronised BatchNorm, the LeakyReLU, and the upsampling step its
    ``upsampling`` setting asks for."""

    def __init__(self, config: ModelConfig, conventions: InputConventions):
        import keras

        self.config, self.conventions, self.keras, self.layers = config, conventions, keras, keras.layers
        self.custom = galaxysr_layers()

    def norm(self, offset: float = 0.0):
        return self.layers.BatchNormalization(synchronized=True, momentum=0.9,
                                              beta_initializer=self.keras.initializers.Constant(offset))

    def act(self):
        return self.layers.LeakyReLU(self.config.leaky_slope)

    def up(self, x, filters: int, name: str, head: bool = False):
        upsampling = self.config.upsampling
        if upsampling == "transpose" or (upsampling == "subpixel_head" and not head):
            return self.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=name)(x)
        x = self.layers.Conv2D(4 * filters, 3, padding="same", name=name)(x)
        return self.custom.PixelShuffle(name=f"{name}_shuffle")(x)


def _unet(b: _Blocks, inputs):
    """GalaxyGAN's encoder (strided Conv → BatchNorm → LeakyReLU) and decoder (upsampling →
    BatchNorm (+ Dropout) → LeakyReLU, skips concatenated): features at half the output pixels."""
    config, layers = b.config, b.layers
    x, skips = inputs, []
    for level in range(config.depth):
        filters = config.base_filters * min(2**level, config.max_filter_factor)
        x = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"down{level}_conv")(x)
        x = b.act()(b.norm()(x))
        skips.append(x)
    for i, level in enumerate(reversed(range(config.depth - 1))):
        filters = config.base_filters * min(2**level, config.max_filter_factor)
        x = b.norm()(b.up(x, filters, f"up{level}_deconv"))
        if i < config.dropout_levels:
            x = layers.Dropout(config.dropout)(x)
        x = layers.Concatenate()([b.act()(x), skips[level]])
    return x


def _sky_head(b: _Blocks, features, inputs):
    """The sky model and the map drawn from it: ``(map in network units, sky, features)``.

    A sub-pixel convolution from the last decoder level (2 output pixels per feature pixel)
    straight to the sky grid (× sky_oversample more) and a non-negative activation in mJy per
    sky pixel; then the fixed beam draws the map. As in pix2pix's outermost layer there is no
    BatchNorm here: the convolution's bias starts the sky blank (SKY_BETA_INIT), and a BatchNorm
    over the fine grid cost a sixth of a training step on a CPU."""
    from astropy import units as u

    config, layers, custom = b.config, b.layers, b.custom
    f = config.sky_oversample
    block = 2 * f
    if config.full_resolution_head:
        # One more decoder level, at the output pixel scale, with the inputs themselves
        # as its skip: every 2″ pixel gets features of its own, so the head draws compact
        # sources instead of patterns repeated across 4″ feature cells.
        x = b.act()(b.norm()(b.up(features, config.base_filters, "up_full_deconv", head=True)))
        x = layers.Concatenate()([x, inputs])
        x = layers.Conv2D(config.base_filters, 3, padding="same", name="full_conv")(x)
        features = b.act()(b.norm()(x))
        block = f
    scaling = config.scaling
    z = layers.Conv2D(block**2, 3, padding="same", name="sky_conv",
                      bias_initializer=b.keras.initializers.Constant(SKY_BETA_INIT))(features)
    z = custom.SkyActivation(scaling.softening_mjy, scaling.norm, name="sky_model")(z)  # elementwise
    sky = custom.PixelShuffle(block=block, name="sky_shuffle")(z) if block > 1 else z
    sigma = get_band(config.target_band).sigma_pixels(b.conventions.sky_pixel_arcsec(f) * u.arcsec)
    drawn = custom.BeamRender(sigma, f, name="beam")(sky)
    return custom.AsinhScale(scaling.softening_mjy, scaling.ceiling_mjy, name="scuba2_450")(drawn), sky, features


def _map_head(b: _Blocks, features):
    """The legacy map head (galaxysr ≤ 0.2): the map itself, through a sigmoid.

    BatchNorm centres its output on beta, so sigmoid(BN) starts at sigmoid(beta); the sky is
    mostly blank, so start near blank sky (sigmoid(-3) ≈ 1 mJy/beam) rather than at 0.5
    (≈ 50 mJy/beam), which Adam would need thousands of steps to walk down from."""
    x = b.norm(offset=OUTPUT_BETA_INIT)(b.up(features, 1, "out_deconv", head=True))
    return b.layers.Activation("sigmoid", name="scuba2_450")(x)


def _error_head(b: _Blocks, features):
    """The error scale, positive, in normalised units; starts small (softplus(-4) ≈ 0.018)."""
    layers = b.layers
    full = b.config.has_sky and b.config.full_resolution_head
    scale = layers.Conv2D(1, 3, padding="same", name="error_conv")(features) if full else \
        b.up(features, 1, "error_deconv", head=True)
    return layers.Activation("softplus", name="error_scale")(layers.Rescaling(1.0, offset=-4.0,
                                                                                name="error_offset")(scale))


#: Initial bias of the catalogue head's presence logit: p = 0.01, about the fraction of 4″
#: cells that hold a source ≥ 2 mJy at 450 µm (the prior of RetinaNet, Lin et al. 2017), so the
#: first steps do not spend themselves lowering p everywhere.
PRESENCE_BIAS_INIT = float(np.log(0.01 / 0.99))


def _catalogue_head(b: _Blocks, features):
    """Per 4″ cell (the last decoder level's pixels): :data:`galaxysr.cells.CELL_LAYOUT` raw
    outputs — presence logit, offset means and log σ, log10-flux means and log σ — from two 3×3
    convolutions on the decoder's features (receptive field of the whole UNet), then repeated
    over the cell's 2 × 2 output pixels (nearest upsampling) so the head travels in the same
    output tensor, and the same tiles, as the map."""
    from .cells import CELL_CHANNELS

    layers, keras = b.layers, b.keras
    width = 2 * b.config.base_filters
    x = b.act()(layers.Conv2D(width, 3, padding="same", name="cells_conv1")(features))
    x = b.act()(layers.Conv2D(width, 3, padding="same", name="cells_conv2")(x))
    bias = np.zeros(CELL_CHANNELS, np.float32)
    bias[0] = PRESENCE_BIAS_INIT
    x = layers.Conv2D(CELL_CHANNELS, 1, name="cells_out", bias_initializer=keras.initializers.Constant(bias.tolist()))(x)
    return layers.UpSampling2D(2, interpolation="nearest", name="cells")(x)


def build_generator(config: ModelConfig = ModelConfig(), conventions: InputConventions = InputConventions()):
    """The UNet generator as a `keras.Model` mapping (B, H, W, n_channels) → (B, H, W, C) on
    the pixel grid of ``conventions`` (the sky-model head's fixed beam is drawn on it):
    the map (normalised units), then its error scale (with the uncertainty head), then the
    sky model packed by space-to-depth (sky-model output), then the catalogue head's cells
    (``catalogue_head``); see :attr:`ModelConfig.output_channels`.

    Batch normalisation is synchronised across replicas, so a batch split over several
    devices normalises exactly like the same batch on one device.
    """
    b = _Blocks(config, conventions)
    inputs = b.keras.Input(shape=(None, None, config.n_channels), name="spire")
    features = cell_features = _unet(b, inputs)
    if config.has_sky:
        drawn, sky, features = _sky_head(b, features, inputs)
        outputs = [drawn]
    else:
        outputs = [_map_head(b, features)]
    if config.uncertainty_head:
        outputs.append(_error_head(b, features))
    if config.has_sky:
        outputs.append(b.custom.SpaceToDepth(config.sky_oversample, name="sky_packed")(sky))
    if config.catalogue_head:
        outputs.append(_catalogue_head(b, cell_features))
    out = outputs[0] if len(outputs) == 1 else b.layers.Concatenate(name="outputs")(outputs)
    return b.keras.Model(inputs, out, name="galaxysr_unet")


def build_discriminator(config: ModelConfig = ModelConfig(), filters: int = 32, levels: int = 3):
    """The conditional PatchGAN discriminator (pix2pix; GalaxyGAN): the SPIRE inputs and a
    450 µm map (normalised units), concatenated, → (B, H/2**levels, W/2**levels, 1) logits,
    each judging whether one ~30″ patch of the map is a real SCUBA-2 map of that SPIRE sky.
    Used in training only (``LossConfig.adversarial`` > 0); never exported.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(None, None, config.n_channels + 1), name="spire_and_450")
    x = inputs
    for level in range(levels):
        x = layers.Conv2D(filters * 2**level, 4, strides=2, padding="same", name=f"disc{level}_conv")(x)
        if level:
            x = layers.BatchNormalization(synchronized=True, momentum=0.9)(x)
        x = layers.LeakyReLU(config.leaky_slope)(x)
    logits = layers.Conv2D(1, 4, padding="same", name="patch_logits")(x)
    return keras.Model(inputs, logits, name="galaxysr_patchgan")
