"""Benchmark: time to extract and evaluate a 1 deg² field (network + baselines)."""

from _common import run_isolated, write

CODE = """
import json, tempfile, time
from galaxysr.evaluate import EvalConfig, evaluate_simulated, evaluation_fields
config = EvalConfig(seeds=(2101,), area_deg2=1.0, field_dir=tempfile.mkdtemp())
t = time.perf_counter(); folders = evaluation_fields(config, progress=False); sim = time.perf_counter() - t
t = time.perf_counter(); results = evaluate_simulated(folders, config=config, progress=False); total = time.perf_counter() - t
print(json.dumps({"simulate_s": sim, "evaluate_s": total,
                  "detections": {k: v["n_detections"] for k, v in results["methods"].items()}}))
"""

if __name__ == "__main__":
    r = run_isolated(CODE)
    body = (f"| what | value |\n|---|---|\n| simulate the held-out 1 deg² field | {r['simulate_s']:.1f} s |\n"
            f"| predict + 4 baselines + extraction (PSF photometry) + matching + scores, 1 deg² | {r['evaluate_s']:.1f} s |\n"
            f"| detections per method | {r['detections']} |")
    write("evaluate", "Extraction and evaluation of a 1 deg² field", body, r)
