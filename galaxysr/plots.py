"""Figures for evaluation reports and docs (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .instruments import BANDS, TARGET_BAND

__all__ = ["METHOD_LABELS", "COLOURS", "evaluation_figures", "injection_figure", "reliability_diagram", "field_panels", "completeness_purity", "flux_recovery",
           "offsets", "beams", "counts_figure", "field_bands_figure"]

METHOD_LABELS = {"network": "galaxysr network", "network_sky": "galaxysr network, sky-model components",
                 "network_psf": "galaxysr network, PSF fits on its per-pixel map",
                 "native_250": "SPIRE 250 native × colour",
                 "richardson_lucy": "Richardson–Lucy 250", "wiener": "Wiener 250",
                 "truth": f"truth ⊗ {BANDS[TARGET_BAND].fwhm.value:g}″ beam (upper bound)"}
COLOURS = {"network": "C3", "network_sky": "C4", "network_psf": "C5", "native_250": "C0", "richardson_lucy": "C1", "wiener": "C2", "truth": "k", "scuba2": "k"}


def _subplots(*args, **kwargs):
    """(Figure, axes) drawn by the Agg canvas directly — no pyplot, so a user's
    matplotlib backend and open figures are never touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _finish(fig, path: Path, dpi: int = 90) -> Path:
    """Lay out and write a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _log_flux_axis(ax):
    """Log axis in mJy with plain-number ticks (no 2×10¹ clutter)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([3, 5, 10, 20, 50, 100])


def _label(name):
    return METHOD_LABELS.get(name, name)


def evaluation_figures(results: dict, out: Path, prefix: str = "", injection_targets: dict | None = None
                       ) -> dict[str, Path]:
    """Write the report's PNGs into ``out`` (file names start with ``prefix``); returns
    {title: path}. ``injection_targets`` (:data:`galaxysr.evaluate.injection.INJECTION_TARGETS`,
    passed in so that this module does not reach back into ``evaluate``) shades the target
    ranges of the injection figure."""
    figures = {}
    example = results.get("_example")
    if example is not None:
        figures["input / output / truth"] = field_panels(example, out / f"{prefix}fields.png")
    figures["completeness and purity"] = completeness_purity(results, out / f"{prefix}completeness_purity.png")
    figures["flux recovery"] = flux_recovery(results, out / f"{prefix}flux.png")
    figures["position offsets"] = offsets(results, out / f"{prefix}offsets.png")
    figures["output beam"] = beams(results, out / f"{prefix}psf.png")
    if results.get("_z"):
        figures["error calibration"] = z_histograms(results, out / f"{prefix}z.png")
    if results.get("head", {}).get("reliability"):
        figures["catalogue head reliability"] = reliability_diagram(results["head"], out / f"{prefix}reliability.png")
    if results.get("injection"):
        figures["injection–recovery"] = injection_figure(results["injection"], out / f"{prefix}injection.png",
                                                         injection_targets or {})
    return figures


def reliability_diagram(head: dict, path: Path) -> Path:
    """The catalogue head's p_real against the fraction of its detections that are real, per decile."""
    fig, ax = _subplots(figsize=(4.2, 4.0))
    rows = head["reliability"]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="calibrated")
    ax.fill_between([0, 1], [-0.05, 0.95], [0.05, 1.05], color="0.9", label="±0.05")
    ax.plot([r["mean_p_real"] for r in rows], [r["fraction_real"] for r in rows], "o-", color=COLOURS["network"],
            label="catalogue head")
    for r in rows:
        ax.annotate(str(r["n"]), (r["mean_p_real"], r["fraction_real"]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="p_real (calibrated on the training distribution)",
           ylabel="fraction of detections that are real")
    ax.legend(loc="upper left", fontsize=7)
    return _finish(fig, path)


def injection_figure(injection: dict, path: Path, targets: dict) -> Path:
    """Injection–recovery: FWHM, peak/true, integrated/true and offset against the injected
    450 µm flux, one line per scenario, target ranges shaded; and the stacked response of the
    brightest injected sources in the first scenario. ``targets``: scenario kind (``noise``,
    ``sky``) → ((flux range), quantity, low, high) target ranges, shaded."""
    quantities = [("fwhm_arcsec", "FWHM of the response [″]"), ("peak_ratio", "peak / true"),
                  ("integrated_ratio", "integrated / true"), ("median_offset_arcsec", "median offset [″]")]
    fig, axes = _subplots(1, len(quantities), figsize=(15, 3.6))
    for k, (name, stats) in enumerate(injection["scenarios"].items()):
        flux = np.array([float(f) for f in stats])
        for ax, (q, _) in zip(axes, quantities):
            ax.plot(flux, [stats[f][q] for f in stats], marker="o", ms=4, color=f"C{k}",
                    label=name.replace("_", " "))
    for ax, (q, title) in zip(axes, quantities):
        for kind, style in (("noise", dict(color="grey", alpha=0.15)), ("sky", dict(color="C2", alpha=0.1))):
            for (lo, hi), quantity, low, high in targets.get(kind, ()):
                if quantity == q and lo == hi:
                    continue
                if quantity == q:
                    ax.fill_between([lo * 0.9, hi * 1.1], max(low, 0), high, **style)
        _log_flux_axis(ax)
        ax.set_xlabel("injected S$_{450}$ [mJy]")
        ax.set_title(title)
    axes[0].axhline(BANDS[TARGET_BAND].fwhm.value, color="k", ls="--", lw=1)
    axes[0].legend(fontsize=7)
    return _finish(fig, path)


def z_histograms(results: dict, path: Path) -> Path:
    """Histograms of z = (S_out − S_true)/σ in flux bins, against the unit Gaussian."""
    z = np.asarray(results["_z"]["z"], float)
    flux = np.asarray(results["_z"]["flux_true"], float)
    groups = [(5, 9), (9, 15), (15, 1000)]
    fig, axes = _subplots(1, len(groups), figsize=(12, 3.6), sharey=True)
    grid = np.linspace(-5, 5, 200)
    for ax, (lo, hi) in zip(axes, groups):
        sel = (flux >= lo) & (flux < hi) & np.isfinite(z)
        ax.hist(np.clip(z[sel], -5, 5), bins=np.linspace(-5, 5, 31), density=True, histtype="step",
                color=COLOURS["network"], label=f"{sel.sum()} sources")
        ax.plot(grid, np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), "k--", lw=1, label="unit Gaussian")
        ax.set_title(f"true S$_{{450}}$ {lo}–{hi if hi < 1000 else '∞'} mJy")
        ax.set_xlabel("(S$_{out}$ − S$_{true}$) / σ")
        ax.legend(fontsize=7)
    return _finish(fig, path)


