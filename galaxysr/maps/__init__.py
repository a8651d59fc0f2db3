"""Maps: a 2-D image with its celestial WCS, band, unit, optional noise and beam; FITS I/O,
maps from in-memory objects, resampling and Field folders.

Every stage that touches disk goes through :func:`read_map` / :func:`write_map` (and every
in-memory input through :func:`as_map`), so the checks an astronomer expects (celestial WCS
present, units known, the right band, not all-NaN) happen in one place, and every error
names the source, the problem and the fix.
"""

from .core import (FLAG_BLENDED, FLAG_EDGE, FLAG_FILLED, FLAG_LOW_COVERAGE, FLUX_READINGS, MJY_PER_BEAM, MJY_PER_PIXEL,
                   FluxCurve, Map, MapError,
                   convert_factor, cutout, section, finer_wcs, output_grid, parse_bunit, extension_header, tan_wcs, cells_cube,
                   residual_extension, RESIDUAL_CARDS)
from .field import FIELD_FILES, TRUTH_FILE, Field, read_field, write_field
from .fits_io import as_map, map_from_hdul, map_from_parts, read_map, read_map_section, sibling_band_path, write_map
from .resample import Resampler, pixel_mapping, reproject_map

__all__ = ["FLAG_BLENDED", "FLAG_EDGE", "FLAG_FILLED", "FLAG_LOW_COVERAGE", "MJY_PER_BEAM", "MJY_PER_PIXEL", "Map",
           "FluxCurve", "FLUX_READINGS", "MapError", "convert_factor", "cutout", "section", "finer_wcs", "output_grid", "parse_bunit", "extension_header", "tan_wcs", "cells_cube", "residual_extension", "RESIDUAL_CARDS", "FIELD_FILES", "TRUTH_FILE", "Field",
           "read_field", "write_field", "as_map", "map_from_hdul", "map_from_parts", "read_map", "read_map_section",
           "sibling_band_path",
           "write_map", "Resampler", "pixel_mapping", "reproject_map"]
