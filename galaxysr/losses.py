"""Loss terms of Lauritsen et al. (2021) as `keras.losses.Loss` subclasses.

All losses take ``y_true`` and ``y_pred`` of shape (B, H, W, 1) in the network's
normalised units (:class:`galaxysr.model.FluxScaling`) and return one value per sample.
NaN in ``y_true`` marks pixels with no target data (outside SCUBA-2 coverage); they are
left out of every term. The flux terms undo the scaling and work in mJy/beam (mean,
median) and mJy (aperture), so their weights have physical meaning.

The aperture term finds sources with photutils inside ``tf.py_function`` (on the target,
and for real data also on the generated map), and sums the apertures with TensorFlow ops,
so gradients flow into the generator through the fluxes (positions need none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf
from astropy import units as u

from .instruments import get_band
from .model import FluxScaling

_PACKAGE = "galaxysr"


def _masked(y_true, y_pred):
    """(target with NaN → 0, prediction, valid mask as float), each (B, H, W)."""
    y_true = tf.squeeze(tf.convert_to_tensor(y_true, tf.float32), -1)
    y_pred = tf.squeeze(tf.convert_to_tensor(y_pred, tf.float32), -1)
    valid = tf.math.is_finite(y_true)
    return tf.where(valid, y_true, 0.0), y_pred, tf.cast(valid, tf.float32)


def _masked_mjy(scaling: FluxScaling, y_true, y_pred):
    """(target, prediction) in mJy/beam, zero outside the valid mask, and the mask."""
    t, p, valid = _masked(y_true, y_pred)
    return scaling.inverse(t) * valid, scaling.inverse(p) * valid, valid


def _safe_divide(a, b):
    return tf.math.divide_no_nan(a, b)


class _ScaledLoss(keras.losses.Loss):
    """Base for losses that know the flux scaling; serialises it."""

    def __init__(self, softening_mjy: float = FluxScaling.softening_mjy,
                 ceiling_mjy: float = FluxScaling.ceiling_mjy, name=None, reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scaling = FluxScaling(softening_mjy, ceiling_mjy)

    def get_config(self):
        config = super().get_config()
        config.update(softening_mjy=self.scaling.softening_mjy, ceiling_mjy=self.scaling.ceiling_mjy)
        return config


@keras.saving.register_keras_serializable(_PACKAGE)
class L1Loss(_ScaledLoss):
    """Mean absolute difference over valid pixels, in normalised units."""

    def call(self, y_true, y_pred):
        t, p, valid = _masked(y_true, y_pred)
        return _safe_divide(tf.reduce_sum(tf.abs(t - p) * valid, [1, 2]), tf.reduce_sum(valid, [1, 2]))


@keras.saving.register_keras_serializable(_PACKAGE)
class MeanFluxLoss(_ScaledLoss):
    """|mean target − mean prediction| over valid pixels, in mJy/beam."""

    def call(self, y_true, y_pred):
        t, p, valid = _masked(y_true, y_pred)
        n = tf.reduce_sum(valid, [1, 2])
        diff = tf.reduce_sum((self.scaling.inverse(t) - self.scaling.inverse(p)) * valid, [1, 2])
        return tf.abs(_safe_divide(diff, n))


def _masked_median(values, valid):
    """Per-sample median of ``values`` (B, H, W) over ``valid`` pixels; 0 if none.

    Invalid pixels are sorted to the end (as the largest float) and the middle of the
    valid part is read off, so gradients flow through ``tf.math.top_k``.
    """
    flat = tf.reshape(values, [tf.shape(values)[0], -1])
    flat_valid = tf.reshape(valid, [tf.shape(valid)[0], -1]) > 0
    big = tf.constant(np.finfo(np.float32).max, tf.float32)
    ranked = -tf.math.top_k(-tf.where(flat_valid, flat, big), k=tf.shape(flat)[1], sorted=True).values
    n = tf.reduce_sum(tf.cast(flat_valid, tf.int32), 1)
    lower = tf.gather(ranked, tf.maximum((n - 1) // 2, 0), batch_dims=1)
    upper = tf.gather(ranked, tf.maximum(n // 2, 0), batch_dims=1)
    return tf.where(n > 0, 0.5 * (lower + upper), 0.0)


@keras.saving.register_keras_serializable(_PACKAGE)
class MedianFluxLoss(_ScaledLoss):
    """|median target − median prediction| over valid pixels, in mJy/beam."""

    def call(self, y_true, y_pred):
        t, p, valid = _masked(y_true, y_pred)
        return tf.abs(_masked_median(self.scaling.inverse(t), valid)
                      - _masked_median(self.scaling.inverse(p), valid))


def find_sources(images_mjy: np.ndarray, valid: np.ndarray, threshold_mjy: float, box: int,
                 border: int, max_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima above ``threshold_mjy`` in each image (photutils ``find_peaks``).

    Parameters
    ----------
    images_mjy : ndarray (B, H, W)
        Maps in mJy/beam.
    valid : ndarray (B, H, W)
        1 where the map has data; peaks are only sought there.
    box : int
        Peak-finding box (pixels), about one beam FWHM.
    border : int
        Peaks closer than this to the edge are ignored (their apertures would be cut).
    max_sources : int
        At most this many (the brightest) per image.

    Returns
    -------
    positions : ndarray (B, max_sources, 2) float32
        (x, y) pixel positions, zero-padded.
    present : ndarray (B, max_sources) float32
        1 for real entries, 0 for padding.
    """
    import warnings

    from photutils.detection import find_peaks
    from photutils.utils.exceptions import NoDetectionsWarning

    images_mjy = np.asarray(images_mjy)
    valid = np.asarray(valid) > 0
    batch = images_mjy.shape[0]
    positions = np.zeros((batch, max_sources, 2), np.float32)
    present = np.zeros((batch, max_sources), np.float32)
    for i in range(batch):
        if not valid[i].any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)  # blank tiles are normal
            peaks = find_peaks(np.where(valid[i], images_mjy[i], 0.0), threshold_mjy, box_size=box,
                               mask=~valid[i], border_width=border, n_peaks=max_sources)
        if peaks is None:
            continue
        n = len(peaks)
        positions[i, :n, 0] = peaks["x_peak"]
        positions[i, :n, 1] = peaks["y_peak"]
        present[i, :n] = 1.0
    return positions, present


