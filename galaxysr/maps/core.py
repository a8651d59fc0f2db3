"""The Map: a 2-D image with its celestial WCS, band, unit, noise and beam; units; grids."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from ..instruments import Band

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["MJY_PER_BEAM", "MJY_PER_PIXEL", "FLAG_BLENDED", "FLAG_EDGE", "FLAG_FILLED", "FLAG_LOW_COVERAGE", "MapError",
           "Map", "FluxCurve", "FLUX_READINGS", "CURVE_LETTERS", "flux_curve_cards", "flux_curves_from_header", "convert_factor",
           "parse_bunit", "tan_wcs", "finer_wcs", "output_grid", "cutout", "section", "grid_bounds", "extension_header",
           "cells_cube", "residual_extension", "RESIDUAL_CARDS"]

#: The unit every pipeline stage works in.
MJY_PER_BEAM = u.mJy / u.beam
#: The unit of a sky model: flux density per sky-model pixel, before any beam.
MJY_PER_PIXEL = u.mJy / u.pix

#: Quality bits, per pixel in ``Map.flags`` / a ``FLAGS`` extension and per source in a
#: catalogue's ``flags`` column.
FLAG_BLENDED = 1        # source fitted jointly with neighbours within 1.5 beam FWHM
FLAG_EDGE = 2           # within one beam FWHM of the map edge or of a pixel without data
FLAG_FILLED = 4         # an input map had a NaN gap here, filled from data within a beam
FLAG_LOW_COVERAGE = 8   # an input map's noise here is over twice its median

#: How a catalogue can read a map's sources: detected and fitted against its uncertainty
#: plane (``error``, a super-resolved map as it is written) or against its sigma-clipped
#: scatter (``scatter``, a map without one) — the two fit weights give different fluxes —, or
#: at the catalogue head's positions (``head``: forced photometry, positions not fitted). A
#: :class:`FluxCurve` is measured for each.
FLUX_READINGS = ("error", "scatter", "head")
#: The letter each calibration curve a map carries goes by in its header cards (``FC<letter>…``):
#: the flux curve of each reading, and ``head_error``, the factors of the catalogue head's forced
#: flux errors.
CURVE_LETTERS = {"error": "E", "scatter": "S", "head": "H", "head_error": "Z"}


@dataclass(frozen=True)
class FluxCurve:
    """A multiplicative correction of a map's PSF-catalogue fluxes as a function of the
    measured flux: ``factors`` at ``nodes_mjy`` (mJy, strictly increasing), interpolated in
    log flux between them and constant beyond. Measured after training on fields of the
    training distribution (:func:`galaxysr.evaluate.fit_flux_curve`) and applied by
    :func:`galaxysr.catalogue.extract_sources`."""

    nodes_mjy: tuple[float, ...]
    factors: tuple[float, ...]

    def __post_init__(self):
        nodes, factors = np.asarray(self.nodes_mjy, float), np.asarray(self.factors, float)
        if nodes.ndim != 1 or len(nodes) == 0 or nodes.shape != factors.shape:
            raise ValueError(f"a FluxCurve needs as many factors as nodes (at least one), got {len(nodes)} nodes "
                             f"and {len(factors)} factors")
        if not (np.all(nodes > 0) and np.all(np.diff(nodes) > 0) and np.all(np.isfinite(factors))
                and np.all(factors > 0)):
            raise ValueError(f"a FluxCurve needs positive, increasing nodes and positive factors; got nodes "
                             f"{nodes.tolist()} mJy, factors {factors.tolist()}")

    def __call__(self, flux_mjy) -> np.ndarray:
        """The factor at measured fluxes ``flux_mjy``: a Quantity of flux density, or numbers in mJy."""
        nodes = np.asarray(self.nodes_mjy, float)
        flux = np.clip(u.Quantity(flux_mjy, u.mJy).value, nodes[0], nodes[-1])
        return np.interp(np.log(flux), np.log(nodes), np.asarray(self.factors, float))

    def to_dict(self) -> dict:
        return {"nodes_mjy": list(self.nodes_mjy), "factors": list(self.factors)}

    @classmethod
    def from_dict(cls, record: dict) -> "FluxCurve":
        return cls(tuple(float(v) for v in record["nodes_mjy"]), tuple(float(v) for v in record["factors"]))


def flux_curve_cards(curves: dict) -> dict:
    """FITS cards recording ``curves`` (reading → :class:`FluxCurve`): ``FC<R>N`` the number
    of nodes, ``FC<R>S<i>`` and ``FC<R>F<i>`` the nodes (mJy) and factors, R the curve's letter
    (:data:`CURVE_LETTERS`)."""
    cards = {}
    for reading, curve in curves.items():
        r = CURVE_LETTERS[reading]
        cards[f"FC{r}N"] = (len(curve.nodes_mjy), f"catalogue flux calibration nodes ({reading} reading)")
        for i, (node, factor) in enumerate(zip(curve.nodes_mjy, curve.factors), 1):
            cards[f"FC{r}S{i}"] = (round(float(node), 4), "[mJy] measured flux of the node")
            cards[f"FC{r}F{i}"] = (round(float(factor), 5), "flux factor at the node")
    return cards


def flux_curves_from_header(keywords) -> dict:
    """The :class:`FluxCurve` per reading recorded by :func:`flux_curve_cards` (empty if none)."""
    curves = {}
    for reading, r in CURVE_LETTERS.items():
        n = keywords.get(f"FC{r}N")
        if isinstance(n, int) and n > 0:
            curves[reading] = FluxCurve(tuple(float(keywords[f"FC{r}S{i}"]) for i in range(1, n + 1)),
                                        tuple(float(keywords[f"FC{r}F{i}"]) for i in range(1, n + 1)))
    return curves


# Lower-cased spellings seen in survey products that astropy's strict parser rejects.
_UNIT_ALIASES = {
    "jy/beam": u.Jy / u.beam, "jy beam-1": u.Jy / u.beam, "jy/bm": u.Jy / u.beam,
    "jy / beam": u.Jy / u.beam, "jy beam^-1": u.Jy / u.beam,
    "mjy/beam": u.mJy / u.beam, "mjy beam-1": u.mJy / u.beam, "mjy / beam": u.mJy / u.beam,
    # Surface-brightness maps are in MJy/sr by convention; "mjy/sr" never means milli.
    "mjy/sr": u.MJy / u.sr, "mjy sr-1": u.MJy / u.sr, "mjy / sr": u.MJy / u.sr,
}


class MapError(ValueError):
    """A map file or a Map cannot be used as asked; the message says why and what to do."""


@dataclass
class Map:
    """A 2-D sky map.

    Attributes
    ----------
    data : ndarray
        Image, shape (ny, nx), in ``unit``; NaN marks pixels with no data.
    wcs : `~astropy.wcs.WCS`
        Two-axis celestial WCS.
    band : `~galaxysr.instruments.Band`
        The band the map was observed (or simulated, or predicted) in.
    unit : `~astropy.units.UnitBase`
        Brightness unit (mJy/beam, Jy/beam or MJy/sr).
    noise : ndarray or None
        1σ noise per pixel in ``unit``, same shape as ``data``.
    source : str
        Where the map came from (a path), used in messages and output headers.
    fwhm : `~astropy.units.Quantity` or None
        The FWHM of the map's point sources, when it differs from the band's nominal beam
        (a super-resolved map's measured beam); ``None`` means the band's.
    flags : ndarray of uint8 or None
        Per-pixel quality bits (see :mod:`galaxysr.catalogue`: gap-filled input, low input
        coverage), written as a ``FLAGS`` extension.
    meta : dict
        Provenance as FITS keyword → value or (value, comment) (galaxysr version, model
        hash, input files and their SHA-256), written into the header.
    sky_model : ndarray or None
        A super-resolved map's sky model — flux density per sky-model pixel (mJy, before
        the beam) on a grid ``sky_oversample`` times finer than ``data`` (:attr:`sky_wcs`);
        the map is this sky drawn through the beam. Written as a ``SKYMODEL`` extension.
    sky_oversample : int
        Sky-model pixels per map pixel side.
    flux_curves : dict
        Reading (:data:`FLUX_READINGS`) → :class:`FluxCurve`: how the PSF catalogue's fluxes
        of a super-resolved map are calibrated (header ``FC*`` cards); empty for other maps.
    cells : ndarray or None
        A catalogue-head network's raw outputs per cell of ``cell_pixels`` × ``cell_pixels`` map
        pixels, shape (⌈ny / cell_pixels⌉, ⌈nx / cell_pixels⌉, :data:`galaxysr.cells.CELL_CHANNELS`)
        in the order of :data:`galaxysr.cells.CELL_LAYOUT`; cell (i, j) covers map pixels
        cell_pixels·i … cell_pixels·i + cell_pixels − 1 (rows) and alike (columns). Read into a
        catalogue by :func:`galaxysr.catalogue.extract_sources` (``method="head"``); written as a
        ``CELLS`` extension (planes first).
    cell_pixels : int
        Map pixels per cell side.
    mean : ndarray or None
        A catalogue-head network's per-pixel estimate of the sky at the band's resolution (same
        grid and unit as ``data``), when ``data`` is its catalogue drawn through the beam: unbiased
        pixel by pixel (for stacking), its sources wider than the beam (``mean_fwhm``); the plane
        the catalogues are measured on. Written as a ``MEAN`` extension.
    mean_fwhm : Quantity or None
        The measured stacked beam of ``mean`` (the model's calibration), if known.
    residuals : dict
        SPIRE band name → its re-observation residual (:func:`galaxysr.reobserve.residual`): the
        input map minus the catalogue drawn through that band's beam, a Map on the input's own grid
        (mJy/beam) whose ``meta`` holds its χ² cards. Written as ``RESID250`` / ``RESID350`` /
        ``RESID500`` extensions.
    decoded : Table or None
        A catalogue-head network's decoded detections (:func:`galaxysr.catalogue.head_sources`
        at p_real ≥ 0), kept by :func:`galaxysr.inference.draw_head_map` so that a catalogue of
        the same map costs no second fit; made again when the presence calibration it was made
        with (its ``meta["presence"]``) is not the map's. In memory only; a cut-out drops it.
    """

    data: np.ndarray
    wcs: WCS
    band: Band
    unit: u.UnitBase = MJY_PER_BEAM
    noise: np.ndarray | None = None
    source: str = "<memory>"
    fwhm: u.Quantity | None = None
    flags: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    sky_model: np.ndarray | None = None
    sky_oversample: int = 1
    flux_curves: dict = field(default_factory=dict)
    cells: np.ndarray | None = None
    cell_pixels: int = 2
    mean: np.ndarray | None = None
    mean_fwhm: u.Quantity | None = None
    residuals: dict = field(default_factory=dict)
    decoded: Table | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.data.ndim != 2:
            raise MapError(f"{self.source}: a Map needs a 2-D image, got shape {self.data.shape}")
        if self.sky_model is not None:
            expected = tuple(self.sky_oversample * n for n in self.data.shape)
            if self.sky_model.shape != expected:
                raise MapError(f"{self.source}: sky model shape {self.sky_model.shape} is not {self.sky_oversample}× "
                               f"the image shape {self.data.shape}")
        if self.cells is not None:
            expected = tuple(-(-n // self.cell_pixels) for n in self.data.shape)
            if self.cells.ndim != 3 or self.cells.shape[:2] != expected:
                raise MapError(f"{self.source}: cells shape {self.cells.shape} is not (cells along y, along x, "
                               f"planes) = {expected} + (planes,) for {self.cell_pixels}-pixel cells of the image "
                               f"shape {self.data.shape}")
        for name in ("noise", "flags", "mean"):
            extra = getattr(self, name)
            if extra is not None and extra.shape != self.data.shape:
                raise MapError(f"{self.source}: {name} map shape {extra.shape} differs from "
                               f"image shape {self.data.shape}")
        if not self.wcs.has_celestial or self.wcs.naxis != 2:
            raise MapError(f"{self.source}: a Map needs a 2-axis celestial WCS, got {self.wcs.naxis} "
                           "axes; pass wcs.celestial")

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def pixel_scale(self) -> u.Quantity:
        """Mean pixel side (arcsec)."""
        return float(np.mean(proj_plane_pixel_scales(self.wcs))) * u.deg.to(u.arcsec) * u.arcsec

    @property
    def beam_fwhm(self) -> u.Quantity:
        """FWHM of the map's point sources (arcsec): ``fwhm`` if set, else the band's beam."""
        return (self.band.fwhm if self.fwhm is None else self.fwhm).to(u.arcsec)

    @property
    def sky_wcs(self) -> WCS:
        """The WCS of :attr:`sky_model`'s grid (``sky_oversample`` times finer than ``wcs``)."""
        return finer_wcs(self.wcs, self.sky_oversample)

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of pixels holding data."""
        return np.isfinite(self.data)

    def to(self, unit: u.UnitBase | str) -> "Map":
        """This map converted to ``unit`` through the band's beam area."""
        unit = u.Unit(unit)
        factor = convert_factor(self.unit, unit, self.band)
        noise = None if self.noise is None else self.noise * factor
        mean = None if self.mean is None else self.mean * factor
        return replace(self, data=self.data * factor, noise=noise, unit=unit, mean=mean)

    @property
    def error(self) -> np.ndarray | None:
        """The 1σ uncertainty per pixel (same as ``noise``), in ``unit``."""
        return self.noise

    def to_hdu(self, extra: dict | None = None) -> fits.PrimaryHDU:
        """The image as a float32 primary HDU with :meth:`header` (``extra``: more cards)."""
        header = self.header()
        for key, value in (extra or {}).items():
            header[key] = value
        return fits.PrimaryHDU(np.asarray(self.data, dtype=np.float32), header=header)

    def to_hdulist(self, extra: dict | None = None) -> fits.HDUList:
        """:meth:`to_hdu`, plus the noise map as an ``ERROR`` image extension if there is one."""
        hdus = [self.to_hdu(extra)]
        if self.noise is not None:
            hdus.append(fits.ImageHDU(np.asarray(self.noise, dtype=np.float32),
                                      header=extension_header("ERROR", self.wcs, hdus[0].header["BUNIT"])))
        if self.flags is not None:
            hdus.append(fits.ImageHDU(np.asarray(self.flags, dtype=np.uint8), header=extension_header("FLAGS", self.wcs)))
        if self.sky_model is not None:
            hdus.append(fits.ImageHDU(np.asarray(self.sky_model, dtype=np.float32),
                                      header=extension_header("SKYMODEL", self.sky_wcs, oversample=self.sky_oversample)))
        if self.mean is not None:
            hdus.append(fits.ImageHDU(np.asarray(self.mean, dtype=np.float32), header=extension_header(
                "MEAN", self.wcs, hdus[0].header["BUNIT"], fwhm=self.mean_fwhm)))
        if self.cells is not None:
            hdus.append(fits.ImageHDU(cells_cube(self.cells), header=extension_header("CELLS", self.wcs,
                                                                                      oversample=self.cell_pixels)))
        for band, resid in self.residuals.items():
            header = extension_header(residual_extension(band), resid.wcs, hdus[0].header["BUNIT"])
            header["BANDNAME"] = (band, "galaxysr band of the input map")
            for key, value in resid.meta.items():
                header[key] = fitted_card(value)
            hdus.append(fits.ImageHDU(np.asarray(resid.to(self.unit).data, dtype=np.float32), header=header))
        return fits.HDUList(hdus)

    def to_nddata(self):
        """An `astropy.nddata.CCDData` with the WCS, unit, beam keywords and the noise as a
        ``StdDevUncertainty``."""
        from astropy.nddata import CCDData, StdDevUncertainty

        uncertainty = None if self.noise is None else StdDevUncertainty(self.noise)
        return CCDData(self.data, unit=self.unit, wcs=self.wcs, uncertainty=uncertainty, meta=self.header())

    def header(self) -> fits.Header:
        """FITS header: WCS, BUNIT, band, wavelength and beam (BMAJ/BMIN in degrees)."""
        header = self.wcs.to_header(relax=True)
        header["BUNIT"] = (self.unit.to_string("generic").replace(" ", ""), "brightness unit")
        header["BANDNAME"] = (self.band.name, "galaxysr band")
        header["WAVELNTH"] = (self.band.wavelength.to_value(u.um), "[um] nominal wavelength")
        header["TELESCOP"] = "Herschel" if self.band.instrument == "SPIRE" else "JCMT"
        header["INSTRUME"] = self.band.instrument
        note = "[deg] beam FWHM" + (" (measured)" if self.fwhm is not None else "")
        header["BMAJ"] = (self.beam_fwhm.to_value(u.deg), note)
        header["BMIN"] = (self.beam_fwhm.to_value(u.deg), note)
        header["BPA"] = 0.0
        for key, value in (self.meta | flux_curve_cards(self.flux_curves)).items():
            header[key] = fitted_card(value)
        return header


