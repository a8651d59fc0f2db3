"""The streamed FITS writer of super-resolved maps: finished rows go to disk as they come, so memory
does not grow with the map, and nothing appears under the final name until the map is done."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..cells import CELL_CHANNELS
from ..errors import refuse_existing
from ..maps import Map, extension_header, finer_wcs

__all__ = ["MapWriter"]


class MapWriter:
    """Collects finished output rows — the map, its error (if any), its flags and its sky
    model (if any) — in order, into memory or streamed into a FITS file: the map through a
    StreamingHDU, the rest through temporary memory-mapped files appended as ``ERROR``,
    ``FLAGS``, ``SKYMODEL``, ``MEAN`` and ``CELLS`` extensions at the end. Nothing appears under the
    final name until :meth:`finish`; :meth:`abort` removes the partial files. Memory does not grow
    with the map. ``cell_pixels`` (a catalogue-head network's cells, in map pixels per side; 0:
    none): the cells' raw outputs are kept once per cell. ``with_mean``: the rows also carry a
    catalogue-head network's per-pixel map, when the image is its catalogue drawn (``mean_fwhm``:
    that plane's measured beam)."""

    def __init__(self, template: Map, shape, out_path=None, overwrite: bool = False, with_error: bool = False,
                 sky_oversample: int = 0, cell_pixels: int = 0, with_mean: bool = False, mean_fwhm=None):
        self.shape = shape
        self.template = template
        self.with_error = with_error
        self.mean_fwhm = mean_fwhm
        self.sky_oversample = int(sky_oversample)
        self.cell_pixels = int(cell_pixels)
        sky_shape = (shape[0] * self.sky_oversample, shape[1] * self.sky_oversample)
        cells_shape = (CELL_CHANNELS, *(-(-n // max(self.cell_pixels, 1)) for n in shape))
        self.out_path = None if out_path is None else Path(out_path)
        self.scratch = []
        if self.out_path is None:
            self.image = np.full(shape, np.nan, np.float32)
            self.error = np.full(shape, np.nan, np.float32) if with_error else None
            self.mean = np.full(shape, np.nan, np.float32) if with_mean else None
            self.flags = np.zeros(shape, np.uint8)
            self.sky = np.full(sky_shape, np.nan, np.float32) if self.sky_oversample else None
            self.cells = np.full(cells_shape, np.nan, np.float32) if self.cell_pixels else None
            return
        refuse_existing(self.out_path, overwrite)
        header = template.header()
        header["NAXIS1"], header["NAXIS2"] = shape[1], shape[0]
        header.add_history("Super-resolved with galaxysr (Lauritsen et al. 2021 method)")
        self.header = header
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self._scratch(".part")
        self.stream = fits.StreamingHDU(self.tmp, _image_header(header, shape))
        self.error = np.memmap(self._scratch(".err"), np.float32, "w+", shape=shape) if with_error else None
        self.mean = np.memmap(self._scratch(".mea"), np.float32, "w+", shape=shape) if with_mean else None
        self.flags = np.memmap(self._scratch(".flg"), np.uint8, "w+", shape=shape)
        self.sky = np.memmap(self._scratch(".sky"), np.float32, "w+", shape=sky_shape) if self.sky_oversample else None
        self.cells = np.memmap(self._scratch(".cel"), np.float32, "w+", shape=cells_shape) if self.cell_pixels else None

    def _scratch(self, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".{self.out_path.name}.", suffix=suffix, dir=self.out_path.parent)
        os.close(handle)
        self.scratch.append(Path(name))
        return Path(name)

    def write_rows(self, y0: int, image: np.ndarray, error: np.ndarray | None, flags: np.ndarray,
                   sky: np.ndarray | None = None, cells: np.ndarray | None = None,
                   mean: np.ndarray | None = None) -> None:
        """Rows ``y0 … y0 + len(image) − 1``, in order (mJy/beam, mJy/beam, uint8; the sky
        model's f·len(image) rows, mJy per sky pixel; the cells' raw outputs, one row and column
        per cell, (cell rows, cell columns, planes): ``y0`` must then start a cell; the per-pixel
        map's rows, mJy/beam, for a writer ``with_mean``)."""
        n = min(len(image), self.shape[0] - y0)
        if n <= 0:
            return
        if self.cells is not None:
            c = self.cell_pixels
            if y0 % c:
                raise ValueError(f"rows of a map with {c}-pixel cells must start on a cell border, got row {y0}")
            rows = -(-(y0 + n) // c) - y0 // c
            self.cells[:, y0 // c:y0 // c + rows] = np.moveaxis(cells[:rows], -1, 0)
        if self.with_error:
            self.error[y0:y0 + n] = error[:n]
        if self.mean is not None:
            self.mean[y0:y0 + n] = mean[:n]
        self.flags[y0:y0 + n] = flags[:n]
        if self.sky is not None:
            f = self.sky_oversample
            self.sky[y0 * f:(y0 + n) * f] = sky[:n * f]
        if self.out_path is None:
            self.image[y0:y0 + n] = image[:n]
        else:
            self.stream.write(np.asarray(image[:n], ">f4"))

    def finish(self):
        """The Map (in memory) or the written file's path."""
        if self.out_path is None:
            cells = None if self.cells is None else np.moveaxis(self.cells, 0, -1)
            return replace(self.template, data=self.image, noise=self.error, flags=self.flags, sky_model=self.sky,
                           sky_oversample=max(self.sky_oversample, 1), cells=cells,
                           cell_pixels=self.cell_pixels or self.template.cell_pixels, mean=self.mean,
                           mean_fwhm=self.mean_fwhm if self.mean is not None else None)
        self.stream.close()
        if self.with_error:
            self.error.flush()
            fits.append(self.tmp, np.asarray(self.error), extension_header("ERROR", self.template.wcs,
                                                                           self.header["BUNIT"]))
        self.flags.flush()
        fits.append(self.tmp, np.asarray(self.flags), extension_header("FLAGS", self.template.wcs))
        if self.sky is not None:
            self.sky.flush()
            fits.append(self.tmp, np.asarray(self.sky), extension_header(
                "SKYMODEL", finer_wcs(self.template.wcs, self.sky_oversample), oversample=self.sky_oversample))
        if self.mean is not None:
            self.mean.flush()
            fits.append(self.tmp, np.asarray(self.mean), extension_header("MEAN", self.template.wcs,
                                                                          self.header["BUNIT"], fwhm=self.mean_fwhm))
        if self.cells is not None:
            self.cells.flush()
            fits.append(self.tmp, np.asarray(self.cells), extension_header("CELLS", self.template.wcs,
                                                                           oversample=self.cell_pixels))
        self.error = self.flags = self.sky = self.cells = self.mean = None  # release the memory maps before deleting their files
        os.replace(self.tmp, self.out_path)
        _apply_umask(self.out_path)
        for path in self.scratch[1:]:
            path.unlink(missing_ok=True)
        return self.out_path

    def abort(self) -> None:
        if self.out_path is None:
            return
        try:
            self.stream.close()
        except Exception:  # the partial files are deleted either way
            pass
        self.error = self.flags = self.sky = self.cells = self.mean = None
        for path in self.scratch:
            path.unlink(missing_ok=True)


def _apply_umask(path: Path) -> None:
    """Give a file made by ``tempfile`` (mode 0600) the permissions the user's umask gives
    ordinary new files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _image_header(header: fits.Header, shape) -> fits.Header:
    out = fits.Header()
    out["SIMPLE"] = True
    out["BITPIX"] = -32
    out["NAXIS"] = 2
    out["NAXIS1"] = shape[1]
    out["NAXIS2"] = shape[0]
    for card in header.cards:
        if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", ""):
            out.append(card)
        elif card.keyword == "" and card.value:
            out.append(card)
    return out