def field_panels(example: dict, path: Path, size_pixels: int = 180) -> Path:
    """SPIRE 250 input, network output and 450 µm truth (or SCUBA-2) of one field, centre cut."""
    from .maps import reproject_map

    maps = example["maps"]
    network = maps["network"]
    cy, cx = network.shape[0] // 2, network.shape[1] // 2
    h = min(size_pixels // 2, cy, cx)
    sl = (slice(cy - h, cy + h), slice(cx - h, cx + h))
    field = example["field"]
    m250 = reproject_map(field["spire_250"].to("mJy/beam"), network.wcs, network.shape)
    reference_name = "truth" if "truth" in maps else "scuba2"
    panels = [("SPIRE 250 µm input", m250.data), ("galaxysr 450 µm output", network.data),
              ("450 µm truth ⊗ 7.9″ beam" if reference_name == "truth" else "SCUBA-2 450 µm",
               maps[reference_name].data)]
    fig, axes = _subplots(1, 3, figsize=(13, 4.4))
    for ax, (title, data) in zip(axes, panels):
        cut = data[sl]
        vmax = np.nanpercentile(cut, 99.7)
        im = ax.imshow(cut, origin="lower", cmap="inferno", vmin=min(0, np.nanpercentile(cut, 1)), vmax=vmax)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, label="mJy/beam")
    side = 2 * h * network.pixel_scale.to_value("arcmin")
    fig.suptitle(f"{side:.1f}′ × {side:.1f}′ cut-out")
    return _finish(fig, path)


def completeness_purity(results: dict, path: Path) -> Path:
    fig, (a, b) = _subplots(1, 2, figsize=(11, 4))
    for name, s in results["methods"].items():
        style = dict(color=COLOURS.get(name), marker="o", ms=3, label=_label(name))
        a.plot(s["bin_centres_mjy"], s["completeness"], **style)
        b.plot(s["bin_centres_mjy"], s["purity"], **style)
    for ax, title, target in ((a, "completeness (by true 450 µm flux)", 0.95), (b, "purity (by measured flux)", 0.87)):
        ax.axhline(target, color="grey", ls=":", lw=1)
        _log_flux_axis(ax)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("S$_{450}$ [mJy]")
        ax.set_title(title)
    a.legend(fontsize=8)
    return _finish(fig, path)


def flux_recovery(results: dict, path: Path) -> Path:
    fig, ax = _subplots(figsize=(6.5, 4.2))
    for name, s in results["methods"].items():
        stats = np.array(s["flux_ratio_16_50_84"], float)
        x = np.array(s["bin_centres_mjy"])
        ax.plot(x, stats[:, 1], color=COLOURS.get(name), marker="o", ms=3, label=_label(name))
        if name == "network":
            ax.fill_between(x, stats[:, 0], stats[:, 2], color=COLOURS[name], alpha=0.2, label="network 16–84 %")
    ax.axhline(1, color="grey", lw=1)
    ax.axhspan(0.9, 1.1, color="grey", alpha=0.1)
    _log_flux_axis(ax)
    ax.set_ylim(0, 2.5)
    ax.set_xlabel("true S$_{450}$ [mJy]")
    ax.set_ylabel("S$_{out}$ / S$_{true}$ (median)")
    ax.legend(fontsize=7)
    return _finish(fig, path)


