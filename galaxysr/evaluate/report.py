"""Reports: Markdown tables of the scores, the figures, ``metrics.json``, the README block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..plots import METHOD_LABELS, evaluation_figures
from .metrics import TARGETS, binned_table, jsonable

def passes(name: str, value: float) -> bool:
    kind, target = TARGETS[name]
    if not np.isfinite(value):
        return False
    if kind == ">=":
        return value >= target
    if kind == "<=":
        return value <= target
    return abs(value - 1) <= target


def summary_table(results: dict) -> str:
    """Markdown table of the headline numbers of every method."""
    rows = ["| method | completeness ≥15 mJy | min purity | median offset ≥10 mJy | median S_out/S_true ≥9 mJy "
            "| S_out/S_true 5–9 mJy | output FWHM | peak/true, isolated | detections |",
            "|---|---|---|---|---|---|---|---|---|"]
    def cell(s, key, fmt):
        value = s[key]
        if key not in TARGETS or not np.isfinite(value):
            return fmt.format(value) if np.isfinite(value) else "–"
        return fmt.format(value) + (" ✓" if passes(key, value) else " ✗")

    for name, s in results["methods"].items():
        fwhm = cell(s, "output_fwhm_arcsec", "{:.1f}″") if "output_fwhm_arcsec" in s else "–"
        peak = f"{s['isolated']['peak_ratio']:.3f}" if np.isfinite(s.get("isolated", {}).get("peak_ratio", np.nan)) \
            else "–"
        rows.append(f"| {METHOD_LABELS.get(name, name)} | {cell(s, 'completeness_above_15mjy', '{:.1%}')} | "
                    f"{cell(s, 'min_purity', '{:.1%}')} | {cell(s, 'median_offset_arcsec_above_10mjy', '{:.2f}″')} | "
                    f"{cell(s, 'median_flux_ratio_above_9mjy', '{:.3f}')} | "
                    f"{cell(s, 'median_flux_ratio_5_9mjy', '{:.3f}')} | {fwhm} | {peak} | {s['n_detections']} |")
    return "\n".join(rows)


def per_bin_table(results: dict) -> str:
    """Markdown table of purity and median offset per flux bin for every method."""
    methods = results["methods"]
    bins = next(iter(methods.values()))["bins_mjy"]
    head = "| method | quantity | " + " | ".join(f"{lo:g}–{hi:g}" for lo, hi in zip(bins[:-1], bins[1:])) + " |"
    rows = [head, "|---|---|" + "---|" * (len(bins) - 1)]
    for name, s in methods.items():
        purity = [f"{p:.0%} ({n})" if n >= 5 else "–" for p, n in zip(s["purity"], s["n_detections_per_bin"])]
        offset = [f"{o:.2f}″" if np.isfinite(o) else "–" for o in s["median_offset_arcsec_per_bin"]]
        rows.append(f"| {METHOD_LABELS.get(name, name)} | purity | " + " | ".join(purity) + " |")
        rows.append("| | offset | " + " | ".join(offset) + " |")
    return "\n".join(rows)


#: Methods that are not baselines: the network itself (both catalogues) and the truth upper bound.
NOT_BASELINES = ("network", "network_psf", "network_sky", "truth")


def plain_table(results: dict) -> str:
    """Markdown table of the plain reading (:func:`~galaxysr.evaluate.metrics.plain_peaks`) of
    every method's map: purity per bin of peak value (detections in brackets), the minimum
    over bins with ≥ 5 detections, the median peak/true above 9 mJy and the bright isolated
    sources (> 20 mJy) it splits into two or more peaks within 8″."""
    plain = results.get("plain", {})
    if not plain:
        return ""
    bins = next(iter(plain.values()))["bins_mjy"]
    rows = ["| method | " + " | ".join(f"{lo:g}–{hi:g}" for lo, hi in zip(bins[:-1], bins[1:]))
            + " | min purity | peak S_out/S_true ≥9 mJy | bright sources split | peaks per bright source |",
            "|---|" + "---|" * (len(bins) - 1) + "---|---|---|---|"]
    for name, s in plain.items():
        cells = [f"{p:.0%} ({n})" if n >= 5 else "–" for p, n in zip(s["purity"], s["n_detections_per_bin"])]
        split = s["split"]
        purity = s["min_purity"]
        mark = (" ✓" if purity >= TARGETS["min_purity"][1] else " ✗") if np.isfinite(purity) else ""
        ok_split = " ✓" if split["n_split"] == 0 else " ✗"
        rows.append(f"| {METHOD_LABELS.get(name, name)} | " + " | ".join(cells)
                    + f" | {purity:.1%}{mark} | {s['median_flux_ratio_above_9mjy']:.3f} | "
                      f"{split['n_split']} of {split['n_sources']}{ok_split} | {split['peaks_per_source']:.2f} |")
    return "\n".join(rows)


def injection_table(results: dict) -> str:
    """Markdown table of injection–recovery: per scenario and injected flux, the response's
    FWHM, peak/true, integrated/true and median offset, ✓/✗ against the targets."""
    from .injection import INJECTION_TARGETS

    injection = results.get("injection")
    if not injection:
        return ""
    rows = ["| scenario | S_450 injected | n | FWHM | peak/true | integrated/true | median offset |",
            "|---|---|---|---|---|---|---|"]
    for name, stats in injection["scenarios"].items():
        kind = "sky" if name == "sky" else "noise"
        for flux, s in stats.items():
            def cell(q, fmt):
                value = s[q]
                text = fmt.format(value) if np.isfinite(value) else "–"
                for (lo, hi), quantity, low, high in INJECTION_TARGETS[kind]:
                    if quantity == q and lo <= float(flux) <= hi and np.isfinite(value):
                        text += " ✓" if low <= value <= high else " ✗"
                return text
            rows.append(f"| {name.replace('_', ' ')} | {float(flux):g} mJy | {s['n']} | {cell('fwhm_arcsec', '{:.2f}″')} | "
                        f"{cell('peak_ratio', '{:.3f}')} | {cell('integrated_ratio', '{:.3f}')} | "
                        f"{cell('median_offset_arcsec', '{:.2f}″')} |")
    return "\n".join(rows)


def bright_table(results: dict) -> str:
    """Markdown table of the bright-source check: per injected 250 µm flux, the 450 µm truth,
    peak/true and integrated/true, ✓ within 15 % of the truth (no clipping)."""
    bright = (results.get("injection") or {}).get("bright") or {}
    rows = ["| S_250 injected | S_450 true | n | peak/true | integrated/true |", "|---|---|---|---|---|"]
    for flux, s in bright.items():
        if not isinstance(s, dict):
            continue
        mark = lambda v: (f"{v:.3f}" + (" ✓" if abs(v - 1) <= 0.15 else " ✗")) if np.isfinite(v) else "–"
        rows.append(f"| {float(flux):g} mJy | {s['s450_mjy']:.0f} mJy | {s['n']} | {mark(s['peak_ratio'])} | "
                    f"{mark(s['integrated_ratio'])} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def baseline_comparison(results: dict) -> str:
    """Markdown table: the network against each baseline on every headline measure, with ✓
    where the network is better. Offsets are compared on the sources both recover
    (:func:`paired_offsets`); flux by the distance of the median ratio from 1."""
    methods, paired = results["methods"], results["paired_offsets"]
    net = methods["network"]
    baselines = [name for name in methods if name not in NOT_BASELINES]
    rows = ["| measure | " + " | ".join(f"vs {METHOD_LABELS.get(b, b)}" for b in baselines) + " |",
            "|---|" + "---|" * len(baselines)]

    def verdict(mine, theirs, fmt, better):
        if not (np.isfinite(mine) and np.isfinite(theirs)):
            return "–"
        return f"{fmt.format(mine)} vs {fmt.format(theirs)} " + ("✓" if better(mine, theirs) else "✗")

    measures = [
        ("completeness ≥15 mJy", lambda b: (net["completeness_above_15mjy"], methods[b]["completeness_above_15mjy"]),
         "{:.1%}", lambda a, b: a > b),
        ("min purity", lambda b: (net["min_purity"], methods[b]["min_purity"]), "{:.1%}", lambda a, b: a >= b),
        ("median offset ≥10 mJy, common sources", lambda b: (paired[b]["network_above_10mjy"],
                                                            paired[b]["other_above_10mjy"]),
         "{:.2f}″", lambda a, b: a < b),
        ("\\|median S_out/S_true − 1\\| ≥9 mJy", lambda b: (abs(net["median_flux_ratio_above_9mjy"] - 1),
                                                       abs(methods[b]["median_flux_ratio_above_9mjy"] - 1)),
         "{:.3f}", lambda a, b: a < b),
    ]
    for label, values, fmt, better in measures:
        rows.append(f"| {label} | " + " | ".join(verdict(*values(b), fmt, better) for b in baselines) + " |")
    rows.append("| common sources ≥10 mJy | " + " | ".join(str(paired[b]["n_above_10mjy"]) for b in baselines) + " |")
    return "\n".join(rows)


def paired_offset_table(results: dict) -> str:
    """Markdown table of median offsets, network / other method, on the sources both recover."""
    paired = results["paired_offsets"]
    bins = results["methods"]["network"]["bins_mjy"]
    rows = ["| network / method | " + " | ".join(f"{lo:g}–{hi:g}" for lo, hi in zip(bins[:-1], bins[1:])) + " |",
            "|---|" + "---|" * (len(bins) - 1)]
    for name, p in paired.items():
        cells = [f"{a:.2f}″ / {b:.2f}″ ({n})" if np.isfinite(a) else "–"
                 for n, a, b in zip(p["n_per_bin"], p["network_per_bin"], p["other_per_bin"])]
        rows.append(f"| {METHOD_LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


#: How each sky is introduced in reports.
SKY_TITLES = {"held_out": "Held-out sky (never drawn in training)",
              "training": "Training-distribution sky (held-out seeds)",
              "reference": "Reference sky of galaxysr ≤ 0.2 (held-out seeds)"}


def sky_comparison_table(runs: dict) -> str:
    """Markdown table: the network's headline numbers on each sky side by side."""
    keys = [("completeness ≥15 mJy", "completeness_above_15mjy", "{:.1%}"), ("min purity", "min_purity", "{:.1%}"),
            ("median offset ≥10 mJy", "median_offset_arcsec_above_10mjy", "{:.2f}″"),
            ("median S_out/S_true ≥9 mJy", "median_flux_ratio_above_9mjy", "{:.3f}"),
            ("median S_out/S_true 5–9 mJy", "median_flux_ratio_5_9mjy", "{:.3f}"),
            ("output FWHM (stacked, bright isolated)", "output_fwhm_arcsec", "{:.2f}″")]
    rows = ["| measure | " + " | ".join(SKY_TITLES.get(k, k) for k in runs) + " |", "|---|" + "---|" * len(runs)]
    for label, key, fmt in keys:
        cells = []
        for results in runs.values():
            value = results["methods"]["network"].get(key, float("nan"))
            mark = (" ✓" if passes(key, value) else " ✗") if key in TARGETS and np.isfinite(value) else ""
            cells.append(fmt.format(value) + mark if np.isfinite(value) else "–")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in (("peak/true, bright isolated", "peak_ratio"), ("integrated/true, bright isolated",
                                                                      "integrated_ratio")):
        rows.append(f"| {label} | " + " | ".join(f"{r['methods']['network']['isolated'][key]:.3f}"
                                                  for r in runs.values()) + " |")
    if all("network" in r.get("plain", {}) for r in runs.values()):
        rows.append("| plain reading: min purity | " + " | ".join(
            f"{r['plain']['network']['min_purity']:.1%}" for r in runs.values()) + " |")
        rows.append("| plain reading: peak S_out/S_true ≥9 mJy | " + " | ".join(
            f"{r['plain']['network']['median_flux_ratio_above_9mjy']:.3f}" for r in runs.values()) + " |")
        rows.append("| plain reading: bright isolated sources split | " + " | ".join(
            f"{r['plain']['network']['split']['n_split']} of {r['plain']['network']['split']['n_sources']}"
            for r in runs.values()) + " |")
    return "\n".join(rows)


