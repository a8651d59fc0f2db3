"""The table of training runs × seeds in docs/training.md ("Robust training").

``python benchmarks/training_modes.py --head LINES.jsonl NAME=RUN_DIR ...`` does the same for catalogue-head
runs (0.5 on) from the lines of ``benchmarks/catalogue_head.py`` (the head's catalogue at the default
p_real ≥ 0.7, the drawn map, the reliability of p_real).

``python benchmarks/training_modes.py [--held-out LINES.jsonl] NAME=RUN_DIR[:REPORT_DIR] ...`` reads
each run's model (``RUN_DIR/model``: calibration beam and peak/true, health check, loss spikes,
training time) and, when given, the held-out evaluation written by
``galaxysr evaluate --sky held_out --model RUN_DIR/model --out REPORT_DIR`` (catalogue
completeness above 15 mJy, S_out/S_true above 9 mJy, stacked beam, purity) — and, from the lines
of ``benchmarks/held_out_catalogue.py``, the held-out catalogue with the model's flux curves, in
place of the report's. Prints one Markdown row per run, then the mean and the largest deviation
from it of each measure.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path, report: Path | None, held_out: dict | None = None) -> dict:
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
    out["cal_flux"] = next((v for k, v in checks.items() if k.startswith("catalogue S_out/S_true above 9 mJy")), None)
    if report is not None and (report / "metrics.json").exists():
        network = json.loads((report / "metrics.json").read_text())["held_out"]["methods"]["network"]
        out.update(completeness=network["completeness_above_15mjy"], flux=network["median_flux_ratio_above_9mjy"],
                   held_beam=network["output_fwhm_arcsec"], purity=network["min_purity"])
    if held_out is not None:  # the catalogue as the model's flux curves make it (scatter reading, as the report)
        out.update(completeness=held_out["scatter"]["completeness_above_15mjy"],
                   flux=held_out["scatter"]["median_flux_ratio_above_9mjy"],
                   flux_error_reading=held_out["error"]["median_flux_ratio_above_9mjy"],
                   flux_5_9=held_out["scatter"]["median_flux_ratio_5_9mjy"])
    return out


def head_row(run: Path, head: dict) -> dict:
    """A catalogue-head run: its calibration (beam, peak/true of the per-pixel map, health, spikes,
    time) and, from a line of ``benchmarks/catalogue_head.py``, the held-out catalogue the product
    writes (the head's at the default p_real ≥ 0.7) and its drawn map."""
    out = row(run, None)
    cat = head["head_preal0.7"]
    out.update(completeness=cat["completeness_above_15mjy"], completeness_5_10=cat["completeness_5_10mjy"],
               purity=cat["min_purity_above_5mjy"], flux=cat["median_flux_ratio_above_9mjy"],
               flux_5_9=cat["median_flux_ratio_5_9mjy"], offset=cat["median_offset_arcsec_above_10mjy"],
               drawn_beam=head["primary_map"]["fwhm_arcsec"], drawn_peak=head["primary_map"]["peak_ratio"],
               reliability=head["reliability"]["max_abs_difference"], psf_completeness=head["psf"]["completeness_above_15mjy"])
    return out


def head_table(rows: dict) -> None:
    print("| run | seed | calibration beam | peak/true | held-out completeness ≥ 15 mJy | 5–10 mJy | min purity ≥ 5 mJy "
          "| S_out/S_true ≥ 9 mJy | 5–9 mJy | offset ≥ 10 mJy | drawn beam, peak/true | p_real worst decile | "
          "PSF completeness ≥ 15 mJy | loss spikes | health | training |")
    print("|---" * 16 + "|")
    for name, r in rows.items():
        print(f"| {name} | {r['seed']} | {fmt(r['beam'], '.2f')}″ | {fmt(r['peak'], '.3f')} | {r['completeness']:.3f} | "
              f"{r['completeness_5_10']:.3f} | {r['purity']:.3f} | {r['flux']:.3f} | {r['flux_5_9']:.3f} | "
              f"{r['offset']:.2f}″ | {r['drawn_beam']:.2f}″, {r['drawn_peak']:.3f} | ±{r['reliability']:.3f} | "
              f"{r['psf_completeness']:.3f} | {r['spikes']} | {health(r)} | {r['minutes']:.1f} min |")
    spread(rows, ("beam", "peak", "completeness", "completeness_5_10", "purity", "flux", "flux_5_9", "offset"))


def health(r: dict) -> str:
    """The health check's verdict as a table cell."""
    return "passed" if r["health"] else "FAILED" if r["health"] is False else "–"


def spread(rows: dict, keys) -> None:
    """For each measure, its mean over the runs and the largest deviation from it (Markdown list)."""
    print()
    for key in keys:
        values = [r[key] for r in rows.values() if r.get(key) is not None]
        if len(values) > 1:
            mean = sum(values) / len(values)
            print(f"- {key}: mean {mean:.3f}, largest deviation from the mean {max(abs(v - mean) for v in values):.3f}")


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv: list[str]) -> int:
    held_out = {}
    if argv[:1] == ["--head"]:  # catalogue-head runs, read by benchmarks/catalogue_head.py
        heads = {Path(json.loads(line)["model"]).resolve(): json.loads(line)
                 for line in Path(argv[1]).read_text().splitlines() if line.strip()}
        head_table({name: head_row(Path(run), heads[(Path(run) / "model").resolve()])
                    for name, _, run in (arg.partition("=") for arg in argv[2:])})
        return 0
    if argv[:1] == ["--held-out"]:
        for line in Path(argv[1]).read_text().splitlines():
            record = json.loads(line)
            held_out[Path(record["model"]).resolve()] = record
        argv = argv[2:]
    rows = {}
    for arg in argv:
        name, _, paths = arg.partition("=")
        run, _, report = paths.partition(":")
        rows[name] = row(Path(run), Path(report) if report else None, held_out.get((Path(run) / "model").resolve()))
    print("| run | seed | calibration beam | peak/true | calibration completeness ≥ 15, flux ≥ 9 | "
          "held-out completeness ≥ 15 mJy | held-out S_out/S_true ≥ 9 mJy | 5–9 mJy | ≥ 9 mJy, ERROR reading | "
          "held-out beam | min purity | loss spikes | health | training |")
    print("|---" * 14 + "|")
    for name, r in rows.items():
        print(f"| {name} | {r['seed']} | {fmt(r['beam'], '.2f')}″ | {fmt(r['peak'], '.3f')} | "
              f"{fmt(r['cal_completeness'], '.3f')}, {fmt(r['cal_flux'], '.3f')} | {fmt(r.get('completeness'), '.3f')} | "
              f"{fmt(r.get('flux'), '.3f')} | {fmt(r.get('flux_5_9'), '.3f')} | {fmt(r.get('flux_error_reading'), '.3f')} | "
              f"{fmt(r.get('held_beam'), '.2f')}″ | {fmt(r.get('purity'), '.3f')} | "
              f"{r['spikes']} | {health(r)} | {r['minutes']:.1f} min |")
    spread(rows, ("beam", "peak", "completeness", "flux", "flux_5_9", "flux_error_reading"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
