"""What an astronomer could do without the network, on the same grid as its output.

(a) The SPIRE 250 µm map as it is (its own 18.1″ beam), fluxes scaled by the mean
450/250 colour of the population; (b) Richardson–Lucy and (c) Wiener deconvolution of
the 250 µm map towards the SCUBA-2 beam (scikit-image); (d) the noise-free 450 µm truth
convolved with the SCUBA-2 beam — the upper bound. All return Maps in 450 µm-like
mJy/beam that :mod:`galaxysr.catalogue` extracts exactly like the network's output.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from astropy import units as u
from astropy.convolution import Gaussian2DKernel

from .instruments import BANDS, TARGET_BAND, Band
from .maps import MJY_PER_BEAM, Map, reproject_map
from .simulate import render_catalogue
from .sky import SkyModel, draw_galaxies

__all__ = ["mean_colour", "native_250", "richardson_lucy", "wiener", "truth_convolved"]


def mean_colour(sky: SkyModel = SkyModel(), band_from: str = "spire_250", band_to: str = TARGET_BAND,
                min_flux_mjy: float = 10.0, seed: int = 12345) -> float:
    """Median S(band_to)/S(band_from) of simulated galaxies brighter than ``min_flux_mjy``
    in ``band_from`` (a 1 deg² draw of the training population, not the evaluation truth)."""
    cat = draw_galaxies(1 * u.deg**2, np.random.default_rng(seed), sky)
    bright = np.asarray(cat[f"flux_{band_from}"]) > min_flux_mjy
    return float(np.median(np.asarray(cat[f"flux_{band_to}"])[bright] / np.asarray(cat[f"flux_{band_from}"])[bright]))


def native_250(m250: Map, colour: float) -> Map:
    """Baseline (a): the 250 µm map at its own resolution, × the 450/250 colour."""
    m = m250.to(MJY_PER_BEAM)
    return replace(m, data=m.data * colour, noise=None if m.noise is None else m.noise * colour,
                   source=f"{m.source} (native 250 × {colour:.3f})")


def _transfer_kernel(source: Band, target: Band, pixel: u.Quantity) -> np.ndarray:
    """Gaussian K with beam(source) = K ⊗ beam(target), sampled on ``pixel``."""
    sigma = float(np.sqrt(source.sigma**2 - target.sigma**2) / pixel)
    return Gaussian2DKernel(sigma).array


def _deconvolved(m250: Map, wcs, shape, colour: float, method: str, **kwargs) -> Map:
    from skimage import restoration

    source, target = m250.band, BANDS[TARGET_BAND]
    up = reproject_map(m250.to(MJY_PER_BEAM), wcs, shape)
    pixel = up.pixel_scale
    valid = np.isfinite(up.data)
    image = np.where(valid, up.data, 0.0).astype(np.float64)
    kernel = _transfer_kernel(source, target, pixel)
    if method == "richardson_lucy":
        # RL needs a positive image; SPIRE maps are mean-subtracted, so lift and restore.
        offset = -np.min(image) + 1e-3
        result = restoration.richardson_lucy(image + offset, kernel, clip=False, **kwargs) - offset
    else:
        result = restoration.wiener(image, kernel, clip=False, **kwargs)
    # Deconvolution keeps the flux sum; per-beam units of the narrower beam need Ω_t/Ω_s.
    result *= target.beam_area_pixels(pixel) / source.beam_area_pixels(pixel) * colour
    result[~valid] = np.nan
    return Map(result.astype(np.float32), up.wcs, target, MJY_PER_BEAM, source=f"{m250.source} ({method})")


def richardson_lucy(m250: Map, wcs, shape, colour: float, iterations: int = 30) -> Map:
    """Baseline (b): Richardson–Lucy deconvolution of the 250 µm map to the 450 µm beam."""
    return _deconvolved(m250, wcs, shape, colour, "richardson_lucy", num_iter=iterations)


def wiener(m250: Map, wcs, shape, colour: float, balance: float = 0.05) -> Map:
    """Baseline (c): Wiener deconvolution of the 250 µm map to the 450 µm beam."""
    return _deconvolved(m250, wcs, shape, colour, "wiener", balance=balance)


def truth_convolved(truth, wcs, shape) -> Map:
    """Upper bound (d): noise-free 450 µm truth with the SCUBA-2 beam, on (wcs, shape)."""
    band = BANDS[TARGET_BAND]
    return Map(render_catalogue(truth, band, wcs, shape).astype(np.float32), wcs, band, MJY_PER_BEAM,
               source="truth ⊗ SCUBA-2 beam")