def fitted_card(value):
    """``value`` or ``(value, comment)`` with the comment shortened to fit one 80-character
    card (FITS would truncate it with a ``VerifyWarning``); long string values keep their
    full text (astropy continues them) and drop the comment."""
    if not isinstance(value, tuple) or len(value) != 2:
        return value
    value, comment = value
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    room = 80 - 10 - max(len(text), 20) - 3  # 'KEY     = ' + value + ' / '
    if isinstance(value, str) and len(value) > 68:
        return value
    return (value, comment[:room]) if room > 0 else value


def extension_header(name: str, wcs: WCS, unit: str | None = None, oversample: int = 1,
                     fwhm: u.Quantity | None = None) -> fits.Header:
    """Header of a map's ``ERROR``, ``FLAGS``, ``SKYMODEL`` or ``CELLS`` extension, for every writer (in
    memory and streamed), so that they cannot disagree.

    Parameters
    ----------
    name : str
        ``"ERROR"`` (1σ of the primary image, in ``unit``: its BUNIT), ``"FLAGS"`` (quality bits,
        :data:`FLAG_FILLED` …) or ``"SKYMODEL"`` (mJy per sky pixel, ``oversample`` sky pixels
        per map pixel side), ``"MEAN"`` (a catalogue-head network's per-pixel map, in ``unit``, its
        measured beam ``fwhm`` as BMAJ/BMIN) or ``"CELLS"`` (the catalogue head's raw outputs, one plane per entry of
        :data:`galaxysr.cells.CELL_LAYOUT`, on cells of ``oversample`` map pixels per side).
    wcs : WCS
        The extension's grid: the map's (for ``CELLS`` it is made ``oversample`` times coarser), or
        the finer sky grid for ``SKYMODEL``.
    """
    if name == "CELLS":
        return _cells_header(wcs, oversample)
    header = wcs.to_header(relax=True)
    if name == "ERROR":
        header["BUNIT"] = (unit, "1 sigma uncertainty of the primary image")
    elif name == "MEAN":
        header["BUNIT"] = (unit, "per-pixel estimate of the sky at this band")
        if fwhm is not None:
            header["BMAJ"] = (fwhm.to_value(u.deg), "[deg] measured stacked beam of this plane")
            header["BMIN"] = (fwhm.to_value(u.deg), "[deg] measured stacked beam of this plane")
        header["COMMENT"] = "the network's per-pixel map: unbiased per pixel (stacking), sources wider than the"
        header["COMMENT"] = "beam; the primary image is its catalogue drawn through the beam (docs/inference.md)"
    elif name == "FLAGS":
        header["COMMENT"] = "quality bits per pixel; see galaxysr.maps FLAG_* and docs/inference.md"
    elif name.startswith("RESID"):
        header["BUNIT"] = (unit, "input minus the catalogue re-observed")
        header["COMMENT"] = "re-observation residual on the input map's grid: the SPIRE map minus the catalogue drawn"
        header["COMMENT"] = "through the instrument beam, background removed (galaxysr.reobserve, docs/inference.md)"
    elif name == "SKYMODEL":
        header["BUNIT"] = (MJY_PER_PIXEL.to_string("fits"), "flux per sky pixel, before the beam")
        header["SKYOVER"] = (int(oversample), "sky-model pixels per map pixel side")
        header["COMMENT"] = "the sky model the network drew through the beam to make the primary map"
    else:
        raise ValueError(f"no extension {name!r}; galaxysr maps have ERROR, FLAGS, SKYMODEL, MEAN, CELLS and RESIDnnn")
    header["EXTNAME"] = name
    return header


