"""Smoke test of a non-editable install, run by .ci/run from a directory outside the clone:
the shipped model, mock pair and count tables are package data, and the commands work."""

import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import galaxysr

root = Path(str(files("galaxysr")))
assert "site-packages" in str(root), f"galaxysr imported from {root}, not from the installed package"
pair = root / "data" / "mock_real"
for name in ("spire_250.fits", "spire_350.fits", "spire_500.fits", "scuba2_450.fits"):
    assert (pair / name).is_file(), f"{pair / name} missing from the installed package"
assert (root / "data" / "counts" / "bethermin2012_spire250.ecsv").is_file()
repo = Path(__file__).resolve().parents[1]
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "out.fits"
    subprocess.run([sys.executable, str(repo / "predict.py"), str(pair / "spire_250.fits"), str(out),
                    "--no-progress"], check=True)
    result = galaxysr.read_map(out)
    assert result.error is not None and result.shape[0] > 100
    # Training on the defaults finds the packaged mock pair and count tables (a few steps).
    subprocess.run([sys.executable, str(repo / "train.py"), "--epochs", "1", "--steps-per-epoch", "2",
                    "--n-sim-fields", "1", "--sim-area", "0.01", "--no-randomise", "--tile", "32", "--depth", "3",
                    "--base-filters", "4", "--batch-size", "2", "--sim-dir", str(Path(tmp) / "sim"),
                    "--out", str(Path(tmp) / "run"), "--no-progress", "--no-calibration"], check=True)
    assert (Path(tmp) / "run" / "model" / "saved_model").is_dir()
print("installed package: model, mock pair and counts found; predict and train ran")
