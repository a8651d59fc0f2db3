"""Screen a training setting on the first N steps: per-step losses and gradient norms.

``python benchmarks/training_screen.py OUT --seed 0 --steps 900 [train.py options]`` trains
the default configuration (with the given train.py options) for ``--steps`` steps into OUT and
writes ``OUT/trace.json``: every step's kind, total loss and gradient norm, and each epoch's
validation loss. Used to find which early signs tell a spread run from a compact one
(docs/training.md, "Robust training").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=900)
    args, rest = parser.parse_known_args(argv)

    from galaxysr.cli import build_parser
    from galaxysr import cli

    train_args = build_parser().parse_args(["train", "--out", args.out, "--no-progress", *rest])
    config = cli._train_config(train_args)
    from galaxysr.training import Trainer

    trainer = Trainer(config, progress=False)
    trace = []
    for kind, fn in list(trainer._step_fns.items()):
        def wrapped(iterator, fn=fn, kind=kind):
            logs = fn(iterator)
            trace.append({"kind": kind, "total": float(logs["total"]), "grad_norm": float(logs["grad_norm"])})
            return logs
        trainer._step_fns[kind] = wrapped
    started = time.perf_counter()
    summary = trainer.run(max_steps=args.steps)
    out = {"config": config.to_dict(), "seconds": time.perf_counter() - started, "steps": trace,
           "history": summary["history"]}
    Path(args.out, "trace.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