def _sky_section(results: dict, out: Path, prefix: str, level: str = "##") -> list[str]:
    from .injection import INJECTION_TARGETS

    figures = evaluation_figures(results, out, prefix, INJECTION_TARGETS)
    lines = [f"Fields: {', '.join(Path(f).name for f in results['fields'])}; reference: "
             f"{results.get('reference', 'simulated truth catalogue (450 µm)')}; baselines use the 450/250 colour "
             f"{results.get('colour_450_250', float('nan')):.2f}.", "", summary_table(results), ""]
    lines += [f"{level}# Per flux bin", "", "Purity (by measured flux; detections in brackets) and median position "
              "offset (by true flux) where a method has ≥ 5 detections / ≥ 3 matches — the comparison at equal "
              "flux, since methods reach different depths.", "", per_bin_table(results), ""]
    lines += [f"{level}# Against the baselines", "", "The network against each classical baseline on the headline "
              "measures (network value vs baseline value; ✓ where the network is better). Position offsets are "
              "compared on the reference sources both methods recover, so a baseline that finds only the easiest "
              "sources of a bin is not favoured by that.", "", baseline_comparison(results), "",
              "Median offsets on the common sources, by reference flux (mJy): network / other method "
              "(number of common sources).", "", paired_offset_table(results), ""]
    if results.get("plain"):
        lines += [f"{level}# The map read the plain way", "", "Every local maximum in a 3 × 3 box above 3σ of the "
                  "map's robust scatter, its pixel value as the flux, matched one-to-one to the truth within 7.9″, "
                  "brightest first — what a quick script or the eye finds, with no PSF fit or grouping to hide a "
                  "checkerboard or a blurred source. Purity by peak value (detections in brackets).", "",
                  plain_table(results), ""]
    if results.get("injection"):
        inj = results["injection"]
        colours = ", ".join(f"{f} mJy: " + "/".join(f"{c[b]:.2f}" for b in c) for f, c in inj["colours"].items())
        lines += [f"{level}# Injection–recovery", "", f"{inj['n']} isolated point sources of "
                  f"{', '.join(f'{f:g}' for f in inj['config']['fluxes_mjy'])} mJy at 450 µm, ≥ "
                  f"{inj['config']['spacing_arcsec']:g}″ apart, with SPIRE colours S_250/S_450, S_350/S_450, "
                  f"S_500/S_450 of this sky's own sources of that flux ({colours}), injected into white-noise maps "
                  f"({', '.join(f'{n:g}×' for n in inj['config']['noise_levels'])} HerMES-deep) and into this sky's "
                  "maps (`sky`); measured on the output of the injected maps minus the output without them. Targets: "
                  "noise-only 10–40 mJy FWHM 7.9–8.3″, peak/true and integrated/true 0.95–1.05, offset ≤ 1″, 5 mJy "
                  "within 15 %; in the sky ≥ 20 mJy FWHM ≤ 8.5″, peak/true 0.90–1.10.", "", injection_table(results),
                  ""]
        if bright_table(results):
            lines += ["Bright sources (local and lensed galaxies): point sources of these 250 µm fluxes, with the "
                      "median colours of this sky's 20 brightest sources, injected into this sky's maps "
                      f"{inj['config'].get('bright_spacing_arcsec', 180):g}″ apart; target: 450 µm flux within 15 % "
                      f"of the truth at 2 Jy (no ceiling). Largest output pixel: "
                      f"{inj['bright'].get('max_output_mjy', float('nan')):.0f} mJy/beam.", "", bright_table(results), ""]
    if results.get("head"):
        lines += [f"{level}# The catalogue head's honesty", "", "Every detection the head decodes (any p_real), "
                  "matched one to one to the truth within 7.9″: per decile of p_real, its mean and the fraction of "
                  "detections that are real (target: within 0.05 in every decile with ≥ 20 detections); and the "
                  "median offset / pos_err of the real ones (a 2-D Gaussian's 1.18 when pos_err is honest).", "",
                  head_table(results["head"]), ""]
    if "uncertainty" in results:
        lines += [f"{level}# Uncertainties", "", "The catalogue a user gets (`--catalogue`, the "
                  "model's default method: the head's at p_real ≥ 0.7, or PSF fits at S/N ≥ 4) with its `flux_err`, "
                  "matched to the truth; by true flux. Where the field "
                  "records its simulation, the same sky is observed again with independent noise and the two "
                  "catalogues are compared (bins of the first observation's flux).", "",
                  uncertainty_table(results), ""]
    lines += [f"![{name}]({Path(path).name})" for name, path in figures.items()] + [""]
    return lines


