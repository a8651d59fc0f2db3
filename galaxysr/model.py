"""The generator: a GalaxyGAN-style UNet (Keras 3 functional API) and its flux scaling.

Encoder levels: strided 4×4 Conv2D → BatchNorm → LeakyReLU. Decoder levels:
Conv2DTranspose → BatchNorm → Dropout (first levels) → LeakyReLU, concatenated with the
encoder level of the same size. Output: Conv2DTranspose → BatchNorm → sigmoid, which
keeps blank sky at zero instead of reproducing noise (Lauritsen et al. 2021).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .instruments import SPIRE_BANDS, TARGET_BAND, get_band


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

    def __post_init__(self):
        for name in (*self.input_bands, self.target_band):
            get_band(name)
        if self.tile % 2**self.depth:
            raise ValueError(f"tile {self.tile} is not a multiple of 2**depth = {2**self.depth}")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        data = dict(data)
        data["input_bands"] = tuple(data["input_bands"])
        data["scaling"] = FluxScaling(**data["scaling"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


#: Initial offset of the output BatchNorm (see build_generator).
OUTPUT_BETA_INIT = -3.0


def build_generator(config: ModelConfig = ModelConfig()):
    """The UNet generator as a `keras.Model` mapping (B, H, W, n_bands) → (B, H, W, 1).

    Batch normalisation is synchronised across replicas, so a batch split over several
    devices normalises exactly like the same batch on one device.
    """
    import keras
    from keras import layers

    def norm(offset: float = 0.0):
        return layers.BatchNormalization(synchronized=True, momentum=0.9,
                                         beta_initializer=keras.initializers.Constant(offset))

    inputs = keras.Input(shape=(None, None, len(config.input_bands)), name="spire")
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
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=f"up{level}_deconv")(x)
        x = norm()(x)
        if i < config.dropout_levels:
            x = layers.Dropout(config.dropout)(x)
        x = layers.LeakyReLU(config.leaky_slope)(x)
        x = layers.Concatenate()([x, skips[level]])
    x = layers.Conv2DTranspose(1, 4, strides=2, padding="same", name="out_deconv")(x)
    # BatchNorm centres its output on beta, so sigmoid(BN) starts at sigmoid(beta); the
    # sky is mostly blank, so start near blank sky (sigmoid(-3) ≈ 1 mJy/beam) rather than at
    # 0.5 (≈ 50 mJy/beam), which Adam would need thousands of steps to walk down from.
    x = norm(offset=OUTPUT_BETA_INIT)(x)
    outputs = layers.Activation("sigmoid", name="scuba2_450")(x)
    return keras.Model(inputs, outputs, name="galaxysr_unet")