#: The cards a residual extension carries about its fit (:meth:`galaxysr.reobserve.Residual.cards`),
#: kept in the residual Map's ``meta`` when read back.
RESIDUAL_CARDS = ("CHI2PIX", "NPIXCHI2", "NOISE", "CONFUSN", "MAXSRCSN", "NSRC5SIG")


def residual_extension(band: str) -> str:
    """The name of a band's re-observation residual extension: ``spire_250`` → ``RESID250``."""
    return f"RESID{band[-3:]}"


def cells_cube(cells: np.ndarray) -> np.ndarray:
    """A Map's ``cells`` (cy, cx, planes) as the ``CELLS`` extension's float32 cube (planes, cy, cx)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(cells, np.float32), -1, 0))


def _cells_header(wcs: WCS, cell_pixels: int) -> fits.Header:
    """The ``CELLS`` cube's header: the celestial WCS of the cell grid (cells of ``cell_pixels`` map
    pixels, centred on their pixels' centre) on axes 1–2, the plane names on axis 3."""
    from ..cells import CELL_LAYOUT

    coarse = wcs.deepcopy()
    # Cell j's centre is map pixel f·j + (f − 1)/2 (0-based): CRPIX (1-based) maps accordingly.
    coarse.wcs.crpix = (np.asarray(wcs.wcs.crpix) - 1 - (cell_pixels - 1) / 2) / cell_pixels + 1
    if coarse.wcs.has_cd():
        coarse.wcs.cd = np.asarray(wcs.wcs.cd) * cell_pixels
    else:
        coarse.wcs.cdelt = np.asarray(wcs.wcs.cdelt) * cell_pixels
    header = coarse.to_header(relax=True)
    header["WCSAXES"] = 3
    header["CTYPE3"] = ("CELLPLANE", "catalogue-head output plane (PLANEn)")
    header["CRPIX3"], header["CRVAL3"], header["CDELT3"] = 1.0, 1.0, 1.0
    header["CELLPIX"] = (int(cell_pixels), "map pixels per cell side")
    for k, plane in enumerate(CELL_LAYOUT, 1):
        header[f"PLANE{k}"] = plane
    header["COMMENT"] = "catalogue-head raw outputs per cell; galaxysr.cells.decode_cells reads them"
    header["EXTNAME"] = "CELLS"
    return header