def head_table(head: dict) -> str:
    """Markdown reliability table of the catalogue head (:func:`galaxysr.evaluate.runs.head_summary`)."""
    rows = ["| p_real decile | detections | mean p_real | fraction real | difference |", "|---|---|---|---|---|"]
    for d in head["reliability"]:
        diff = d["fraction_real"] - d["mean_p_real"]
        rows.append(f"| {d['p_lo']:.1f}–{d['p_lo'] + 0.1:.1f} | {d['n']} | {d['mean_p_real']:.3f} | "
                    f"{d['fraction_real']:.3f} | {diff:+.3f}{' ✓' if abs(diff) <= 0.05 else ' ✗'} |")
    ratio = head["offset_over_pos_err_median"]
    rows += ["", f"Median offset / pos_err of the {head['n_real']} real detections: {ratio:.2f} (2-D Gaussian: "
                 f"{head['gaussian_median']:.2f}{' ✓' if abs(ratio - head['gaussian_median']) <= 0.1 else ' ✗'})."]
    return "\n".join(rows)


def uncertainty_table(results: dict) -> str:
    """Markdown table of the error calibration per true-flux bin (and the run-to-run check)."""
    u = results["uncertainty"]
    bins = u["bins_mjy"]
    head = "| quantity | " + " | ".join(f"{lo:g}–{hi:g} mJy" for lo, hi in zip(bins[:-1], bins[1:])) + " |"
    rows = [head, "|---|" + "---|" * (len(bins) - 1)]

    def fmt(values, spec, ok=None):
        cells = []
        for v in values:
            if v is None or not np.isfinite(v):
                cells.append("–")
            else:
                cells.append(spec.format(v) + ("" if ok is None else (" ✓" if ok(v) else " ✗")))
        return " | ".join(cells)

    rows.append(f"| matched sources | {' | '.join(str(n) for n in u['n'])} |")
    rows.append("| robust std of z = (S_out − S_true)/σ (target 0.9–1.1) | "
                + fmt(u["z_robust_std"], "{:.2f}", lambda v: 0.9 <= v <= 1.1) + " |")
    rows.append("| median z | " + fmt(u["z_median"], "{:+.2f}") + " |")
    rows.append("| truth within ±1σ (target 63–73 %) | "
                + fmt(u["coverage_68"], "{:.0%}", lambda v: 0.63 <= v <= 0.73) + " |")
    rows.append("| truth within the deboosted 16–84 % | " + fmt(u["deboosted_coverage_68"], "{:.0%}") + " |")
    if "repeat" in u:
        r = u["repeat"]
        rows.append(f"| sources in both observations (by S_1) | {' | '.join(str(n) for n in r['n'])} |")
        rows.append("| robust std of (S_1 − S_2)/√(σ_1² + σ_2²) (target 0.8–1.2) | "
                    + fmt(r["d_robust_std"], "{:.2f}", lambda v: 0.8 <= v <= 1.2) + " |")
    return "\n".join(rows)