def disk_kernel(radius_px: float) -> np.ndarray:
    """Circular aperture of radius ``radius_px`` as pixel weights ``clip(r + ½ − d, 0, 1)``:
    a linear approximation of the exact pixel/circle overlap that photutils computes."""
    half = int(np.ceil(radius_px + 0.5))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    return np.clip(radius_px + 0.5 - np.hypot(xx, yy), 0.0, 1.0).astype(np.float32)


def aperture_sums(image, positions, radius_px: float):
    """Sum of ``image`` (B, H, W) in circular apertures centred on the pixels ``positions``
    (B, S, 2) = (x, y), rounded to pixel centres (the loss's positions are photutils peak
    pixels).

    The image is convolved once with the aperture (:func:`disk_kernel`) and read at each
    position: cheap, differentiable in the image, and within 1 % of photutils' exact
    apertures for beam-sized sources (tested). Returns (B, S).
    """
    kernel = tf.constant(disk_kernel(radius_px)[:, :, None, None])
    summed = tf.nn.conv2d(image[..., None], kernel, strides=1, padding="SAME")[..., 0]
    shape = tf.shape(summed)
    x = tf.clip_by_value(tf.cast(tf.round(positions[..., 0]), tf.int32), 0, shape[2] - 1)
    y = tf.clip_by_value(tf.cast(tf.round(positions[..., 1]), tf.int32), 0, shape[1] - 1)
    return tf.gather_nd(summed, tf.stack([y, x], -1), batch_dims=1)


