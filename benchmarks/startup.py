"""Benchmark: how fast the command line answers `--help` and a bad path (target < 3 s:
TensorFlow is imported only when a model is needed)."""

import subprocess
import sys
import time

from _common import write

CASES = {"galaxysr --help": ["--help"], "galaxysr train --help": ["train", "--help"],
         "galaxysr predict --help": ["predict", "--help"],
         "galaxysr predict missing.fits out.fits": ["predict", "missing_250.fits", "out.fits"]}

if __name__ == "__main__":
    results = {}
    for name, args in CASES.items():
        times = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "galaxysr.cli", *args], capture_output=True)
            times.append(time.perf_counter() - t)
        results[name] = min(times)
    rows = "\n".join(f"| `{k}` | {v:.2f} s |" for k, v in results.items())
    body = ("Wall time of a fresh Python process answering (best of 3).\n\n| command | time |\n|---|---|\n"
            f"{rows}\n\nTarget: under 3 s. Only the chosen subcommand's options are built, and heavy "
            "modules (TensorFlow, photutils, matplotlib) are imported inside the handlers that need them.")
    write("startup", "Command-line start-up", body, results)
