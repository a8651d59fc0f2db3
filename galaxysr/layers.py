"""galaxysr's own Keras layers, registered for ``.keras`` loading under the package name
``galaxysr``: ``PixelShuffle`` and ``SpaceToDepth`` (sub-pixel rearrangements), ``BeamRender``
(the fixed instrument beam), ``SkyActivation`` (the non-negative sky) and ``AsinhScale`` (mJy/beam →
the network's units). Imported on first use (:func:`galaxysr.model.galaxysr_layers`), so that
importing :mod:`galaxysr.model` does not import Keras."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .beam import draw_through_beam, render_kernel

__all__ = ["PixelShuffle", "SpaceToDepth", "BeamRender", "SkyActivation", "AsinhScale", "SKY_Y_MAX"]

#: The sky-model activation works in the asinh domain of the flux scaling (see
#: build_generator); this caps it where sinh would overflow float32 (≈ 10⁷ Jy per pixel).
SKY_Y_MAX = 3.0


@keras.saving.register_keras_serializable("galaxysr")
class PixelShuffle(keras.layers.Layer):
    """Rearranges (H, W, b²C) into (bH, bW, C): the upsampling step of a sub-pixel
    convolution (Shi et al. 2016); ``block`` b, default 2."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        return ops.depth_to_space(x, self.block)

    def compute_output_shape(self, shape):
        b = self.block
        h = None if shape[1] is None else b * shape[1]
        w = None if shape[2] is None else b * shape[2]
        return (shape[0], h, w, shape[3] // b**2)

    def get_config(self):
        return {**super().get_config(), "block": self.block}

@keras.saving.register_keras_serializable("galaxysr")
class SpaceToDepth(keras.layers.Layer):
    """Rearranges (bH, bW, C) into (H, W, b²C): packs a sky model on a grid ``block``
    times finer than the map into the map's grid, so both leave the network as one
    tensor."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        return ops.space_to_depth(x, self.block) if self.block > 1 else x

    def compute_output_shape(self, shape):
        b = self.block
        h = None if shape[1] is None else shape[1] // b
        w = None if shape[2] is None else shape[2] // b
        return (shape[0], h, w, shape[3] * b**2)

    def get_config(self):
        return {**super().get_config(), "block": self.block}

@keras.saving.register_keras_serializable("galaxysr")
class BeamRender(keras.layers.Layer):
    """Draws a sky model (B, fH, fW, 1) in mJy per sky pixel through a fixed,
    peak-normalised Gaussian beam of ``sigma_px`` sky pixels onto the output grid
    (B, H, W, 1) in mJy/beam (``oversample`` f sky pixels per output pixel side).

    Separable: two banded matrix products (rows, then columns; :func:`_band_matrix`),
    each reading f sky pixels per output pixel; the taps are :func:`render_kernel`
    (sampled at the sky pixels' offsets from each output-pixel centre), zero beyond the
    tile. No weights: the beam is the instrument's, not learnt.
    """

    def __init__(self, sigma_px: float, oversample: int = 1, **kwargs):
        super().__init__(trainable=False, **{k: v for k, v in kwargs.items() if k != "trainable"})
        self.sigma_px, self.oversample = float(sigma_px), int(oversample)
        self.taps = render_kernel(self.sigma_px, self.oversample)

    def call(self, sky):
        return draw_through_beam(sky, self.taps, self.oversample)

    def compute_output_shape(self, shape):
        f = self.oversample
        h = None if shape[1] is None else shape[1] // f
        w = None if shape[2] is None else shape[2] // f
        return (shape[0], h, w, 1)

    def get_config(self):
        return {**super().get_config(), "sigma_px": self.sigma_px, "oversample": self.oversample}

@keras.saving.register_keras_serializable("galaxysr")
class SkyActivation(keras.layers.Layer):
    """Non-negative flux (mJy per sky pixel) from a pre-activation z:
    ``softening · sinh(norm · min(softplus(z), y_max))`` — zero for blank sky, and, in
    the asinh domain the inputs are scaled in, as wide a range as the inputs have
    (no ceiling: 2 Jy sources pass)."""

    def __init__(self, softening_mjy: float, norm: float, **kwargs):
        super().__init__(**kwargs)
        self.softening_mjy, self.norm = float(softening_mjy), float(norm)

    def call(self, z):
        y = ops.minimum(ops.softplus(z), SKY_Y_MAX)
        return self.softening_mjy * ops.sinh(self.norm * y)

    def get_config(self):
        return {**super().get_config(), "softening_mjy": self.softening_mjy, "norm": self.norm}

@keras.saving.register_keras_serializable("galaxysr")
class AsinhScale(keras.layers.Layer):
    """mJy/beam → the network's normalised units (:class:`FluxScaling`.forward)."""

    def __init__(self, softening_mjy: float, ceiling_mjy: float, **kwargs):
        super().__init__(**kwargs)
        self.softening_mjy, self.ceiling_mjy = float(softening_mjy), float(ceiling_mjy)

    def call(self, x):
        return ops.arcsinh(x / self.softening_mjy) / float(np.arcsinh(self.ceiling_mjy / self.softening_mjy))

    def get_config(self):
        return {**super().get_config(), "softening_mjy": self.softening_mjy, "ceiling_mjy": self.ceiling_mjy}