def centroid_kernels(sigma_px: float, radius_px: float) -> np.ndarray:
    """Beam-weighted window moments as a (K, K, 1, 3) conv kernel: the window ``w`` (a
    Gaussian of ``sigma_px`` inside a disk of ``radius_px``), ``w·dx`` and ``w·dy``."""
    disk = disk_kernel(radius_px)
    half = disk.shape[0] // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    window = disk * np.exp(-0.5 * (xx**2 + yy**2) / sigma_px**2)
    return np.stack([window, window * xx, window * yy], -1)[:, :, None, :].astype(np.float32)


def window_moments(image, positions, kernels):
    """Zeroth and first window moments of ``image`` (B, H, W) at the pixels ``positions``
    (B, S, 2) = (x, y): (B, S, 3) = (Σw·I, Σw·I·dx, Σw·I·dy), one convolution for all."""
    moments = tf.nn.conv2d(image[..., None], tf.constant(kernels), strides=1, padding="SAME")
    shape = tf.shape(moments)
    x = tf.clip_by_value(tf.cast(tf.round(positions[..., 0]), tf.int32), 0, shape[2] - 1)
    y = tf.clip_by_value(tf.cast(tf.round(positions[..., 1]), tf.int32), 0, shape[1] - 1)
    return tf.gather_nd(moments, tf.stack([y, x], -1), batch_dims=1)


