"""Instrumental noise of a map: the noise map it carries, or an estimate from the map itself.

The network is told the SPIRE noise (``ModelConfig.noise_inputs``), because the same sky
seen through 1 or 8 mJy/beam of noise should not give the same detections. SMAP products
carry it (the ``error`` extension); for a map that does not, :func:`estimate_white_noise`
measures it from the pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import lru_cache

import numpy as np

from .maps import MJY_PER_BEAM, Map

__all__ = ["estimate_white_noise", "with_noise", "fill_gaps"]

#: A discrete Laplacian normalised so white noise passes with unit variance (Σk² = 1).
_HIGH_PASS = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], float) / np.sqrt(20.0)


@lru_cache(maxsize=32)
def _beam_leakage(sigma_px: float, n: int = 256) -> float:
    """Fraction of the variance of beam-smoothed point sources that passes the high-pass
    kernel: Σ|K(k)|²|B(k)|² / Σ|B(k)|² for a Gaussian beam of ``sigma_px`` pixels."""
    k = 2 * np.pi * np.fft.fftfreq(n)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    beam2 = np.exp(-(kx**2 + ky**2) * sigma_px**2)
    kernel = (4 - 2 * np.cos(kx) - 2 * np.cos(ky)) / np.sqrt(20.0)
    return float((kernel**2 * beam2).sum() / beam2.sum())


def estimate_white_noise(m: Map) -> float:
    """White instrumental noise (mJy/beam, 1σ) of a beam-smoothed map, from its pixels.

    Method: a Laplacian high-pass h passes white noise whole but only a fraction f of the
    beam-smoothed sky (f from the beam, :func:`_beam_leakage`: ≈ 0.03 for SPIRE maps on
    their native pixels). With V_h and V the variances of h and of the map, the noise
    variance is (V_h − f V) / (1 − f). Measured on simulated SPIRE maps with 1–8 mJy/beam
    of noise under 6–7 mJy/beam of confusion: within 3 % for Poisson skies, up to 15 % low
    for strongly clustered skies at 1 mJy/beam (clustered power sits at scales the
    high-pass rejects). One value for the whole map: spatially varying depth needs a noise
    map (e.g. the SMAP ``error`` extension).
    """
    m = m.to(MJY_PER_BEAM)
    data = m.data.astype(np.float64)
    valid = np.isfinite(data)
    if valid.sum() < 100:
        raise ValueError(f"{m.source}: too few finite pixels ({valid.sum()}) to estimate the noise; pass a noise map")
    from scipy.ndimage import convolve

    filled = np.where(valid, data - np.mean(data[valid]), 0.0)
    high = convolve(filled, _HIGH_PASS, mode="constant")
    # Only pixels whose whole 3×3 stencil is on data.
    inner = convolve(valid.astype(float), (_HIGH_PASS != 0).astype(float), mode="constant") >= 5 - 1e-6
    inner &= valid
    f = _beam_leakage(m.band.sigma_pixels(m.pixel_scale))
    variance = (np.var(high[inner]) - f * np.var(data[valid])) / (1 - f)
    return float(np.sqrt(max(variance, 0.0)))


def with_noise(m: Map, noise_mjy: float | np.ndarray | None = None) -> tuple[Map, str]:
    """``m`` in mJy/beam with a noise map, and where the noise came from.

    Order: ``noise_mjy`` (a number or an array on the map's grid, mJy/beam); the map's own
    noise map (SMAP ``error`` extension, ``NOISE``/``RMS``/``VARIANCE``); else
    :func:`estimate_white_noise`. The second value says which (for FITS headers).
    """
    m = m.to(MJY_PER_BEAM)
    if noise_mjy is not None:
        noise = np.broadcast_to(np.asarray(noise_mjy, np.float32), m.shape).copy()
        if not np.all(np.isfinite(noise[np.isfinite(m.data)]) & (noise[np.isfinite(m.data)] > 0)):
            raise ValueError(f"{m.source}: the given noise must be positive and finite wherever the map has data")
        return replace(m, noise=noise), "given"
    if m.noise is not None and np.any(np.isfinite(m.noise) & (m.noise > 0)):
        return m, "noise map in the file"
    sigma = estimate_white_noise(m)
    if sigma <= 0:
        raise ValueError(f"{m.source}: the noise estimated from the map is zero (a noise-free map?); pass a noise "
                         "level explicitly")
    return replace(m, noise=np.full(m.shape, sigma, np.float32)), f"estimated from the map: {sigma:.2f} mJy/beam"


def _interpolate(data: np.ndarray, kernel) -> np.ndarray:
    """One pass of ``astropy.convolution.interpolate_replace_nans``. Gaps wider than the
    kernel stay NaN after a pass — by design: :func:`fill_gaps` repeats the pass, and leaves
    what is still beyond a beam from any data NaN — so astropy's advice to widen the kernel
    is not passed on to the user."""
    from astropy.convolution import interpolate_replace_nans

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Increase the kernel size.*")
        return interpolate_replace_nans(data, kernel, boundary="fill", fill_value=np.nan)


def fill_gaps(m: Map, max_distance_fwhm: float = 1.0) -> tuple[Map, np.ndarray]:
    """``m`` with its NaN gaps filled where data lie within ``max_distance_fwhm`` beam
    FWHMs, and a boolean mask of the filled pixels.

    Real level-2 SPIRE maps have scattered NaN pixels along ragged scan edges; a NaN seen
    by the network blanks everything its tiles touch. Gaps are filled by Gaussian-kernel
    interpolation of the neighbours (``astropy.convolution.interpolate_replace_nans``,
    kernel σ = the beam's, so the fill is as smooth as the sky); the noise map, if any, is
    filled the same way and doubled on filled pixels, so the network — and the output's
    error map — know those pixels carry less information. Pixels farther than
    ``max_distance_fwhm`` beams from any data stay NaN.
    """
    from astropy.convolution import Gaussian2DKernel
    from scipy.ndimage import distance_transform_edt

    missing = ~np.isfinite(m.data)
    if not missing.any():
        return m, missing
    sigma = m.band.sigma_pixels(m.pixel_scale)
    kernel = Gaussian2DKernel(sigma, x_size=int(2 * np.ceil(4 * sigma) + 1))
    far = distance_transform_edt(missing) > max_distance_fwhm * m.band.fwhm_pixels(m.pixel_scale)
    data = np.array(m.data, dtype=np.float64)
    for _ in range(4):  # wide gaps fill from their edges inwards
        data = _interpolate(data, kernel)
        if np.isfinite(data[~far]).all():
            break
    data[far] = np.nan
    filled = missing & np.isfinite(data)
    noise = m.noise
    if noise is not None:
        # Filled like the data (from the neighbours, so the result depends only on the
        # pixels around — the same in a survey block as in the whole map), then doubled.
        noise = np.array(noise, dtype=np.float64)
        noise[~np.isfinite(noise) | (noise <= 0)] = np.nan
        for _ in range(4):
            noise = _interpolate(noise, kernel)
            if np.isfinite(noise[~far]).all():
                break
        noise[filled] *= 2.0
        noise[far] = np.nan
        noise = noise.astype(np.float32)
    return replace(m, data=data.astype(np.float32), noise=noise), filled
