"""The one table of instrument facts.

Every beam, pixel scale, wavelength and confusion noise used anywhere in galaxysr
comes from :data:`BANDS`. Sources: Lauritsen et al. 2021 (poster table, after Lim et al.
2020 and Oliver et al. 2012); SPIRE confusion noise from Nguyen et al. 2010 (A&A 518, L5,
5σ iterative clipping); SCUBA-2 450 µm confusion from Gao et al. 2024 (STUDIES, 0.65
mJy/beam) with instrumental depth 0.59 mJy/beam in the deepest part of STUDIES.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u

__all__ = ["FWHM_PER_SIGMA", "Band", "get_band", "band_from_wavelength"]

#: Gaussian FWHM = this factor × sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class Band:
    """Facts about one instrument band.

    Attributes
    ----------
    name : str
        Short key used in file names and configs, e.g. ``"spire_250"``.
    instrument : str
        ``"SPIRE"`` or ``"SCUBA-2"``.
    wavelength : `~astropy.units.Quantity`
        Nominal wavelength (µm).
    fwhm : `~astropy.units.Quantity`
        Gaussian beam FWHM (arcsec).
    pixel : `~astropy.units.Quantity`
        Native map pixel scale (arcsec).
    confusion : `~astropy.units.Quantity`
        1σ confusion noise (mJy/beam).
    instrumental_noise : `~astropy.units.Quantity`
        Default white instrumental noise used by the simulator (mJy/beam): HerMES deep
        levels for SPIRE, the deepest STUDIES level for SCUBA-2 450.
    unit_beam_area : `~astropy.units.Quantity` or None
        Beam solid angle used to convert Jy/beam ⇄ MJy/sr. For SPIRE this is the measured
        beam of the SPIRE Handbook (v3.1, §5.2: 469/831/1804 arcsec²), which is what SPIRE
        extended-source (MJy/sr) products are calibrated with; ``None`` means the Gaussian
        area 2πσ² (used for SCUBA-2).
    filter_names : tuple of str
        Names under which FITS headers (FILTER, DETECTOR, BAND keywords) may call this
        band, e.g. SPIRE's array names PSW/PMW/PLW.
    """

    name: str
    instrument: str
    wavelength: u.Quantity
    fwhm: u.Quantity
    pixel: u.Quantity
    confusion: u.Quantity
    instrumental_noise: u.Quantity
    unit_beam_area: u.Quantity | None = None
    filter_names: tuple[str, ...] = ()

    @property
    def sigma(self) -> u.Quantity:
        """Gaussian beam sigma (arcsec)."""
        return self.fwhm / FWHM_PER_SIGMA

    @property
    def beam_area(self) -> u.Quantity:
        """Solid angle of the Gaussian beam, 2πσ² (sr)."""
        return (2.0 * np.pi * self.sigma**2).to(u.sr)

    def beam_area_pixels(self, pixel: u.Quantity | None = None) -> float:
        """Beam solid angle in pixels of side ``pixel`` (default: native pixels)."""
        pixel = self.pixel if pixel is None else pixel
        return float((2.0 * np.pi * self.sigma**2 / pixel**2).decompose())

    def sigma_pixels(self, pixel: u.Quantity | None = None) -> float:
        """Beam sigma in pixels of side ``pixel`` (default: native pixels)."""
        pixel = self.pixel if pixel is None else pixel
        return float((self.sigma / pixel).decompose())

    def fwhm_pixels(self, pixel: u.Quantity | None = None) -> float:
        """Beam FWHM in pixels of side ``pixel`` (default: native pixels)."""
        pixel = self.pixel if pixel is None else pixel
        return float((self.fwhm / pixel).decompose())

    def kernel(self, pixel: u.Quantity | None = None):
        """The Gaussian beam as an `astropy.convolution.Gaussian2DKernel` (sum-normalised).

        The kernel sums to 1 (its peak is 1 / :meth:`beam_area_pixels`), so convolving a map of point sources in mJy/pixel gives
        mJy/pixel; multiply by :meth:`beam_area_pixels` for mJy/beam.
        """
        from astropy.convolution import Gaussian2DKernel

        return Gaussian2DKernel(self.sigma_pixels(pixel))

    @property
    def brightness_equivalency(self):
        """Equivalency between Jy/beam and Jy/sr for this band (see ``unit_beam_area``)."""
        area = self.beam_area if self.unit_beam_area is None else self.unit_beam_area
        return u.beam_angular_area(area.to(u.sr))


BANDS: dict[str, Band] = {
    "spire_250": Band("spire_250", "SPIRE", 250 * u.um, 18.1 * u.arcsec, 6.0 * u.arcsec,
                      5.8 * u.mJy / u.beam, 2.0 * u.mJy / u.beam, 469.35 * u.arcsec**2,
                      ("PSW", "250", "SPIRE250")),
    "spire_350": Band("spire_350", "SPIRE", 350 * u.um, 24.9 * u.arcsec, 8.33 * u.arcsec,
                      6.3 * u.mJy / u.beam, 2.0 * u.mJy / u.beam, 831.27 * u.arcsec**2,
                      ("PMW", "350", "SPIRE350")),
    "spire_500": Band("spire_500", "SPIRE", 500 * u.um, 36.6 * u.arcsec, 12.0 * u.arcsec,
                      6.8 * u.mJy / u.beam, 2.0 * u.mJy / u.beam, 1804.31 * u.arcsec**2,
                      ("PLW", "500", "SPIRE500")),
    "scuba2_450": Band("scuba2_450", "SCUBA-2", 450 * u.um, 7.9 * u.arcsec, 1.0 * u.arcsec,
                       0.65 * u.mJy / u.beam, 0.59 * u.mJy / u.beam,
                       None, ("450", "450UM", "SCUBA2_450")),
}

#: The input bands, in channel order.
SPIRE_BANDS: tuple[str, ...] = ("spire_250", "spire_350", "spire_500")
#: The target band.
TARGET_BAND: str = "scuba2_450"


def get_band(name: str) -> Band:
    """Look a band up by name, with an error that lists the known names."""
    try:
        return BANDS[name]
    except KeyError:
        raise KeyError(f"unknown band {name!r}; known bands: {', '.join(BANDS)}") from None


def band_from_wavelength(wavelength: u.Quantity, tolerance: u.Quantity = 15 * u.um) -> Band:
    """The band whose nominal wavelength is within ``tolerance`` of ``wavelength``."""
    wavelength = wavelength.to(u.um, equivalencies=u.spectral())
    for band in BANDS.values():
        if abs(band.wavelength - wavelength) <= tolerance:
            return band
    raise KeyError(f"no galaxysr band at {wavelength:.0f}; known: "
                   + ", ".join(f"{b.name} ({b.wavelength:.0f})" for b in BANDS.values()))