class _SourceLoss(_ScaledLoss):
    """Base of the terms measured at sources found with photutils (no gradient through
    the positions): on the target, and with ``use_generated`` also on the generated map.

    Parameters
    ----------
    pixel_arcsec : float
        Pixel scale of the maps.
    band : str
        Target band: its beam sets the aperture radius and the peak-finding box.
    radius_fwhm : float
        Aperture (window) radius in beam FWHMs (1.0 holds 94 % of a point source's flux).
    threshold_mjy : float
        Detection threshold (mJy/beam).
    max_sources : int
        Per tile, brightest first.
    use_generated : bool
        Also detect on the generated map (the real-data form of the loss).
    """

    def __init__(self, pixel_arcsec: float = 2.0, band: str = "scuba2_450", radius_fwhm: float = 1.0,
                 threshold_mjy: float = 2.0, max_sources: int = 48, use_generated: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.pixel_arcsec = float(pixel_arcsec)
        self.band = band
        self.radius_fwhm = float(radius_fwhm)
        self.threshold_mjy = float(threshold_mjy)
        self.max_sources = int(max_sources)
        self.use_generated = bool(use_generated)
        pixel = self.pixel_arcsec * u.arcsec
        fwhm_px = get_band(band).fwhm_pixels(pixel)
        self.radius_px = self.radius_fwhm * fwhm_px
        self.box = max(3, int(round(fwhm_px)) | 1)
        self.border = int(np.ceil(self.radius_px))
        self.beam_area_px = get_band(band).beam_area_pixels(pixel)
        self.sigma_px = get_band(band).sigma_pixels(pixel)

    def detect(self, image_mjy, valid):
        """Source positions (B, S, 2) and presence (B, S) from photutils, no gradient."""
        def _find(img, val):
            return find_sources(img.numpy(), val.numpy(), self.threshold_mjy, self.box, self.border,
                                self.max_sources)

        positions, present = tf.py_function(_find, [tf.stop_gradient(image_mjy), valid],
                                            Tout=[tf.float32, tf.float32])
        positions.set_shape([None, self.max_sources, 2])
        present.set_shape([None, self.max_sources])
        return positions, present

    def sources(self, target_mjy, pred_mjy, valid) -> list:
        """[(positions, present)] found on the target [and on the generated map]."""
        found = [self.detect(target_mjy, valid)]
        if self.use_generated:
            found.append(self.detect(pred_mjy, valid))
        return found

    def at_sources(self, found, target_mjy, pred_mjy):
        """The term summed over the source lists ``found`` (each normalised by its count);
        subclasses define ``_term`` for one list."""
        return tf.add_n([self._term(positions, present, target_mjy, pred_mjy) for positions, present in found])

    def call(self, y_true, y_pred):
        target_mjy, pred_mjy, valid = _masked_mjy(self.scaling, y_true, y_pred)
        return self.at_sources(self.sources(target_mjy, pred_mjy, valid), target_mjy, pred_mjy)

    def get_config(self):
        config = super().get_config()
        config.update(pixel_arcsec=self.pixel_arcsec, band=self.band, radius_fwhm=self.radius_fwhm,
                      threshold_mjy=self.threshold_mjy, max_sources=self.max_sources,
                      use_generated=self.use_generated)
        return config


@keras.saving.register_keras_serializable(_PACKAGE)
class ApertureFluxLoss(_SourceLoss):
    """Mean |aperture flux difference| (mJy) at detected sources.

    ``L = (1/N_t) Σ_target |f_t − f_g| [+ (1/N_g) Σ_generated |f_t − f_g|]`` — sources are
    found on the target (simulated data) or on the target and on the generated map (real
    data, ``use_generated=True``), each sum normalised by its own number of sources; a sum
    with no sources contributes 0. Parameters: see :class:`_SourceLoss`.
    """

    def _term(self, positions, present, target_mjy, pred_mjy):
        f_t = aperture_sums(target_mjy, positions, self.radius_px) / self.beam_area_px
        f_g = aperture_sums(pred_mjy, positions, self.radius_px) / self.beam_area_px
        return _safe_divide(tf.reduce_sum(tf.abs(f_t - f_g) * present, 1), tf.reduce_sum(present, 1))


@keras.saving.register_keras_serializable(_PACKAGE)
class PositionLoss(_SourceLoss):
    """Mean distance (arcsec) between the beam-weighted centroids of target and generated
    map around detected sources: an astrometric term.

    Around each source a window ``w`` (the target beam's Gaussian, cut at ``radius_fwhm``)
    gives the centroid ``c = Σ w·I·r / Σ w·I`` of each map; ``L = (1/N) Σ |c_t − c_g|``
    over the same source lists as :class:`ApertureFluxLoss`. A generated source shifted by
    δ moves its windowed centroid by about δ/2, so the term pulls sources onto their true
    positions; pixel L1 alone barely feels sub-beam shifts of faint sources. Sources where
    either map holds less than a quarter of the other's windowed flux are left out: where
    the network has not made the source yet (or made a spurious one) there is no centroid
    to compare, and the flux terms act there instead. Parameters: see :class:`_SourceLoss`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernels = centroid_kernels(self.sigma_px, self.radius_px)

    def _term(self, positions, present, target_mjy, pred_mjy):
        m_t = window_moments(target_mjy, positions, self.kernels)
        m_g = window_moments(pred_mjy, positions, self.kernels)
        both = tf.stop_gradient(tf.cast((m_t[..., 0] > 0.25 * m_g[..., 0]) & (m_g[..., 0] > 0.25 * m_t[..., 0]),
                                        tf.float32)) * present
        c_t = _safe_divide(m_t[..., 1:], m_t[..., :1])
        c_g = _safe_divide(m_g[..., 1:], tf.maximum(m_g[..., :1], 1e-6))
        # sqrt(· + ε²) − ε: a distance with a finite gradient at zero offset.
        eps = 1e-3
        distance = (tf.sqrt(tf.reduce_sum(tf.square(c_t - c_g), -1) + eps**2) - eps) * self.pixel_arcsec
        return _safe_divide(tf.reduce_sum(distance * both, 1), tf.reduce_sum(present, 1))


@dataclass(frozen=True)
class LossConfig:
    """Weights and settings of the combined loss (physical units in the names).

    The L1 term is in normalised units (~0.01–0.05 per pixel); the flux terms in mJy/beam
    and mJy, the position term in arcsec. The weights bring them to comparable sizes at
    the start of training.
    """

    l1: float = 1.0
    mean_flux: float = 0.02
    median_flux: float = 0.02
    aperture_flux: float = 0.01
    position: float = 0.0
    aperture_radius_fwhm: float = 1.0
    detect_threshold_mjy: float = 2.0
    max_sources: int = 48

    def to_dict(self) -> dict:
        return asdict(self)


@keras.saving.register_keras_serializable(_PACKAGE)
class CombinedLoss(_ScaledLoss):
    """Weighted sum of the terms; ``real=True`` uses the two-sided source terms.

    Sources are found once per call and shared by the aperture and position terms.
    """

    TERMS = ("l1", "mean_flux", "median_flux", "aperture_flux", "position")

    def __init__(self, weights: dict | None = None, pixel_arcsec: float = 2.0, band: str = "scuba2_450",
                 real: bool = False, aperture_radius_fwhm: float = 1.0, detect_threshold_mjy: float = 2.0,
                 max_sources: int = 48, **kwargs):
        super().__init__(**kwargs)
        defaults = LossConfig()
        self.weights = {k: float((weights or {}).get(k, getattr(defaults, k))) for k in self.TERMS}
        self.pixel_arcsec, self.band, self.real = float(pixel_arcsec), band, bool(real)
        self.aperture_radius_fwhm = float(aperture_radius_fwhm)
        self.detect_threshold_mjy = float(detect_threshold_mjy)
        self.max_sources = int(max_sources)
        scale = dict(softening_mjy=self.scaling.softening_mjy, ceiling_mjy=self.scaling.ceiling_mjy)
        at_sources = (pixel_arcsec, band, aperture_radius_fwhm, detect_threshold_mjy, max_sources, real)
        self.terms = {
            "l1": L1Loss(**scale), "mean_flux": MeanFluxLoss(**scale), "median_flux": MedianFluxLoss(**scale),
            "aperture_flux": ApertureFluxLoss(*at_sources, **scale), "position": PositionLoss(*at_sources, **scale),
        }

    @classmethod
    def from_configs(cls, loss: LossConfig, scaling: FluxScaling, pixel_arcsec: float, band: str,
                     real: bool) -> "CombinedLoss":
        return cls({k: getattr(loss, k) for k in cls.TERMS}, pixel_arcsec, band, real,
                   loss.aperture_radius_fwhm, loss.detect_threshold_mjy, loss.max_sources,
                   softening_mjy=scaling.softening_mjy, ceiling_mjy=scaling.ceiling_mjy)

    def per_term(self, y_true, y_pred) -> dict:
        """Each term's per-sample values (unweighted), skipping terms of weight 0."""
        active = {k: loss for k, loss in self.terms.items() if self.weights[k] != 0}
        pixel_terms = {k: loss.call(y_true, y_pred) for k, loss in active.items()
                       if not isinstance(loss, _SourceLoss)}
        source_terms = {k: loss for k, loss in active.items() if isinstance(loss, _SourceLoss)}
        if not source_terms:
            return pixel_terms
        target_mjy, pred_mjy, valid = _masked_mjy(self.scaling, y_true, y_pred)
        found = next(iter(source_terms.values())).sources(target_mjy, pred_mjy, valid)
        return {**pixel_terms, **{k: loss.at_sources(found, target_mjy, pred_mjy)
                                  for k, loss in source_terms.items()}}

    def total(self, terms: dict):
        return tf.add_n([self.weights[k] * v for k, v in terms.items()])

    def call(self, y_true, y_pred):
        return self.total(self.per_term(y_true, y_pred))

    def get_config(self):
        config = super().get_config()
        config.update(weights=self.weights, pixel_arcsec=self.pixel_arcsec, band=self.band, real=self.real,
                      aperture_radius_fwhm=self.aperture_radius_fwhm,
                      detect_threshold_mjy=self.detect_threshold_mjy, max_sources=self.max_sources)
        return config