def offsets(results: dict, path: Path) -> Path:
    fig, ax = _subplots(figsize=(6.5, 4.2))
    radius = results["config"].get("match_radius_arcsec") or BANDS[TARGET_BAND].fwhm.value
    bins = np.linspace(0, radius, 17)
    for name, s in results["methods"].items():
        if s["offsets_arcsec"]:
            ax.hist(s["offsets_arcsec"], bins=bins, histtype="step", density=True, color=COLOURS.get(name),
                    label=_label(name))
    ax.set_xlabel("position offset to matched source [arcsec]")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return _finish(fig, path)


def beams(results: dict, path: Path) -> Path:
    """Radial profiles of the fitted stacked output beams vs the SCUBA-2 beam."""
    fig, ax = _subplots(figsize=(6.5, 4.2))
    r = np.linspace(0, 30, 200)
    target = BANDS[TARGET_BAND].fwhm.value
    ax.plot(r, np.exp(-4 * np.log(2) * r**2 / target**2), "k--", label=f"SCUBA-2 450 beam ({target}″)")
    for name, s in results["methods"].items():
        fwhm = s.get("output_fwhm_arcsec", float("nan"))
        if np.isfinite(fwhm):
            ax.plot(r, np.exp(-4 * np.log(2) * r**2 / fwhm**2), color=COLOURS.get(name),
                    label=f"{_label(name)}: {fwhm:.1f}″")
    ax.set_xlabel("radius [arcsec]")
    ax.set_ylabel("normalised profile (Gaussian fit to stack)")
    ax.legend(fontsize=7)
    return _finish(fig, path)


def counts_figure(path: Path, area_deg2: float = 2.0, seed: int = 11) -> Path:
    """Simulated differential counts at 250/350/500/450 µm against the literature tables."""
    from importlib.resources import files

    from astropy import units as u
    from astropy.table import Table

    from .sky import differential_counts, draw_galaxies

    cat = draw_galaxies(area_deg2 * u.deg**2, np.random.default_rng(seed))
    counts_dir = files("galaxysr") / "data" / "counts"
    refs = {"spire_250": ["bethermin2012_spire250", "oliver2010_spire250", "glenn2010_spire250"],
            "spire_350": ["bethermin2012_spire350", "oliver2010_spire350", "glenn2010_spire350"],
            "spire_500": ["bethermin2012_spire500", "oliver2010_spire500", "glenn2010_spire500"],
            "scuba2_450": ["wang2017_scuba450"]}
    edges = np.geomspace(1, 200, 22)
    fig, axes = _subplots(1, 4, figsize=(17, 4.2), sharey=True)
    for ax, (band, names) in zip(axes, refs.items()):
        centres, n, err = differential_counts(np.asarray(cat[f"flux_{band}"]), area_deg2 * u.deg**2, edges)
        good = n > 0
        ax.errorbar(centres[good], (n * (centres / 1e3) ** 2.5)[good], yerr=(err * (centres / 1e3) ** 2.5)[good],
                    fmt="k-", lw=1.5, label=f"galaxysr.sky ({area_deg2:g} deg²)")
        for marker, name in zip("osd", names):
            t = Table.read(counts_dir / f"{name}.ecsv")
            s = np.asarray(t["S"])
            y = 10 ** np.asarray(t["log10_dNdS"]) * (s / 1e3) ** 2.5
            lo = y * (1 - 10 ** -np.asarray(t["err_minus"]))
            hi = y * (10 ** np.asarray(t["err_plus"]) - 1)
            label = name.split("_")[0].replace("2", " 2", 1).capitalize()
            ax.errorbar(s, y, yerr=[lo, hi], fmt=marker, ms=4, capsize=2, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1, 200)
        ax.set_ylim(0.05, 30)
        ax.set_title(band.replace("_", " ") + " µm")
        ax.set_xlabel("S [mJy]")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("S$^{2.5}$ dN/dS [Jy$^{1.5}$ deg$^{-2}$]")
    return _finish(fig, path)


def field_bands_figure(field, path: Path) -> Path:
    """One simulated field in the four bands, at native pixels."""
    fig, axes = _subplots(1, 4, figsize=(17, 4.4))
    for ax, (band, m) in zip(axes, field.maps.items()):
        data = m.data
        im = ax.imshow(data, origin="lower", cmap="inferno", vmin=np.nanpercentile(data, 1),
                       vmax=np.nanpercentile(data, 99.7))
        ax.set_title(f"{band.replace('_', ' ')} µm — {m.band.fwhm.value}″ beam, {m.pixel_scale.value:.3g}″ px")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, label="mJy/beam")
    return _finish(fig, path, dpi=80)