def finer_wcs(wcs: WCS, factor: int) -> WCS:
    """``wcs`` with pixels ``factor`` times smaller on each side, covering the same sky: map
    pixel i (0-based) spans fine pixels factor·i … factor·i + factor − 1."""
    if factor == 1:
        return wcs.deepcopy()
    fine = wcs.deepcopy()
    # 0-based coordinate p on the coarse grid is f·p + (f − 1)/2 on the fine one.
    fine.wcs.crpix = [factor * (c - 1) + (factor - 1) / 2 + 1 for c in wcs.wcs.crpix]
    if fine.wcs.has_cd():
        fine.wcs.cd = wcs.wcs.cd / factor
    else:
        fine.wcs.cdelt = np.asarray(wcs.wcs.cdelt) / factor
    if wcs.pixel_shape is not None:
        fine.pixel_shape = tuple(factor * n for n in wcs.pixel_shape)
    return fine


def convert_factor(from_unit: u.UnitBase, to_unit: u.UnitBase, band: Band) -> float:
    """Multiplicative factor from ``from_unit`` to ``to_unit`` for maps of ``band``.

    Raises `MapError` for units that are not brightness units (e.g. SCUBA-2 raw pW).
    """
    try:
        return float((1.0 * from_unit).to_value(to_unit, equivalencies=band.brightness_equivalency))
    except u.UnitConversionError:
        raise MapError(f"cannot convert {from_unit} to {to_unit}: galaxysr works with "
                       "calibrated maps in mJy/beam, Jy/beam or MJy/sr") from None


