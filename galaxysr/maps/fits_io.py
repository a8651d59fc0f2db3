"""FITS ⇄ Map, and Maps from what a Python user holds (HDUs, arrays with a WCS, NDData).

Every path into a Map goes through :func:`map_from_parts`, so the checks an astronomer
expects (celestial WCS present, units known, the right band, not all-NaN) happen in one
place, and every error names the source, the problem and the fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from ..errors import refuse_existing
from ..instruments import BANDS, Band, band_from_wavelength, get_band
from ..instruments import SPIRE_BANDS
from .core import (RESIDUAL_CARDS, Map, MapError, flux_curves_from_header, grid_bounds, parse_bunit,
                   residual_extension)

__all__ = ["PROVENANCE_PREFIXES", "read_map", "read_map_section", "map_from_hdul", "map_from_parts", "as_map", "write_map",
           "sibling_band_path"]

#: Header keywords galaxysr writes for provenance, kept in ``Map.meta`` when read back.
PROVENANCE_PREFIXES = ("GSR", "IN2", "IN3", "IN5", "SHA", "NSRC", "FILL", "PIXSCALE", "CAL2", "CAL3", "CAL5", "BKG")

# Header keywords that may carry a wavelength or a filter/array name.
_WAVELENGTH_KEYS = ("WAVELNTH", "WAVELEN", "WAVELN", "WAVELENG", "LAMBDA")
_FILTER_KEYS = ("FILTER", "BANDNAME", "DETECTOR", "ARRAY", "BAND", "FILTER1")


def _header_band(header: fits.Header) -> tuple[Band | None, str]:
    """The band a header declares, and the keyword that says so."""
    for key in _WAVELENGTH_KEYS:
        if key in header and isinstance(header[key], (int, float)) and header[key] > 0:
            value = float(header[key])
            wavelength = value * (u.m if value < 1e-2 else u.um)
            try:
                return band_from_wavelength(wavelength), f"{key}={header[key]}"
            except KeyError:
                return None, f"{key}={header[key]}"
    for key in _FILTER_KEYS:
        if key in header and isinstance(header[key], str):
            value = header[key].strip().upper()
            for band in BANDS.values():
                if value == band.name.upper() or value in band.filter_names:
                    return band, f"{key}='{header[key]}'"
    return None, ""


def _check_band(header: fits.Header, band: Band | None, wcs: WCS, source: str) -> Band:
    declared, evidence = _header_band(header)
    if band is None:
        if declared is None:
            raise MapError(f"{source}: the header does not say which band this is (no WAVELNTH or "
                           f"FILTER keyword); say which band it is: one of {', '.join(BANDS)}")
        return declared
    if declared is not None and declared.name != band.name:
        raise MapError(f"{source}: given as {band.name} but its header says {declared.name} "
                       f"({evidence}); pass the {band.wavelength:.0f} map, or the right band")
    if declared is None and band.instrument == "SPIRE":
        # No wavelength keyword: a native SPIRE pixel scale of another band is a strong hint.
        scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0
        for other in BANDS.values():
            if other.instrument != "SPIRE" or other.name == band.name:
                continue
            if abs(scale / other.pixel.to_value(u.arcsec) - 1) < 0.02 and \
                    abs(scale / band.pixel.to_value(u.arcsec) - 1) > 0.02:
                raise MapError(f"{source}: given as {band.name} but its {scale:.2f}\" pixels are "
                               f"native {other.name} pixels; pass the {band.wavelength:.0f} map "
                               "(or add WAVELNTH to the header if this really is "
                               f"{band.name})")
    return band


def _squeeze(data: np.ndarray, source: str) -> np.ndarray:
    if data.ndim > 2:
        planes = int(np.prod(data.shape[:-2]))
        if planes != 1:
            raise MapError(f"{source}: the image is a cube with {planes} planes "
                           f"(shape {data.shape}); galaxysr needs one 2-D map — extract the "
                           "plane you want first")
        data = data.reshape(data.shape[-2:])
    if data.ndim != 2:
        raise MapError(f"{source}: expected a 2-D image, got {data.ndim} dimensions")
    return data


def image_hdu_index(hdul: fits.HDUList, hdu: int | str | None, source: str) -> int:
    """The index of the image HDU to read from ``hdul`` (opened from ``source``): ``hdu`` if
    given, else IMAGE, SIGNAL (HerMES SMAP), PRIMARY or the first 2-D image; a MapError naming
    ``source`` otherwise."""
    if hdu is not None:
        try:
            return hdul.index_of(hdu)
        except KeyError:
            names = [h.name for h in hdul]
            raise MapError(f"{source}: no HDU {hdu!r}; HDUs are {names}") from None
    for name in ("IMAGE", "SIGNAL", "PRIMARY"):
        if name in hdul and hdul[name].data is not None and hdul[name].data.ndim >= 2:
            return hdul.index_of(name)
    for i, h in enumerate(hdul):
        if getattr(h, "data", None) is not None and h.is_image and h.data.ndim >= 2:
            return i
    raise MapError(f"{source}: no image HDU found; HDUs are {[h.name for h in hdul]}")


def read_map(path: str | os.PathLike, band: Band | str | None = None, hdu: int | str | None = None,
             unit: u.UnitBase | str | None = None, noise: str | os.PathLike | None = None,
             default_unit: u.UnitBase | str | None = None) -> Map:
    """Read a FITS map, checking WCS, units, band and content.

    Parameters
    ----------
    path : path-like
        FITS file. HerMES SMAP layout (empty primary, ``image``/``error`` extensions) and
        single-HDU maps (optionally with a degenerate third axis) are both understood.
    band : Band or str, optional
        What the caller expects; checked against WAVELNTH/FILTER (and, failing those, the
        native SPIRE pixel scale). Required if the header does not say.
    hdu : int or str, optional
        Image HDU; by default ``IMAGE``, then the primary, then the first 2-D image.
    unit : unit, optional
        Overrides BUNIT.
    noise : path-like, optional
        A separate 1σ noise (rms) FITS map on the same grid. Otherwise an ``ERROR``/``NOISE``
        /``RMS`` extension (or ``VARIANCE``, square-rooted) is used when present.
    default_unit : unit, optional
        Used, with a warning that says so, when the header has no BUNIT.

    Returns
    -------
    Map
        In the file's unit; call ``.to("mJy/beam")`` to convert.
    """
    source = str(path)
    if not Path(path).exists():
        raise MapError(f"{source}: no such file")
    if Path(path).is_dir():
        raise MapError(f"{source}: is a folder, not a FITS file")
    try:
        hdul = fits.open(path)
        hdul.verify("silentfix")
    except (OSError, ValueError, TypeError) as error:
        raise MapError(f"{source}: not a readable FITS file ({str(error).strip() or type(error).__name__}); "
                       "give a FITS image") from None
    with hdul:
        return map_from_hdul(hdul, band, hdu, unit, noise, default_unit, source)


def read_map_section(path: str | os.PathLike, rows: tuple[int, int], cols: tuple[int, int]) -> Map:
    """Rows [y0, y1) and columns [x0, x1) of a galaxysr map file (a ``predict`` or ``survey``
    output) as a Map, every plane cut alike — the sky model on its finer grid, the cells on their
    coarser one (the section must then start on a cell border) — and its WCS moved with it. Read
    through memory maps, so memory holds the section, not the map; ``RESID*`` planes (on the input
    maps' grids) are not read."""
    source = str(path)
    (y0, y1), (x0, x1) = rows, cols
    with fits.open(path, memmap=True) as hdul:
        index = image_hdu_index(hdul, None, source)
        ny, nx = hdul[index].shape[-2:]
        if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
            raise ValueError(f"{source}: section rows {y0}:{y1}, columns {x0}:{x1} is not inside its {ny} × {nx} "
                             "pixels")
        cut = []
        for i, hdu in enumerate(hdul):
            if i != index and (not hdu.is_image or hdu.data is None):
                continue
            if hdu.name == "SKYMODEL":
                a, b, c, d = grid_bounds(rows, cols, finer=int(hdu.header.get("SKYOVER", hdu.shape[-2] // ny)))
            elif hdu.name == "CELLS":
                a, b, c, d = grid_bounds(rows, cols, cell=int(hdu.header.get("CELLPIX", 2)), source=source)
            elif hdu.shape[-2:] == (ny, nx):
                a, b, c, d = y0, y1, x0, x1
            else:
                continue  # another grid (a residual on an input map's)
            header = hdu.header.copy()
            header["CRPIX1"] = header.get("CRPIX1", 0.0) - c
            header["CRPIX2"] = header.get("CRPIX2", 0.0) - a
            data = np.array(hdu.data[..., a:b, c:d])
            cut.append(fits.PrimaryHDU(data, header) if not cut else fits.ImageHDU(data, header, name=hdu.name))
        return map_from_hdul(fits.HDUList(cut), source=f"{source}[{y0}:{y1}, {x0}:{x1}]")


def map_from_hdul(hdul: fits.HDUList, band: Band | str | None = None, hdu: int | str | None = None,
                  unit: u.UnitBase | str | None = None, noise: str | os.PathLike | None = None,
                  default_unit: u.UnitBase | str | None = None, source: str = "<HDUList>") -> Map:
    """A Map from an open ``HDUList`` (arguments as :func:`read_map`)."""
    index = image_hdu_index(hdul, hdu, source)
    header = hdul[index].header.copy()
    data = _squeeze(np.array(hdul[index].data, dtype=np.float32), source)
    # Keywords often live in the primary header of multi-extension products.
    merged = hdul[0].header.copy() if index != 0 else fits.Header()
    merged.update(header)
    noise_data = _read_noise(hdul, index, noise, data.shape, source)
    m = map_from_parts(data, header, band=band, unit=unit, noise=noise_data, source=source,
                       default_unit=default_unit, keywords=merged)
    if "FLAGS" in hdul and hdul.index_of("FLAGS") != index and hdul["FLAGS"].data is not None \
            and hdul["FLAGS"].data.shape == m.shape:
        m.flags = np.asarray(hdul["FLAGS"].data, np.uint8)
    if "SKYMODEL" in hdul and hdul.index_of("SKYMODEL") != index and hdul["SKYMODEL"].data is not None:
        sky = np.asarray(hdul["SKYMODEL"].data, np.float32)
        factor = int(hdul["SKYMODEL"].header.get("SKYOVER", sky.shape[0] // m.shape[0]))
        if sky.shape == (factor * m.shape[0], factor * m.shape[1]):
            m.sky_model, m.sky_oversample = sky, factor
    if "MEAN" in hdul and hdul.index_of("MEAN") != index and hdul["MEAN"].data is not None \
            and hdul["MEAN"].data.shape == m.shape:
        m.mean = np.asarray(hdul["MEAN"].data, np.float32)
        m.mean[~np.isfinite(m.mean)] = np.nan
        beam = hdul["MEAN"].header.get("BMAJ")
        m.mean_fwhm = (float(beam) * u.deg).to(u.arcsec) if isinstance(beam, (int, float)) and beam > 0 else None
    if "CELLS" in hdul and hdul.index_of("CELLS") != index and hdul["CELLS"].data is not None:
        cube, cell = hdul["CELLS"].data, int(hdul["CELLS"].header.get("CELLPIX", 2))
        if cube.ndim == 3 and cube.shape[1:] == tuple(-(-n // cell) for n in m.shape):
            m.cells, m.cell_pixels = np.moveaxis(np.asarray(cube, np.float32), 0, -1), cell
    for band in SPIRE_BANDS:
        name = residual_extension(band)
        if name in hdul and hdul.index_of(name) != index and hdul[name].data is not None:
            header = hdul[name].header
            resid = map_from_parts(np.asarray(hdul[name].data, np.float32), header, band=band,
                                   unit=header.get("BUNIT") or m.unit, source=f"{source}[{name}]")
            resid.meta.update({key: (header[key], header.comments[key]) for key in RESIDUAL_CARDS if key in header})
            m.residuals[band] = resid
    m.meta.update({key: (merged[key], merged.comments[key]) for key in merged
                   if key.startswith(PROVENANCE_PREFIXES)})
    return m


def map_from_parts(data: np.ndarray, header_or_wcs, band: Band | str | None = None, unit=None,
                   noise: np.ndarray | None = None, source: str = "<memory>", default_unit=None,
                   keywords: fits.Header | None = None) -> Map:
    """A Map from an image and a FITS header (or an astropy WCS), with every check.

    ``keywords`` is the header searched for BUNIT, band and beam keywords (default: the
    header itself). ``data`` may be an astropy Quantity, which gives the unit.
    """
    band = get_band(band) if isinstance(band, str) else band
    if isinstance(data, u.Quantity):
        unit = data.unit if unit is None else unit
        data = data.value
    data = _squeeze(np.array(data, dtype=np.float32), source)
    if isinstance(header_or_wcs, WCS):
        wcs, header = header_or_wcs, header_or_wcs.to_header()
    elif isinstance(header_or_wcs, fits.Header):
        header = header_or_wcs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    else:
        raise MapError(f"{source}: needs a FITS header or an astropy WCS with the image, got "
                       f"{type(header_or_wcs).__name__}")
    keywords = header if keywords is None else keywords
    if not wcs.has_celestial:
        raise MapError(f"{source}: no celestial WCS (need RA/Dec CTYPE, CRVAL, CRPIX and "
                       "CDELT or CD keywords); add the map's astrometry to the header")
    wcs = wcs.celestial.deepcopy()
    wcs.pixel_shape = data.shape[::-1]
    band = _check_band(keywords, band, wcs, source)
    if unit is not None:
        unit = u.Unit(unit)
    elif "BUNIT" in keywords and str(keywords["BUNIT"]).strip():
        unit = parse_bunit(str(keywords["BUNIT"]), source)
    elif default_unit is not None:
        unit = u.Unit(default_unit)
        warnings.warn(f"{source}: no BUNIT in the header; assuming {unit}", stacklevel=3)
    else:
        raise MapError(f"{source}: no BUNIT in the header, so the map's unit is unknown; add BUNIT "
                       "('mJy/beam', 'Jy/beam' or 'MJy/sr') to the header, or give the unit explicitly")
    if not np.isfinite(data).any():
        raise MapError(f"{source}: every pixel is NaN or infinite; nothing to work with")
    data[~np.isfinite(data)] = np.nan
    if noise is not None:
        noise = np.array(noise, dtype=np.float32)
        if noise.shape != data.shape:
            raise MapError(f"{source}: noise map shape {noise.shape} differs from image shape {data.shape}; "
                           "reproject it onto the image grid")
    fwhm = None
    if isinstance(keywords.get("BMAJ"), (int, float)) and keywords["BMAJ"] > 0:
        # A beam stated in the header that differs from the band's (a super-resolved map's
        # measured beam) is kept; the band's own beam needs no override.
        stated = (float(keywords["BMAJ"]) * u.deg).to(u.arcsec)
        if abs(stated / band.fwhm - 1) > 0.01:
            fwhm = stated
    return Map(data=data, wcs=wcs, band=band, unit=unit, noise=noise, source=source, fwhm=fwhm,
               flux_curves=flux_curves_from_header(keywords))


def as_map(obj, band: Band | str | None = None, unit=None) -> Map:
    """A Map from whatever a user holds: a Map, a FITS path, an ``HDUList``, an image HDU,
    an ``(image, WCS or Header)`` tuple (the image may be a Quantity), or an
    ``NDData``/``CCDData`` (its ``uncertainty`` becomes the noise map). The same checks as
    :func:`read_map` apply; ``band`` is what the caller expects."""
    from astropy.nddata import NDData, StdDevUncertainty, VarianceUncertainty

    band_obj = get_band(band) if isinstance(band, str) else band
    if isinstance(obj, Map):
        if band_obj is not None and obj.band.name != band_obj.name:
            raise MapError(f"{obj.source}: is a {obj.band.name} map, given as {band_obj.name}")
        return obj if unit is None else obj.to(unit)
    if isinstance(obj, (str, os.PathLike)):
        return read_map(obj, band=band_obj, unit=unit)
    if isinstance(obj, fits.HDUList):
        return map_from_hdul(obj, band_obj, unit=unit, source=f"<HDUList {obj.filename() or 'in memory'}>")
    if isinstance(obj, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return map_from_parts(obj.data, obj.header, band_obj, unit, source=f"<{type(obj).__name__} {obj.name}>")
    if isinstance(obj, NDData):
        if obj.wcs is None:
            raise MapError("<NDData>: no WCS; give the NDData a celestial wcs")
        wcs = obj.wcs if isinstance(obj.wcs, WCS) else getattr(obj.wcs, "low_level_wcs", obj.wcs)
        if not isinstance(wcs, WCS):
            raise MapError(f"<NDData>: its wcs is a {type(obj.wcs).__name__}; galaxysr needs an astropy.wcs.WCS")
        data = np.array(obj.data, dtype=np.float32)
        if obj.mask is not None:
            data[np.asarray(obj.mask, bool)] = np.nan
        noise = None
        if isinstance(obj.uncertainty, StdDevUncertainty):
            noise = np.asarray(obj.uncertainty.array, np.float32)
        elif isinstance(obj.uncertainty, VarianceUncertainty):
            noise = np.sqrt(np.asarray(obj.uncertainty.array, np.float32))
        elif obj.uncertainty is not None:
            raise MapError(f"<NDData>: {type(obj.uncertainty).__name__} is not understood; give a "
                           "StdDevUncertainty or VarianceUncertainty")
        return map_from_parts(data, wcs, band_obj, unit if unit is not None else obj.unit, noise=noise,
                              source=f"<{type(obj).__name__}>")
    if isinstance(obj, tuple) and len(obj) == 2:
        return map_from_parts(obj[0], obj[1], band_obj, unit, source="<(image, wcs)>")
    raise MapError(f"cannot make a map from a {type(obj).__name__}; give a FITS path, an HDUList or image HDU, "
                   "an (image, WCS) tuple, an NDData/CCDData or a galaxysr Map")


def _read_noise(hdul, index, noise, shape, source):
    if noise is not None:
        with fits.open(noise) as nh:
            values = _squeeze(np.array(nh[image_hdu_index(nh, None, str(noise))].data,
                                       dtype=np.float32), str(noise))
        if values.shape != shape:
            raise MapError(f"{noise}: noise map shape {values.shape} differs from {source} "
                           f"shape {shape}; reproject it onto the image grid")
        return values
    for name in ("ERROR", "NOISE", "RMS", "VARIANCE"):
        if name in hdul and hdul.index_of(name) != index and hdul[name].data is not None:
            values = _squeeze(np.array(hdul[name].data, dtype=np.float32), source)
            if values.shape != shape:
                continue
            return np.sqrt(values) if name == "VARIANCE" else values
    return None


def write_map(m: Map, path: str | os.PathLike, overwrite: bool = False,
              extra: dict | None = None) -> Path:
    """Write ``m`` as a float32 FITS image, its noise map (if any) in an ``ERROR``
    extension (:meth:`Map.to_hdulist`).

    ``extra`` adds header cards (key → value or (value, comment)). Refuses to replace an
    existing file unless ``overwrite``. The file is written under a temporary name and
    renamed, so an interrupted write leaves no half-written file.
    """
    path = refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    m.to_hdulist(extra).writeto(tmp, overwrite=True)
    os.replace(tmp, path)
    return path


def sibling_band_path(path_250: Path, band: str) -> Path:
    """Where the 350/500 µm map of a 250 µm file is expected: '250' → '350'/'500' (or
    SPIRE's PSW → PMW/PLW) in the file name."""
    path_250 = Path(path_250)
    wavelength = band[-3:]
    name = path_250.name
    for old, new in (("250", wavelength), ("PSW", {"350": "PMW", "500": "PLW"}[wavelength]),
                     ("psw", {"350": "pmw", "500": "plw"}[wavelength])):
        if old in name:
            return path_250.with_name(new.join(name.rsplit(old, 1)))
    raise MapError(f"{path_250}: cannot guess the {wavelength} µm file name (no '250' or 'PSW' in it); "
                   "give that map explicitly")
