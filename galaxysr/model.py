"""The generator: a GalaxyGAN-style UNet (Keras 3 functional API) and its flux scaling.

Encoder levels: strided 4×4 Conv2D → BatchNorm → LeakyReLU. Decoder levels: a ×2
upsampling convolution (Conv2DTranspose as in GalaxyGAN, or a sub-pixel convolution) →
BatchNorm → Dropout (first levels) → LeakyReLU, concatenated with the encoder level of the
same size. Output: upsampling convolution → BatchNorm → sigmoid, which keeps blank sky at
zero instead of reproducing noise (Lauritsen et al. 2021). The inputs are the SPIRE maps
and, optionally, their noise maps; an optional second head predicts the uncertainty of
the output map.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from .config import refuse_unknown_keys
from .instruments import SPIRE_BANDS, TARGET_BAND, get_band

__all__ = ["FluxScaling", "ModelConfig", "OUTPUT_BETA_INIT", "pixel_shuffle_layer", "build_generator", "build_discriminator"]


@dataclass(frozen=True)
class FluxScaling:
    """Invertible asinh stretch between mJy/beam and the network's [0, 1] range.

    ``y = asinh(S / softening) / asinh(ceiling / softening)``: linear for |S| ≪ softening
    (noise and faint sources keep their relative sizes), logarithmic above (bright sources
    do not dominate the L1 loss), and exactly 1 at ``ceiling``. Inputs may go below 0 and
    above 1; the sigmoid output cannot, so predicted maps saturate at ``ceiling``
    mJy/beam and never go negative.
    """

    softening_mjy: float = 5.0
    ceiling_mjy: float = 500.0

    @property
    def _norm(self) -> float:
        return float(np.arcsinh(self.ceiling_mjy / self.softening_mjy))

    def forward(self, flux_mjy):
        """mJy/beam → normalised (works on NumPy arrays and tensors)."""
        if isinstance(flux_mjy, np.ndarray) or np.isscalar(flux_mjy):
            return np.arcsinh(np.asarray(flux_mjy) / self.softening_mjy) / self._norm
        import tensorflow as tf

        return tf.asinh(flux_mjy / self.softening_mjy) / self._norm

    def inverse(self, y):
        """Normalised → mJy/beam (works on NumPy arrays and tensors)."""
        if isinstance(y, np.ndarray) or np.isscalar(y):
            return self.softening_mjy * np.sinh(np.asarray(y) * self._norm)
        import tensorflow as tf

        return self.softening_mjy * tf.sinh(y * self._norm)

    def error_mjy(self, y: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """1σ error (mJy/beam) of a predicted value ``y`` whose Laplace error scale in
        normalised units is ``scale``: √2 × scale × dS/dy (NumPy)."""
        y = np.asarray(y, np.float64)
        return np.sqrt(2.0) * np.asarray(scale) * self.softening_mjy * self._norm * np.cosh(y * self._norm)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and data geometry of a generator.

    Attributes
    ----------
    input_bands : tuple of str
        SPIRE bands fed as channels, in order (a 250-only model is ``("spire_250",)``).
    target_band : str
        The band the output imitates.
    pixel_arcsec : float
        Output (and input, after reprojection) pixel scale in arcsec. 2″ samples the 7.9″
        target beam with ~4 pixels per FWHM at a quarter of the cost of 1″ pixels.
    tile : int
        Training tile side in pixels (128 px = 4.3′ at 2″, several SPIRE 500 beams).
        The network is fully convolutional: any multiple of 2**depth works at inference.
    depth : int
        Number of stride-2 levels.
    base_filters, max_filter_factor : int
        Filters at level i are ``base_filters * min(2**i, max_filter_factor)``.
    dropout : float
        Dropout rate on the first ``dropout_levels`` decoder levels.
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
    effective_fwhm_arcsec : float or None
        The measured FWHM of the output's point sources (written after training by
        :func:`galaxysr.evaluate.measure_effective_beam`); ``None`` until measured.
    error_calibration : ((float, ...), (float, ...)) or None
        Fluxes (mJy/beam) and factors: the error head's output is multiplied by the factor
        interpolated (in log flux) at the predicted value, so that source errors match
        the scatter of measured around true fluxes on calibration fields
        (:func:`galaxysr.evaluate.calibrate_errors`); ``None`` until measured.
    """

    input_bands: tuple[str, ...] = SPIRE_BANDS
    target_band: str = TARGET_BAND
    pixel_arcsec: float = 2.0
    tile: int = 128
    depth: int = 6
    base_filters: int = 16
    max_filter_factor: int = 8
    dropout: float = 0.5
    dropout_levels: int = 2
    leaky_slope: float = 0.2
    scaling: FluxScaling = field(default_factory=FluxScaling)
    noise_inputs: bool = True
    upsampling: str = "subpixel_head"
    uncertainty_head: bool = True
    effective_fwhm_arcsec: float | None = None
    error_calibration: tuple | None = None

    def error_factor(self, flux_mjy: np.ndarray) -> np.ndarray | float:
        """The calibration factor of the error head at predicted fluxes ``flux_mjy``."""
        if self.error_calibration is None:
            return 1.0
        nodes, factors = (np.asarray(v, float) for v in self.error_calibration)
        return np.interp(np.log(np.clip(flux_mjy, nodes[0], nodes[-1])), np.log(nodes), factors)

    def __post_init__(self):
        for name in (*self.input_bands, self.target_band):
            get_band(name)
        if self.tile % 2**self.depth:
            raise ValueError(f"tile {self.tile} is not a multiple of 2**depth = {2**self.depth}")
        if self.upsampling not in ("transpose", "subpixel", "subpixel_head"):
            raise ValueError(f"upsampling must be 'transpose', 'subpixel' or 'subpixel_head', got {self.upsampling!r}")

    @property
    def n_channels(self) -> int:
        """Input channels: one per band, and one more per band for its noise map."""
        return len(self.input_bands) * (2 if self.noise_inputs else 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """From :meth:`to_dict`'s output. Models written before ``noise_inputs``,
        ``upsampling`` and ``uncertainty_head`` existed had none of them."""
        data = dict(data)
        refuse_unknown_keys(cls, data, "model setting(s)")
        data["input_bands"] = tuple(data["input_bands"])
        data["scaling"] = FluxScaling(**data["scaling"])
        if data.get("error_calibration") is not None:
            data["error_calibration"] = tuple(tuple(float(x) for x in v) for v in data["error_calibration"])
        for name, legacy in (("noise_inputs", False), ("upsampling", "transpose"), ("uncertainty_head", False)):
            data.setdefault(name, legacy)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


#: Initial offset of the output BatchNorm (see build_generator).
OUTPUT_BETA_INIT = -3.0


@lru_cache(maxsize=1)
def pixel_shuffle_layer():
    """The ``PixelShuffle`` layer class, defined (and registered for ``.keras`` loading)
    on first use so that importing this module does not import Keras."""
    import keras

    @keras.saving.register_keras_serializable("galaxysr")
    class PixelShuffle(keras.layers.Layer):
        """Rearranges (H, W, 4C) into (2H, 2W, C): the upsampling step of a sub-pixel
        convolution (Shi et al. 2016)."""

        def call(self, x):
            return keras.ops.depth_to_space(x, 2)

        def compute_output_shape(self, shape):
            h = None if shape[1] is None else 2 * shape[1]
            w = None if shape[2] is None else 2 * shape[2]
            return (shape[0], h, w, shape[3] // 4)

    return PixelShuffle


def build_generator(config: ModelConfig = ModelConfig()):
    """The UNet generator as a `keras.Model` mapping (B, H, W, n_channels) → (B, H, W, 1)
    (or (B, H, W, 2) with the uncertainty head: the map, then its error scale).

    Batch normalisation is synchronised across replicas, so a batch split over several
    devices normalises exactly like the same batch on one device.
    """
    import keras
    from keras import layers

    pixel_shuffle = pixel_shuffle_layer()

    def norm(offset: float = 0.0):
        return layers.BatchNormalization(synchronized=True, momentum=0.9,
                                         beta_initializer=keras.initializers.Constant(offset))

    def up(x, filters: int, name: str, head: bool = False):
        if config.upsampling == "transpose" or (config.upsampling == "subpixel_head" and not head):
            return layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=name)(x)
        x = layers.Conv2D(4 * filters, 3, padding="same", name=name)(x)
        return pixel_shuffle(name=f"{name}_shuffle")(x)

    inputs = keras.Input(shape=(None, None, config.n_channels), name="spire")
    x = inputs
    skips = []
    for level in range(config.depth):
        filters = config.base_filters * min(2**level, config.max_filter_factor)
        x = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"down{level}_conv")(x)
        x = norm()(x)
        x = layers.LeakyReLU(config.leaky_slope)(x)
        skips.append(x)
    for i, level in enumerate(reversed(range(config.depth - 1))):
        filters = config.base_filters * min(2**level, config.max_filter_factor)
        x = up(x, filters, f"up{level}_deconv")
        x = norm()(x)
        if i < config.dropout_levels:
            x = layers.Dropout(config.dropout)(x)
        x = layers.LeakyReLU(config.leaky_slope)(x)
        x = layers.Concatenate()([x, skips[level]])
    features = x
    x = up(features, 1, "out_deconv", head=True)
    # BatchNorm centres its output on beta, so sigmoid(BN) starts at sigmoid(beta); the
    # sky is mostly blank, so start near blank sky (sigmoid(-3) ≈ 1 mJy/beam) rather than at
    # 0.5 (≈ 50 mJy/beam), which Adam would need thousands of steps to walk down from.
    x = norm(offset=OUTPUT_BETA_INIT)(x)
    outputs = layers.Activation("sigmoid", name="scuba2_450")(x)
    if config.uncertainty_head:
        # The error scale, positive, in normalised units; starts small (softplus(-4) ≈ 0.018).
        scale = up(features, 1, "error_deconv", head=True)
        scale = layers.Activation("softplus", name="error_scale")(
            layers.Rescaling(1.0, offset=-4.0, name="error_offset")(scale))
        outputs = layers.Concatenate(name="map_and_error")([outputs, scale])
    return keras.Model(inputs, outputs, name="galaxysr_unet")


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