def parse_bunit(bunit: str, source: str = "<header>") -> u.UnitBase:
    """Parse a FITS BUNIT string into a brightness unit (Jy/beam-like or Jy/sr-like)."""
    text = bunit.strip()
    unit = _UNIT_ALIASES.get(text.lower())
    if unit is None:
        for fmt in ("fits", "generic"):
            try:
                unit = u.Unit(text, format=fmt)
                break
            except ValueError:
                continue
    if unit is None:
        raise MapError(f"{source}: BUNIT '{bunit}' is not a unit galaxysr knows; fix the header "
                       "(BUNIT = 'mJy/beam', 'Jy/beam' or 'MJy/sr') or give the unit explicitly")
    per_beam = unit.is_equivalent(u.Jy / u.beam)
    per_sr = unit.is_equivalent(u.Jy / u.sr)
    if not (per_beam or per_sr):
        raise MapError(f"{source}: BUNIT '{bunit}' is not a brightness unit (need Jy/beam-like or "
                       "MJy/sr-like); calibrate the map to mJy/beam first")
    return unit


def tan_wcs(center: SkyCoord, pixel: u.Quantity, shape: tuple[int, int]) -> WCS:
    """A gnomonic (TAN) RA/Dec WCS of ``shape`` (ny, nx) centred on ``center``.

    North is up and east left (CDELT1 < 0), as on the sky.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    icrs = center.icrs
    wcs.wcs.crval = [icrs.ra.deg, icrs.dec.deg]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    scale = pixel.to_value(u.deg)
    wcs.wcs.cdelt = [-scale, scale]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs


def output_grid(m: Map, pixel: u.Quantity, multiple: int = 1):
    """TAN grid at ``pixel`` covering ``m``'s footprint, same centre, sides a multiple of
    ``multiple``. Returns (wcs, shape)."""
    ny, nx = m.shape
    centre = m.wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
    scale = float(np.mean(proj_plane_pixel_scales(m.wcs))) * u.deg
    # The 1e-6 keeps float round-off (180.0000001 pixels) from adding a row off the map.
    side = [int(np.ceil(float((n * scale / pixel).decompose()) / multiple - 1e-6)) * multiple for n in (ny, nx)]
    return tan_wcs(centre, pixel, tuple(side)), tuple(side)


def grid_bounds(rows: tuple[int, int], cols: tuple[int, int], finer: int = 1, cell: int = 1,
                source: str = "<map>") -> tuple[int, int, int, int]:
    """Where map rows [y0, y1) and columns [x0, x1) fall on a plane ``finer`` times finer (the sky
    model) or of ``cell``-pixel cells (the catalogue head's; the section must start on a cell
    border, and the last cell may reach past it): (row start, row stop, column start, column stop)."""
    (y0, y1), (x0, x1) = rows, cols
    if y0 % cell or x0 % cell:
        raise ValueError(f"{source}: a section of a map with {cell}-pixel cells must start on a cell border, got "
                         f"pixel ({y0}, {x0})")
    return finer * y0 // cell, -(-finer * y1 // cell), finer * x0 // cell, -(-finer * x1 // cell)


def section(m: Map, rows: tuple[int, int], cols: tuple[int, int]) -> Map:
    """Rows [y0, y1) and columns [x0, x1) of ``m`` with every plane cut alike — the sky model on its
    finer grid, the cells on their coarser one (the section must then start on a cell border) — and
    the WCS moved with it. Views of ``m``'s arrays, not copies; the residuals (on other grids) and
    the decoded detections are dropped. A file's section, read alone: :func:`galaxysr.maps.read_map_section`."""
    (y0, y1), (x0, x1) = rows, cols
    if not (0 <= y0 < y1 <= m.shape[0] and 0 <= x0 < x1 <= m.shape[1]):
        raise ValueError(f"{m.source}: section rows {y0}:{y1}, columns {x0}:{x1} is not inside its "
                         f"{m.shape[0]} × {m.shape[1]} pixels")

    def cut(plane, finer: int = 1, cell: int = 1):
        if plane is None:
            return None
        a, b, c, d = grid_bounds(rows, cols, finer, cell, m.source)
        return plane[a:b, c:d]

    return replace(m, data=m.data[y0:y1, x0:x1], wcs=m.wcs[y0:y1, x0:x1], noise=cut(m.noise), flags=cut(m.flags),
                   mean=cut(m.mean), sky_model=cut(m.sky_model, finer=m.sky_oversample),
                   cells=cut(m.cells, cell=m.cell_pixels), residuals={}, decoded=None)


