"""Benchmark: end-to-end seconds per deg² of ``predict`` (read, reproject, infer, blend,
write) with the shipped model, and peak memory for 1 and 4 deg² maps (target ≤ 15 s/deg²,
memory independent of map size)."""

import tempfile
from pathlib import Path

from _common import run_isolated, write

MAKE = """
import json, sys
from galaxysr.instruments import SPIRE_BANDS
from galaxysr.maps import write_map
from galaxysr.simulate import SimulationConfig, simulate_field
area, folder = float(sys.argv[1]), sys.argv[2]
field = simulate_field(SimulationConfig(area_deg2=area, seed=7), bands=SPIRE_BANDS)
for b in SPIRE_BANDS:
    write_map(field[b], f"{folder}/map_{b[-3:]}.fits", overwrite=True)
print(json.dumps({}))
"""

PREDICT = """
import json, time, resource, sys
t0 = time.perf_counter()
from galaxysr.cli import main
t1 = time.perf_counter()
main(["predict", "{folder}/map_250.fits", "{folder}/out.fits", "--overwrite", "--no-progress"])
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "predict_s": t2 - t1,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

if __name__ == "__main__":
    import subprocess, sys
    results = {}
    for area in (1.0, 4.0):
        folder = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, "-c", MAKE, str(area), str(folder)], check=True, capture_output=True)
        results[area] = run_isolated(PREDICT.format(folder=folder))
    one, four = results[1.0], results[4.0]
    body = ("Shipped model, 2″ output pixels, 128-px tiles overlapping by 32 px, batch 16; the three SPIRE "
            "maps are FITS files on local disk. Times run from the command's start to the written file and "
            "include importing TensorFlow and loading the model (a few seconds, paid once per call).\n\n"
            "| map | end-to-end | per deg² | peak memory (process) |\n|---|---|---|---|\n"
            f"| 1 deg² | {one['predict_s']:.1f} s | {one['predict_s']:.1f} s/deg² | {one['peak_mib']:.0f} MiB |\n"
            f"| 4 deg² | {four['predict_s']:.1f} s | {four['predict_s'] / 4:.1f} s/deg² | {four['peak_mib']:.0f} MiB |\n\n"
            "Targets: ≤ 15 s/deg² on 2 CPU cores; peak memory independent of map size (rows are streamed "
            "to disk; only a strip of tiles and the — small — native SPIRE maps are held). DeepSPIRE "
            "(Koopmans et al. 2025) reports ~1 s/deg² on a consumer GPU; no GPU was available here.")
    write("predict", "Prediction speed and memory", body, {str(k): v for k, v in results.items()})
