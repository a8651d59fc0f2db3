"""Regenerate ``outputs_reference.npz``: what the shipped model makes of a small simulated field
through ``galaxysr predict --catalogue`` (tests/test_outputs_unchanged.py compares against it).

Run it only when an output is *meant* to change, and say why in the commit:

    python tests/data/make_outputs_reference.py
"""

from __future__ import annotations

import hashlib
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
REFERENCE = HERE / "outputs_reference.npz"
PLANES = ("PRIMARY", "ERROR", "FLAGS", "SKYMODEL")
#: Header keywords whose values must not change (provenance and dates may).
KEYWORDS = ("BUNIT", "BMAJ", "BMIN", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CDELT1",
            "CDELT2", "NAXIS1", "NAXIS2")
BLOCK = 16


def cpu_signature() -> str:
    """The CPU's model name, family/model and vector width: floating point is bit-identical only
    on the same kind of CPU (oneDNN picks its kernels by these; two "AMD EPYC" differ by AVX-512)."""
    try:
        info = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
        flags = info.get("flags", "").split()
        avx = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else ""
        return f"{info.get('model name', '')} family {info.get('cpu family', '?')} model {info.get('model', '?')} {avx}"
    except OSError:
        return platform.processor() or platform.machine()


def block_sums(data: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Sums over ``block`` × ``block`` pixel blocks (NaN as 0): a small summary of a plane."""
    data = np.nan_to_num(np.asarray(data, dtype=np.float64))
    ny, nx = (s // block * block for s in data.shape)
    return data[:ny, :nx].reshape(ny // block, block, nx // block, block).sum(axis=(1, 3))


def run_predict(folder: Path) -> tuple[Path, Path]:
    """Simulate the field, write its SPIRE maps and run ``galaxysr predict --catalogue`` on them."""
    from galaxysr.cli import main
    from galaxysr.instruments import SPIRE_BANDS
    from galaxysr.maps import write_map
    from galaxysr.simulate import SimulationConfig, simulate_field

    field = simulate_field(SimulationConfig(area_deg2=0.01, seed=77))
    for band in SPIRE_BANDS:
        write_map(field[band], folder / f"spire_{band[-3:]}.fits")
    out, cat = folder / "out.fits", folder / "out.ecsv"
    rc = main(["predict", str(folder / "spire_250.fits"), str(out), "--catalogue", str(cat), "--no-progress"])
    if rc:
        raise SystemExit(f"galaxysr predict failed with exit status {rc}")
    return out, cat


def summarise(out: Path, cat: Path) -> dict:
    """Per plane: sha256 of the bytes, block sums, the fixed header keywords; the catalogue's
    positions and fluxes."""
    from astropy.io import fits
    from astropy.table import Table

    record = {"cpu": np.array(cpu_signature())}
    with fits.open(out) as hdul:
        for name in PLANES:
            hdu = hdul[0 if name == "PRIMARY" else name]
            data = np.ascontiguousarray(hdu.data)
            record[f"{name}_sha256"] = np.array(hashlib.sha256(data.tobytes()).hexdigest())
            record[f"{name}_blocks"] = block_sums(data)
            record[f"{name}_header"] = np.array([repr(hdu.header.get(k)) for k in KEYWORDS])
    table = Table.read(cat)
    for column in ("ra", "dec", "flux", "flux_err"):
        record[f"catalogue_{column}"] = np.asarray(table[column], dtype=np.float64)
    return record


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        summary = summarise(*run_predict(Path(tmp)))
    np.savez_compressed(REFERENCE, **summary)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1e3:.0f} kB, CPU {summary['cpu']})", file=sys.stderr)
