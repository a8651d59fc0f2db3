"""Benchmark: `galaxysr survey` on a 4 deg² simulated map with 1 and 2 Dask workers against
single-process `predict` — seconds per deg², peak memory per worker, and whether the mosaic
equals predict's map (target: within 1e-5 relative; throughput with 2 workers ≥ 1.6× one
worker where the machine has the cores)."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import run_isolated, write

MAKE = """
import sys
from galaxysr.instruments import SPIRE_BANDS
from galaxysr.maps import write_map
from galaxysr.simulate import SimulationConfig, simulate_field
area, folder = float(sys.argv[1]), sys.argv[2]
field = simulate_field(SimulationConfig(area_deg2=area, seed=7), bands=SPIRE_BANDS)
for b in SPIRE_BANDS:
    write_map(field[b], f"{folder}/map_{b[-3:]}.fits", overwrite=True)
"""

PREDICT = """
import json, time, resource
t0 = time.perf_counter()
from galaxysr.cli import main
main(["predict", "{folder}/map_250.fits", "{folder}/predict.fits", "--overwrite", "--no-progress"])
print(json.dumps({{"seconds": time.perf_counter() - t0,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

SURVEY = """
import json, time, resource
import numpy as np
if __name__ == "__main__":
    t0 = time.perf_counter()
    from galaxysr.maps import read_map
    from galaxysr.survey import start_client, survey_field
    client, cluster, threads = start_client(workers={workers})
    t1 = time.perf_counter()
    summary = survey_field(client, "{folder}/map_250.fits", "{folder}/survey{workers}", progress=False,
                           threads=threads, overwrite=True)
    t2 = time.perf_counter()
    peaks = client.run(lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024)
    client.close(); cluster.close()
    a, b = read_map(summary["mosaic"]).data, read_map("{folder}/predict.fits").data
    both = np.isfinite(a) & np.isfinite(b)
    rel = float(np.max(np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-3)))
    print(json.dumps({{"seconds": t2 - t0, "cluster_start_s": t1 - t0, "blocks": summary["blocks"],
                      "worker_peak_mib": max(peaks.values()), "max_rel_diff": rel,
                      "same_nan": bool((np.isfinite(a) == np.isfinite(b)).all())}}))
"""

if __name__ == "__main__":
    area = 4.0
    folder = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, "-c", MAKE, str(area), str(folder)], check=True, capture_output=True)
    results = {"predict": run_isolated(PREDICT.format(folder=folder))}
    for workers in (1, 2):
        script = folder / f"survey{workers}.py"
        script.write_text(SURVEY.format(folder=folder, workers=workers))
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
        results[f"survey_{workers}"] = json.loads(out.stdout.strip().splitlines()[-1])
    p, s1, s2 = results["predict"], results["survey_1"], results["survey_2"]
    body = (f"A {area:g} deg² simulated field (three SPIRE maps on local disk), shipped model; `survey` with the "
            f"default blocks of 8×8 tiles ({s1['blocks']} blocks), Dask LocalCluster of single-threaded "
            "worker processes, TensorFlow given the machine's cores divided among the workers. Times include "
            "start-up (imports, cluster, model loading in every worker).\n\n"
            "| run | end-to-end | per deg² | peak memory | max relative difference to predict |\n"
            "|---|---|---|---|---|\n"
            f"| predict (one process) | {p['seconds']:.1f} s | {p['seconds'] / area:.1f} s/deg² | "
            f"{p['peak_mib']:.0f} MiB | – |\n"
            f"| survey, 1 worker | {s1['seconds']:.1f} s | {s1['seconds'] / area:.1f} s/deg² | "
            f"{s1['worker_peak_mib']:.0f} MiB per worker | {s1['max_rel_diff']:.1e} |\n"
            f"| survey, 2 workers | {s2['seconds']:.1f} s | {s2['seconds'] / area:.1f} s/deg² | "
            f"{s2['worker_peak_mib']:.0f} MiB per worker | {s2['max_rel_diff']:.1e} |\n\n"
            f"Speed-up of 2 workers over 1: {s1['seconds'] / s2['seconds']:.2f}× (target ≥ 1.6× where there are "
            "cores for it: on this 2-core machine one worker's TensorFlow already uses both cores, so two "
            "workers share them). Memory per worker is set by the block size (`--block-tiles`), not by the "
            "survey: a worker reads only its block's part of the input files.")
    write("survey", "Survey throughput on Dask", body, results)
