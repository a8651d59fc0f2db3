"""Field folders: the maps of one patch of sky in several bands, and its truth catalogue."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import refuse_existing
from .core import MJY_PER_BEAM, Map, MapError
from .fits_io import read_map, write_map

__all__ = ["FIELD_FILES", "TRUTH_FILE", "Field", "write_field", "read_field"]

#: File names of a Field folder, by band.
FIELD_FILES = {"spire_250": "spire_250.fits", "spire_350": "spire_350.fits",
               "spire_500": "spire_500.fits", "scuba2_450": "scuba2_450.fits"}
TRUTH_FILE = "truth.ecsv"


@dataclass
class Field:
    """A patch of sky seen in several bands: the unit every stage reads and writes.

    On disk a Field is a folder holding ``spire_250.fits``, ``spire_350.fits``,
    ``spire_500.fits``, ``scuba2_450.fits`` (with an optional ``scuba2_450_rms.fits``) and,
    for simulated fields, ``truth.ecsv``. Any of the maps may be absent.
    """

    maps: dict[str, Map]
    truth: "object | None" = None   # astropy Table with ra, dec (deg) and flux_<band> (mJy)
    path: str = "<memory>"

    def __getitem__(self, band: str) -> Map:
        try:
            return self.maps[band]
        except KeyError:
            raise MapError(f"{self.path}: field has no {band} map (expected "
                           f"{FIELD_FILES.get(band, band)}); it has {sorted(self.maps)}") from None


def write_field(field: Field, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a Field folder (maps in mJy/beam, noise of SCUBA-2 as a separate rms file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in field.maps.items():
        m = m.to(MJY_PER_BEAM)
        if name == "scuba2_450" and m.noise is not None:
            write_map(replace(m, data=m.noise, noise=None), folder / "scuba2_450_rms.fits",
                      overwrite=overwrite)
            m = replace(m, noise=None)
        write_map(m, folder / FIELD_FILES[name], overwrite=overwrite)
    if field.truth is not None:
        truth_path = folder / TRUTH_FILE
        refuse_existing(truth_path, overwrite, fix="choose another folder or allow overwriting it")
        field.truth.write(truth_path, overwrite=overwrite)
    return folder


def read_field(folder: str | os.PathLike, bands=tuple(FIELD_FILES)) -> Field:
    """Read the maps of ``bands`` (those present) and the truth catalogue of a Field folder."""
    from astropy.table import Table

    folder = Path(folder)
    if not folder.is_dir():
        raise MapError(f"{folder}: not a folder; a Field is a folder of FITS maps "
                       "(make one with `galaxysr simulate --out DIR`)")
    maps = {}
    for name in bands:
        path = folder / FIELD_FILES[name]
        if path.exists():
            rms = folder / "scuba2_450_rms.fits"
            noise = rms if name == "scuba2_450" and rms.exists() else None
            maps[name] = read_map(path, band=name, noise=noise).to(MJY_PER_BEAM)
    if not maps:
        raise MapError(f"{folder}: no maps found (looked for {', '.join(FIELD_FILES[b] for b in bands)})")
    truth = Table.read(folder / TRUTH_FILE) if (folder / TRUTH_FILE).exists() else None
    return Field(maps=maps, truth=truth, path=str(folder))