def cutout(m: Map, position: SkyCoord, size: u.Quantity | tuple[int, int]) -> Map:
    """A cut-out of ``m`` centred on ``position``: every per-pixel plane (data, noise,
    flags, and the sky model on its finer grid, pixel for pixel aligned with the image).
    Parts off the map are NaN, and flagged ``FLAG_EDGE`` in ``flags``."""
    cut = Cutout2D(m.data, position, size, wcs=m.wcs, mode="partial", fill_value=np.nan, copy=True)

    def same_cut(plane: np.ndarray | None, fill, factor: int = 1) -> np.ndarray | None:
        # The overlap Cutout2D found, scaled to the plane's grid (the sky model's is finer).
        if plane is None:
            return None
        out = np.full(tuple(factor * n for n in cut.shape), fill, dtype=plane.dtype)
        scaled = [tuple(slice(factor * s.start, factor * s.stop) for s in sl)
                  for sl in (cut.slices_cutout, cut.slices_original)]
        out[scaled[0]] = plane[scaled[1]]
        return out

    # The cells are dropped: a cut-out's pixel origin need not fall on a cell border.
    return replace(m, data=cut.data, wcs=cut.wcs, noise=same_cut(m.noise, np.nan),
                   flags=same_cut(m.flags, FLAG_EDGE), sky_model=same_cut(m.sky_model, np.nan, m.sky_oversample),
                   cells=None, mean=same_cut(m.mean, np.nan), decoded=None)


