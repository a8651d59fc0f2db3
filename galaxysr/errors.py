"""Typed errors shared by every writer.

Library functions raise :class:`OutputExistsError` wherever an output would be replaced; the
command line catches it by type and names its ``--overwrite`` flag instead of ``overwrite=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutputExistsError", "refuse_existing"]


class OutputExistsError(FileExistsError):
    """An output file or folder exists and overwriting it was not allowed.

    Parameters
    ----------
    path : path-like
        The output that exists.
    problem : str
        What is wrong with it (default: that it exists).
    fix : str
        What to do, without the way to allow overwriting (the library adds ``overwrite=True``,
        the command line ``--overwrite``).
    """

    def __init__(self, path: str | os.PathLike, problem: str = "already exists",
                 fix: str = "choose another name or allow overwriting it"):
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(self.message("overwrite=True"))

    def message(self, how: str) -> str:
        """The error with ``how`` (``overwrite=True``, ``--overwrite``) as the way to overwrite."""
        return f"{self.path}: {self.problem}; {self.fix} ({how})"

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.problem, self.fix))


def refuse_existing(path: str | os.PathLike, overwrite: bool, fix: str = "choose another name or allow overwriting it"
                    ) -> Path:
    """``Path(path)``, or :class:`OutputExistsError` when it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path, fix=fix)
    return path
