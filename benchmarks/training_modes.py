"""The table of training runs × seeds in docs/training.md ("Robust training").

``python benchmarks/training_modes.py NAME=RUN_DIR[:REPORT_DIR] ...`` reads each run's model
(``RUN_DIR/model``: calibration beam and peak/true, health check, loss spikes, training time)
and, when given, the held-out evaluation written by
``galaxysr evaluate --sky held_out --model RUN_DIR/model --out REPORT_DIR`` (catalogue
completeness above 15 mJy, S_out/S_true above 9 mJy, stacked beam), and prints one Markdown row
per run, then the spread (max − min) of each column.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path, report: Path | None) -> dict:
    model = run / "model"
    config = json.loads((model / "config.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    calibration = model / "calibration.json"  # galaxysr ≥ 0.4; before, the entry of config.json
    beam = (json.loads(calibration.read_text()) if calibration.exists() else config).get("effective_beam") or {}
    out = {"beam": beam.get("fwhm_arcsec"), "peak": beam.get("peak_ratio"),
           "health": metrics.get("health", {}).get("ok"),
           "spikes": sum(s["kind"] != "valid" for s in metrics.get("loss_spikes", [])),
           "minutes": metrics.get("train_seconds", float("nan")) / 60,
           "seed": config["train"]["seed"]}
    checks = {c["name"]: c["value"] for c in metrics.get("health", {}).get("checks", [])}
    out["cal_completeness"] = checks.get("catalogue completeness above 15 mJy")
    out["cal_flux"] = checks.get("catalogue S_out/S_true above 9 mJy")
    if report is not None and (report / "metrics.json").exists():
        network = json.loads((report / "metrics.json").read_text())["held_out"]["methods"]["network"]
        out.update(completeness=network["completeness_above_15mjy"], flux=network["median_flux_ratio_above_9mjy"],
                   held_beam=network["output_fwhm_arcsec"], purity=network["min_purity"])
    return out


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv: list[str]) -> int:
    rows = {}
    for arg in argv:
        name, _, paths = arg.partition("=")
        run, _, report = paths.partition(":")
        rows[name] = row(Path(run), Path(report) if report else None)
    print("| run | seed | calibration beam | peak/true | calibration completeness ≥ 15, flux ≥ 9 | "
          "held-out completeness ≥ 15 mJy | held-out S_out/S_true ≥ 9 mJy | held-out beam | min purity | "
          "loss spikes | health | training |")
    print("|---" * 12 + "|")
    for name, r in rows.items():
        print(f"| {name} | {r['seed']} | {fmt(r['beam'], '.2f')}″ | {fmt(r['peak'], '.3f')} | "
              f"{fmt(r['cal_completeness'], '.3f')}, {fmt(r['cal_flux'], '.3f')} | {fmt(r.get('completeness'), '.3f')} | "
              f"{fmt(r.get('flux'), '.3f')} | {fmt(r.get('held_beam'), '.2f')}″ | {fmt(r.get('purity'), '.3f')} | "
              f"{r['spikes']} | {'passed' if r['health'] else 'FAILED' if r['health'] is False else '–'} | "
              f"{r['minutes']:.1f} min |")
    for key in ("beam", "peak", "completeness", "flux"):
        values = [r[key] for r in rows.values() if r.get(key) is not None]
        if len(values) > 1:
            mean = sum(values) / len(values)
            print(f"{key}: mean {mean:.3f}, largest deviation from the mean {max(abs(v - mean) for v in values):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
