"""Blind source extraction and photometry on any Map (super-resolved, SPIRE or SCUBA-2).

Peaks above a S/N threshold (photutils ``find_peaks``) seed PSF photometry with a
circular Gaussian of the map's beam (photutils ``PSFPhotometry``); sources closer than
1.5 FWHM are fitted together (``SourceGrouper``), which deblends close pairs. Fluxes are
in mJy (a point source of S mJy peaks at S mJy/beam), errors from the map's noise.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy import units as u
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable, Table

from .maps import MJY_PER_BEAM, Map

#: Largest group of overlapping sources fitted jointly (see _psf_photometry).
MAX_GROUP = 12


def map_rms(m: Map) -> np.ndarray | float:
    """Per-pixel 1σ noise (mJy/beam): the noise map if there is one, else the
    sigma-clipped standard deviation of the map (instrumental + confusion)."""
    if m.noise is not None:
        return m.to(MJY_PER_BEAM).noise
    _, _, std = sigma_clipped_stats(m.to(MJY_PER_BEAM).data, sigma=3.0, maxiters=10)
    return float(std)


def extract_sources(m: Map, snr: float = 4.0, min_flux_mjy: float = 0.0, fwhm: u.Quantity | None = None,
                    deblend: bool = True) -> Table:
    """Sources in ``m`` above ``snr`` × noise (and above ``min_flux_mjy``).

    Parameters
    ----------
    m : Map
        Any brightness unit; converted to mJy/beam.
    snr : float
        Detection threshold in units of the map noise (:func:`map_rms`).
    min_flux_mjy : float
        Absolute floor on the detection threshold (mJy/beam); useful for super-resolved
        maps, whose blank sky is almost noiseless.
    fwhm : Quantity, optional
        Beam FWHM; default the map band's (instrument table).
    deblend : bool
        Fit groups of close sources jointly (PSF photometry); otherwise peak fluxes.

    Returns
    -------
    Table
        ``ra``, ``dec`` (deg), ``x``, ``y`` (pixels), ``flux``, ``flux_err`` (mJy) and
        ``snr``, brightest first; ``meta`` records the band, beam, threshold and noise.
    """
    from photutils.detection import find_peaks
    from photutils.utils.exceptions import NoDetectionsWarning

    m = m.to(MJY_PER_BEAM)
    data = m.data.astype(np.float64)
    valid = np.isfinite(data)
    pixel = m.pixel_scale
    fwhm = m.band.fwhm if fwhm is None else fwhm
    fwhm_px = float((fwhm / pixel).decompose())
    sigma_px = fwhm_px / (2 * np.sqrt(2 * np.log(2)))
    rms = map_rms(m)
    rms_map = np.broadcast_to(np.asarray(rms, np.float64), data.shape)
    threshold = np.maximum(snr * np.nan_to_num(rms_map, nan=np.inf), min_flux_mjy)
    box = max(3, int(round(fwhm_px)) | 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        peaks = find_peaks(np.where(valid, data, 0.0), threshold, box_size=box, mask=~valid,
                           border_width=max(1, int(np.ceil(fwhm_px / 2))))
    table = _empty_table()
    if peaks is not None and len(peaks):
        x = np.asarray(peaks["x_peak"], float)
        y = np.asarray(peaks["y_peak"], float)
        flux = np.asarray(peaks["peak_value"], float)
        err = rms_map[y.astype(int), x.astype(int)]
        if deblend:
            x, y, flux, err = _psf_photometry(data, valid, rms_map, x, y, flux, fwhm_px, sigma_px)
        good = np.isfinite(flux) & (flux > 0.5 * threshold[np.clip(y.round().astype(int), 0, data.shape[0] - 1),
                                                          np.clip(x.round().astype(int), 0, data.shape[1] - 1)])
        x, y, flux, err = x[good], y[good], flux[good], err[good]
        ra, dec = m.wcs.pixel_to_world_values(x, y)
        order = np.argsort(-flux)
        table = Table({"ra": np.asarray(ra)[order] % 360 * u.deg, "dec": np.asarray(dec)[order] * u.deg,
                       "x": x[order], "y": y[order], "flux": flux[order] * u.mJy,
                       "flux_err": err[order] * u.mJy, "snr": (flux / err)[order]})
    table.meta.update({"band": m.band.name, "fwhm_arcsec": fwhm.to_value(u.arcsec), "snr": snr,
                       "min_flux_mjy": min_flux_mjy, "source": m.source,
                       "rms_mjy_beam": float(np.nanmedian(rms_map))})
    return table


def _empty_table() -> Table:
    return Table({"ra": [] * u.deg, "dec": [] * u.deg, "x": np.array([], float), "y": np.array([], float),
                  "flux": [] * u.mJy, "flux_err": [] * u.mJy, "snr": np.array([], float)})


def _psf_photometry(data, valid, rms_map, x, y, flux, fwhm_px, sigma_px):
    """Joint Gaussian-PSF fits of positions and fluxes; fluxes returned as peak mJy."""
    from photutils.psf import CircularGaussianPRF, PSFPhotometry, SourceGrouper

    beam_px = 2 * np.pi * sigma_px**2  # integral of a unit-peak Gaussian, in pixels
    psf = CircularGaussianPRF(fwhm=fwhm_px)
    psf.fwhm.fixed = True
    fit_shape = max(5, int(np.ceil(1.5 * fwhm_px)) | 1)
    photometry = PSFPhotometry(psf, fit_shape, aperture_radius=fwhm_px, xy_bounds=(fwhm_px / 2, fwhm_px / 2))
    error = np.where(np.isfinite(rms_map) & (rms_map > 0), rms_map, np.nanmax(rms_map[np.isfinite(rms_map)]))
    if not np.all(error > 0):
        error = np.full_like(data, 1e-3)
    # Group sources closer than 1.5 FWHM for joint fits (deblending); in crowded or noisy
    # maps such groups can chain into hundreds of sources, whose joint fit is intractable,
    # so sources of groups larger than MAX_GROUP are fitted on their own.
    groups = np.asarray(SourceGrouper(1.5 * fwhm_px)(x, y))
    ids, sizes = np.unique(groups, return_counts=True)
    oversize = np.isin(groups, ids[sizes > MAX_GROUP])
    groups = groups.copy()
    groups[oversize] = groups.max() + 1 + np.arange(oversize.sum())
    init = QTable({"x": x, "y": y, "flux": flux * beam_px, "group_id": groups})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit-quality warnings are reported in the flags column
        result = photometry(np.where(valid, data, 0.0), mask=~valid, error=error, init_params=init)
    fx = np.asarray(result["x_fit"], float)
    fy = np.asarray(result["y_fit"], float)
    fflux = np.asarray(result["flux_fit"], float) / beam_px
    ferr = np.asarray(result["flux_err"], float) / beam_px
    ferr = np.where(np.isfinite(ferr) & (ferr > 0), ferr, rms_map[y.astype(int), x.astype(int)])
    return fx, fy, fflux, ferr
