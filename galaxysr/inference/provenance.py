"""What makes an output what it is: input file hashes, the model, the options — recorded in every
output (``GSRPROV``, ``GSRCAT``) so that a rerun with nothing new to do does nothing, and one
that would replace a different output is refused."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from astropy.io import fits

from .. import __version__
from ..errors import OutputExistsError

if TYPE_CHECKING:
    from .artifact import ModelArtifact

__all__ = ["file_sha256", "provenance", "digest", "recorded", "outputs_to_make"]


def file_sha256(source: str) -> str | None:
    """SHA-256 (hex) of the file ``source`` names, or None if it is not a file (computed
    once per file version: the path, size and modification time key a cache)."""
    path = Path(str(source))
    if not path.is_file():
        return None
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(sources: dict, artifact: ModelArtifact, options: dict) -> str:
    """A digest (64 hex) of what makes an output what it is: the galaxysr version, the
    model's hash, each input's SHA-256 (band → path; a source that is not a file by its
    name) and the output-changing ``options``. Written as ``GSRPROV``; a rerun whose digest
    matches an existing output's has nothing to do."""
    record = {"galaxysr": __version__, "model": artifact.sha256,
              "inputs": {band: file_sha256(src) or str(src) for band, src in sorted(sources.items())},
              "options": {k: options[k] for k in sorted(options)}}
    return digest(record)


def digest(*parts) -> str:
    """SHA-256 (64 hex) of ``parts`` as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def recorded(path: str | os.PathLike, key: str = "GSRPROV") -> str | None:
    """The provenance ``key`` an existing galaxysr output records (a FITS header card, or a
    table's meta), or None (not there, not a galaxysr output, unreadable)."""
    from astropy.table import Table

    path = Path(path)
    try:
        if path.suffix.lower() in (".fits", ".fit", ".fts"):
            with fits.open(path) as hdul:
                return next((h.header[key] for h in hdul if key in h.header), None)
        return Table.read(path).meta.get(key)
    except Exception:  # a file that is not a galaxysr output records nothing
        return None


def outputs_to_make(outputs: list, overwrite: bool = False) -> list[bool]:
    """For each (path or None, provenance key, expected digest): whether it must be made.
    An existing output recording the same digest is up to date; one that does not is
    refused — before any work — unless ``overwrite``, which remakes every output asked for."""
    todo = []
    for path, key, expected in outputs:
        if not path:
            todo.append(False)
        elif overwrite:
            todo.append(True)
        elif Path(path).exists() and recorded(path, key) == expected:
            todo.append(False)
        elif Path(path).exists() and not overwrite:
            raise OutputExistsError(path, "already exists and was not made from these inputs, model and options")
        else:
            todo.append(True)
    return todo