def _payload(results: dict) -> dict:
    """Binned and summary numbers only; the per-source lists went into the figures."""
    per_source = ("offsets_arcsec", "matched_true_flux_mjy", "flux_ratio", "matched_reference_index")
    payload = {k: v for k, v in results.items() if not k.startswith("_")}
    payload["methods"] = {name: {k: v for k, v in s.items() if k not in per_source}
                          for name, s in results["methods"].items()}
    if "plain" in results:
        payload["plain"] = {name: {k: v for k, v in s.items() if k not in per_source}
                            for name, s in results["plain"].items()}
    if "injection" in results:
        payload["injection"] = {k: v for k, v in results["injection"].items() if not k.startswith("_")}
    payload["per_bin"] = {name: {col: {"unit": str(t[col].unit) if hasattr(t[col], "unit") else "",
                                       "values": np.asarray(getattr(t[col], "value", t[col])).tolist()}
                                 for col in t.colnames}
                          for name, t in ((n, binned_table(s)) for n, s in results["methods"].items())}
    return jsonable(payload)


def write_report(runs: dict, out: str | Path, title: str = "galaxysr evaluation") -> Path:
    """``report.md``, ``metrics.json`` and PNG figures in folder ``out``.

    ``runs`` maps a sky name (:data:`SKIES`, or any label) to :func:`evaluate_simulated` /
    :func:`evaluate_real` results; with several skies the report opens with the network's
    numbers on each side by side.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({sky: _payload(r) for sky, r in runs.items()}, indent=1))
    model = next(iter(runs.values()))["model"]
    lines = [f"# {title}", "", f"Model `{model['name']}` (sha256 {model['sha256']}).", "",
             "Targets on the held-out sky: completeness ≥ 95 % above 15 mJy; purity ≥ 87 % in every flux bin with "
             "≥ 5 detections; median offset ≤ 1.5″ above 10 mJy; median S_out/S_true within 10 % of 1 above 9 mJy "
             "and within 15 % at 5–9 mJy; stacked output beam ≤ 8.3″; better than every baseline on completeness "
             "and flux. ✓/✗ mark each target. Fluxes are read off the maps (PSF fits with the map's stated beam; "
             "the network's times its flux curve, measured after training on the calibration fields).",
             ""]
    if len(runs) > 1:
        lines += ["## The network on each sky", "", sky_comparison_table(runs), ""]
    for sky, results in runs.items():
        if len(runs) > 1:
            lines += [f"## {SKY_TITLES.get(sky, sky)}", ""]
        lines += _sky_section(results, out, f"{sky}_" if len(runs) > 1 else "", "##" if len(runs) > 1 else "")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def update_readme(readme: str | Path, results: dict, report: Path) -> None:
    """Replace the block between ``<!-- evaluation:start -->`` and ``<!-- evaluation:end -->``."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = "<!-- evaluation:start -->", "<!-- evaluation:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{readme}: no {start} … {end} block to update")
    block = f"{start}\n{summary_table(results)}\n\nFull report: [{report}]({report})\n{end}"
    readme.write_text(text[: text.index(start)] + block + text[text.index(end) + len(end):])
