"""Shared helpers for benchmarks: machine description, peak memory, writing results to docs/."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from datetime import date
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def machine() -> str:
    import numpy

    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:  # benchmarks without TF still describe the machine
        tf_version = "n/a"
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, no GPU, Python {platform.python_version()}, "
            f"TensorFlow {tf_version}, NumPy {numpy.__version__}; measured {date.today().isoformat()}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh Python; returns that JSON."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(name: str, title: str, body: str, data: dict) -> Path:
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"{name}.json").write_text(json.dumps({"machine": machine(), **data}, indent=1))
    path = DOCS / f"{name}.md"
    path.write_text(f"# {title}\n\nMachine: {machine()}.\n\n{body}\n\nRegenerate: `python benchmarks/{name}.py`.\n")
    print(path.read_text())
    return path
