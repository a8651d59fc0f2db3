"""Benchmark: training steps/s at batch 8 (default model, alternating sim/real), input
pipeline throughput (target ≥ 3× the step rate) and checkpoint time."""

from _common import run_isolated, write

CODE = """
import json, tempfile, time
import tensorflow as tf
from galaxysr.training import TrainConfig, Trainer
out_dir = tempfile.mkdtemp()
config = TrainConfig(epochs=1, steps_per_epoch=200, out_dir=out_dir)
t = time.perf_counter(); trainer = Trainer(config, progress=False); setup = time.perf_counter() - t
trainer.run(max_steps=20)                      # traces both step functions
t = time.perf_counter(); trainer.run(max_steps=180); steps = 160 / (time.perf_counter() - t)
ds = trainer.sim_stream.dataset(8)
it = iter(ds); next(it)
t = time.perf_counter()
for _ in range(100): next(it)
sim_batches = 100 / (time.perf_counter() - t)
it = iter(trainer.real_stream.dataset(8)); next(it)
t = time.perf_counter()
for _ in range(100): next(it)
real_batches = 100 / (time.perf_counter() - t)
t = time.perf_counter(); trainer.manager.save(); ckpt = time.perf_counter() - t
print(json.dumps({"setup_s": setup, "steps_per_s": steps, "sim_batches_per_s": sim_batches,
                  "real_batches_per_s": real_batches, "checkpoint_s": ckpt,
                  "replicas": trainer.strategy.num_replicas_in_sync}))
"""

if __name__ == "__main__":
    r = run_isolated(CODE)
    body = (f"Default `TrainConfig` (batch 8, 128×128 tiles, 1 sim : 1 real), MirroredStrategy with "
            f"{r['replicas']} replica(s) on CPU. The step rate is over 160 steps, without validation or checkpoints.\n\n"
            f"| what | value |\n|---|---|\n| set-up (load + reproject 9 sim fields and the mock pair, build) | {r['setup_s']:.1f} s |\n"
            f"| training steps/s (alternating sim/real, batch 8) | {r['steps_per_s']:.2f} |\n"
            f"| input pipeline, simulated batches/s | {r['sim_batches_per_s']:.0f} ({r['sim_batches_per_s'] / r['steps_per_s']:.0f}× the step rate) |\n"
            f"| input pipeline, real batches/s | {r['real_batches_per_s']:.0f} ({r['real_batches_per_s'] / r['steps_per_s']:.0f}× the step rate) |\n"
            f"| checkpoint save | {r['checkpoint_s']:.2f} s |\n\n"
            "Target: pipeline ≥ 3× the step rate. The pipeline is measured on its own, while idle; in "
            "training it runs in parallel with the step (prefetch).")
    write("training", "Training throughput", body, r)
