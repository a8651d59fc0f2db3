"""Science evaluation: the catalogue drawn from a super-resolved map, against the truth.

On held-out simulated fields (seeds never used in training) the network's output and the
classical baselines (:mod:`galaxysr.baselines`) are extracted with the same code
(:mod:`galaxysr.catalogue`), matched one-to-one to the truth 450 µm catalogue, and scored
as in Lauritsen et al. (2021): completeness and purity against flux, S_out/S_true,
position offsets and the output beam. On a real pair the reference is the catalogue
extracted from the SCUBA-2 450 µm map itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack

from .baselines import mean_colour, native_250, richardson_lucy, truth_convolved, wiener
from .catalogue import extract_sources
from .datasets import EVALUATION_SEEDS
from .instruments import BANDS, TARGET_BAND
from .maps import Field, Map, MapError, read_field, reproject_map, write_field
from .plots import METHOD_LABELS, evaluation_figures
from .simulate import SimulationConfig, column_mjy, simulate_field

#: Published targets (Lauritsen et al. 2021; see docs/evaluation.md).
TARGETS = {"completeness_above_15mjy": (">=", 0.95), "min_purity": (">=", 0.87),
           "median_offset_arcsec_above_10mjy": ("<=", 3.0), "median_flux_ratio_above_9mjy": ("within", 0.10)}


@dataclass(frozen=True)
class EvalConfig:
    """How fields are scored.

    Attributes
    ----------
    seeds, area_deg2 : tuple of int, float
        Held-out simulated fields (made into ``field_dir`` on first use).
    snr, min_flux_mjy : float
        Detection: S/N threshold against the map noise, with an absolute floor (mJy/beam)
        for near-noiseless maps (network output, truth).
    truth_min_mjy : float
        Truth sources fainter than this are not counted as missed.
    match_radius_arcsec : float or None
        One-to-one matching radius; default the 450 µm beam FWHM.
    flux_bins_mjy : tuple of float
        Bin edges for completeness, purity and flux recovery.
    edge_arcsec : float
        Sources this close to a map edge are left out (the SPIRE 500 µm beam).
    """

    seeds: tuple[int, ...] = EVALUATION_SEEDS
    area_deg2: float = 0.25
    field_dir: str = "data/sim/eval"
    snr: float = 4.0
    min_flux_mjy: float = 3.0
    truth_min_mjy: float = 2.0
    match_radius_arcsec: float | None = None
    flux_bins_mjy: tuple[float, ...] = (3, 5, 7, 9, 12, 15, 20, 30, 50, 100)
    edge_arcsec: float = BANDS["spire_500"].fwhm.to_value(u.arcsec)

    @property
    def radius(self) -> u.Quantity:
        value = self.match_radius_arcsec
        return (BANDS[TARGET_BAND].fwhm if value is None else value * u.arcsec).to(u.arcsec)


def match(detections: SkyCoord, det_flux: np.ndarray, reference: SkyCoord, ref_flux: np.ndarray,
          radius: u.Quantity) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches (index into detections, index into reference) within ``radius``.

    Reference sources claim detections brightest first, each its nearest free detection,
    so a faint neighbour cannot steal the counterpart of a bright source and no detection
    is matched twice.
    """
    if len(detections) == 0 or len(reference) == 0:
        return np.array([], int), np.array([], int)
    i_ref, i_det, sep, _ = detections.search_around_sky(reference, radius)
    order = np.lexsort((sep.arcsec, -np.asarray(ref_flux)[i_ref]))
    used_det, used_ref, pairs = set(), set(), []
    for k in order:
        r, d = int(i_ref[k]), int(i_det[k])
        if r in used_ref or d in used_det:
            continue
        used_ref.add(r)
        used_det.add(d)
        pairs.append((d, r))
    if not pairs:
        return np.array([], int), np.array([], int)
    d, r = np.array(pairs).T
    return d, r


def binned_fraction(values: np.ndarray, hit: np.ndarray, edges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of ``hit`` in bins of ``values``: (bin centres, fraction, counts)."""
    edges = np.asarray(edges, float)
    index = np.digitize(values, edges) - 1
    counts = np.array([np.sum(index == i) for i in range(len(edges) - 1)])
    hits = np.array([np.sum(hit[index == i]) for i in range(len(edges) - 1)])
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(counts > 0, hits / counts, np.nan)
    return np.sqrt(edges[1:] * edges[:-1]), fraction, counts


def score(catalogue: Table, reference: Table, ref_flux_column: str, config: EvalConfig) -> dict:
    """Completeness, purity, flux and position statistics of ``catalogue`` vs ``reference``."""
    det = SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg")
    ref = SkyCoord(reference["ra"], reference["dec"], unit="deg")
    s_det = np.asarray(catalogue["flux"], float)
    s_ref = column_mjy(reference, ref_flux_column)
    i_det, i_ref = match(det, s_det, ref, s_ref, config.radius)
    ref_hit = np.zeros(len(reference), bool)
    ref_hit[i_ref] = True
    det_hit = np.zeros(len(catalogue), bool)
    det_hit[i_det] = True
    bins = config.flux_bins_mjy
    centres, completeness, n_ref = binned_fraction(s_ref, ref_hit, bins)
    _, purity, n_det = binned_fraction(s_det, det_hit, bins)
    offsets = det[i_det].separation(ref[i_ref]).arcsec if len(i_det) else np.array([])
    ratio = s_det[i_det] / s_ref[i_ref] if len(i_det) else np.array([])
    matched_true = s_ref[i_ref]
    ratio_stats = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (matched_true >= lo) & (matched_true < hi)
        ratio_stats.append(np.percentile(ratio[sel], [16, 50, 84]).tolist() if sel.sum() >= 3 else [np.nan] * 3)
    offset_per_bin = [float(np.median(offsets[(matched_true >= lo) & (matched_true < hi)]))
                      if np.sum((matched_true >= lo) & (matched_true < hi)) >= 3 else float("nan")
                      for lo, hi in zip(bins[:-1], bins[1:])]
    bright = s_ref >= 15
    above10 = matched_true >= 10
    above9 = matched_true >= 9
    enough = n_det >= 5
    return {
        "n_detections": int(len(catalogue)), "n_reference": int(len(reference)), "n_matched": int(len(i_det)),
        "bins_mjy": list(bins), "bin_centres_mjy": centres.tolist(),
        "completeness": completeness.tolist(), "n_reference_per_bin": n_ref.tolist(),
        "purity": purity.tolist(), "n_detections_per_bin": n_det.tolist(),
        "flux_ratio_16_50_84": ratio_stats, "median_offset_arcsec_per_bin": offset_per_bin,
        "offsets_arcsec": offsets.tolist(), "matched_true_flux_mjy": matched_true.tolist(),
        "flux_ratio": ratio.tolist(), "matched_reference_index": i_ref.tolist(),
        "completeness_above_15mjy": float(ref_hit[bright].mean()) if bright.any() else float("nan"),
        "min_purity": float(np.nanmin(purity[enough])) if enough.any() else float("nan"),
        "median_offset_arcsec_above_10mjy": float(np.median(offsets[above10])) if above10.any() else float("nan"),
        "median_flux_ratio_above_9mjy": float(np.median(ratio[above9])) if above9.any() else float("nan"),
    }


def paired_offsets(methods: dict, bins, against: str = "network") -> dict:
    """Median position offsets of ``against`` and of every other method on the reference
    sources *both* recovered, per reference-flux bin and above 10 mJy.

    Each method's own median offset is taken over the sources it finds; a method that
    finds only the brightest, most isolated sources of a bin looks better placed than one
    that also finds the hard ones. On the common sources the comparison is like for like.
    ``methods`` are :func:`score` results against the same (pooled) reference table.
    """
    mine = methods[against]
    offset = dict(zip(mine["matched_reference_index"], mine["offsets_arcsec"]))
    flux = dict(zip(mine["matched_reference_index"], mine["matched_true_flux_mjy"]))
    out = {}
    for name, theirs in methods.items():
        if name == against:
            continue
        other = dict(zip(theirs["matched_reference_index"], theirs["offsets_arcsec"]))
        common = sorted(set(offset) & set(other))
        f = np.array([flux[k] for k in common])
        a = np.array([offset[k] for k in common])
        b = np.array([other[k] for k in common])

        def medians(sel):
            return (int(sel.sum()), *((float(np.median(a[sel])), float(np.median(b[sel]))) if sel.sum() >= 3
                                      else (float("nan"), float("nan"))))

        per_bin = [medians((f >= lo) & (f < hi)) for lo, hi in zip(bins[:-1], bins[1:])]
        n10, a10, b10 = medians(f >= 10)
        out[name] = {"n_per_bin": [p[0] for p in per_bin], f"{against}_per_bin": [p[1] for p in per_bin],
                     "other_per_bin": [p[2] for p in per_bin], "n_above_10mjy": n10,
                     f"{against}_above_10mjy": a10, "other_above_10mjy": b10}
    return out


def stacked_fwhm(m: Map, positions: SkyCoord, half: int = 12) -> float:
    """FWHM (arcsec) of a 2-D Gaussian fitted to the peak-normalised stack of ``m`` at
    ``positions`` (bright, isolated sources)."""
    from astropy.modeling import fitting, models

    stamps = []
    xs, ys = m.wcs.world_to_pixel(positions)
    for x, y in zip(np.round(xs).astype(int), np.round(ys).astype(int)):
        if half <= x < m.shape[1] - half and half <= y < m.shape[0] - half:
            stamp = m.data[y - half:y + half + 1, x - half:x + half + 1]
            if np.isfinite(stamp).all() and stamp[half, half] > 0:
                stamps.append(stamp / stamp[half, half])
    if len(stamps) < 3:
        return float("nan")
    stack = np.mean(stamps, axis=0)
    yy, xx = np.mgrid[: stack.shape[0], : stack.shape[1]]
    fit = fitting.LevMarLSQFitter()(models.Gaussian2D(1, half, half, 2, 2) + models.Const2D(0), xx, yy, stack)
    sigma = np.sqrt(abs(fit[0].x_stddev.value * fit[0].y_stddev.value))
    return float(sigma * 2 * np.sqrt(2 * np.log(2)) * m.pixel_scale.to_value(u.arcsec))


def isolated_bright(truth: Table, min_flux: float = 15.0, isolation_arcsec: float = 30.0) -> SkyCoord:
    """Truth sources above ``min_flux`` (450 µm, mJy) with no neighbour above a third of
    their flux within ``isolation_arcsec``."""
    coords = SkyCoord(truth["ra"], truth["dec"], unit="deg")
    flux = column_mjy(truth, f"flux_{TARGET_BAND}")
    keep = []
    for i in np.flatnonzero(flux >= min_flux):
        near = coords.separation(coords[i]).arcsec < isolation_arcsec
        near[i] = False
        if not np.any(flux[near] > flux[i] / 3):
            keep.append(i)
    return coords[keep]


def inner_region(catalogue: Table, grid_map: Map, edge_arcsec: float) -> np.ndarray:
    """Rows of ``catalogue`` inside ``grid_map``'s valid area, at least ``edge_arcsec`` from its edge."""
    x, y = grid_map.wcs.world_to_pixel(SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg"))
    margin = edge_arcsec / grid_map.pixel_scale.to_value(u.arcsec)
    ny, nx = grid_map.shape
    inside = (x >= margin) & (x <= nx - 1 - margin) & (y >= margin) & (y <= ny - 1 - margin)
    ix = np.clip(np.round(x).astype(int), 0, nx - 1)
    iy = np.clip(np.round(y).astype(int), 0, ny - 1)
    return inside & np.isfinite(grid_map.data[iy, ix])


def method_maps(field: Field, network: Map, colour: float) -> dict[str, Map]:
    """The network output and every baseline, for one field."""
    m250 = field["spire_250"]
    maps = {"network": network, "native_250": native_250(m250, colour),
            "richardson_lucy": richardson_lucy(m250, network.wcs, network.shape, colour),
            "wiener": wiener(m250, network.wcs, network.shape, colour)}
    if field.truth is not None:
        maps["truth"] = truth_convolved(field.truth, network.wcs, network.shape)
    return maps


def evaluation_fields(config: EvalConfig, progress: bool = True) -> list[Path]:
    """Folders of the held-out simulated fields, simulated on first use."""
    from tqdm import tqdm

    from .datasets import resolve_path

    folders = []
    for seed in tqdm(config.seeds, desc="evaluation fields", unit="field", disable=not progress):
        folder = resolve_path(config.field_dir) / f"field_{seed:05d}_{config.area_deg2:g}deg2"
        if not (folder / "truth.ecsv").exists():
            write_field(simulate_field(SimulationConfig(area_deg2=config.area_deg2, seed=seed)), folder,
                        overwrite=True)
        folders.append(folder)
    return folders


def evaluate_simulated(folders, artifact=None, config: EvalConfig = EvalConfig(), progress: bool = True) -> dict:
    """Score the network and the baselines on simulated Field folders (with truth.ecsv).

    Returns ``{"methods": {name: scores}, "fields": [...], "config": ...}``; catalogues of
    all fields are pooled before scoring.
    """
    from .inference import load_artifact, super_resolve

    artifact = artifact or load_artifact()
    colour = mean_colour()
    pooled: dict[str, list] = {}
    fwhm_stamps: dict[str, list] = {}
    example = None
    truths = []
    for folder in folders:
        field = read_field(folder)
        if field.truth is None:
            raise MapError(f"{folder}: no truth.ecsv; use evaluate_real for observed pairs")
        network = super_resolve({b: field[b] for b in artifact.config.input_bands}, artifact, progress=progress)
        maps = method_maps(field, network, colour)
        truth = field.truth[inner_region(field.truth, network, config.edge_arcsec)]
        truth = truth[column_mjy(truth, f"flux_{TARGET_BAND}") >= config.truth_min_mjy]
        truths.append(truth)
        bright = isolated_bright(truth)
        for name, m in maps.items():
            cat = extract_sources(m, snr=config.snr, min_flux_mjy=config.min_flux_mjy)
            cat = cat[inner_region(cat, network, config.edge_arcsec)]
            pooled.setdefault(name, []).append((cat, truth))
            fwhm_stamps.setdefault(name, []).append((m, bright))
        if example is None:
            example = {"field": field, "maps": maps}
    results = {}
    for name, pairs in pooled.items():
        scores = score(vstack([c for c, _ in pairs], metadata_conflicts="silent"),
                       vstack([t for _, t in pairs], metadata_conflicts="silent"), f"flux_{TARGET_BAND}", config)
        fwhms = [stacked_fwhm(m, pos) for m, pos in fwhm_stamps[name]]
        scores["output_fwhm_arcsec"] = float(np.nanmean(fwhms)) if np.isfinite(fwhms).any() else float("nan")
        results[name] = scores
    return {"methods": results, "paired_offsets": paired_offsets(results, config.flux_bins_mjy),
            "fields": [str(f) for f in folders], "colour_450_250": colour,
            "model": {"name": artifact.name, "sha256": artifact.sha256}, "config": _jsonable(asdict(config)),
            "_example": example}


def evaluate_real(folder, artifact=None, config: EvalConfig = EvalConfig(), max_rms_mjy: float = 2.0,
                  progress: bool = True) -> dict:
    """Score on a real pair: the reference is the SCUBA-2 450 µm catalogue (S/N ≥ config.snr)
    inside the part of the map with rms ≤ ``max_rms_mjy``."""
    from .inference import load_artifact, super_resolve

    artifact = artifact or load_artifact()
    field = read_field(folder)
    s2 = field[TARGET_BAND]
    if s2.noise is None:
        raise MapError(f"{folder}: the 450 µm map has no rms map; it is needed to define the reference catalogue")
    network = super_resolve({b: field[b] for b in artifact.config.input_bands}, artifact, progress=progress)
    reference = extract_sources(s2, snr=config.snr)
    reference.rename_column("flux", f"flux_{TARGET_BAND}")
    covered = reproject_map(s2, network.wcs, network.shape)
    good = Map(np.where(covered.noise <= max_rms_mjy, network.data, np.nan), network.wcs, network.band)
    reference = reference[inner_region(reference, good, config.edge_arcsec)]
    results = {}
    for name, m in method_maps(Field(field.maps, None, field.path), network, mean_colour()).items():
        cat = extract_sources(m, snr=config.snr, min_flux_mjy=config.min_flux_mjy)
        results[name] = score(cat[inner_region(cat, good, config.edge_arcsec)], reference, f"flux_{TARGET_BAND}",
                              config)
    return {"methods": results, "paired_offsets": paired_offsets(results, config.flux_bins_mjy),
            "fields": [str(folder)], "reference": "SCUBA-2 450 µm extraction",
            "model": {"name": artifact.name, "sha256": artifact.sha256}, "config": _jsonable(asdict(config)),
            "_example": {"field": field, "maps": {"network": network, "scuba2": covered}}}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


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
            "| output FWHM | detections |", "|---|---|---|---|---|---|---|"]
    def cell(s, key, fmt):
        value = s[key]
        if key not in TARGETS or not np.isfinite(value):
            return fmt.format(value) if np.isfinite(value) else "–"
        return fmt.format(value) + (" ✓" if passes(key, value) else " ✗")

    for name, s in results["methods"].items():
        rows.append(f"| {METHOD_LABELS.get(name, name)} | {cell(s, 'completeness_above_15mjy', '{:.1%}')} | "
                    f"{cell(s, 'min_purity', '{:.1%}')} | {cell(s, 'median_offset_arcsec_above_10mjy', '{:.2f}″')} | "
                    f"{cell(s, 'median_flux_ratio_above_9mjy', '{:.3f}')} | "
                    f"{cell(s, 'output_fwhm_arcsec', '{:.1f}″') if 'output_fwhm_arcsec' in s else '–'} | "
                    f"{s['n_detections']} |")
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


#: Methods that are not baselines: the network itself and the truth upper bound.
NOT_BASELINES = ("network", "truth")


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


def write_report(results: dict, out: str | Path, title: str = "galaxysr evaluation") -> Path:
    """``report.md``, ``metrics.json`` and PNG figures in folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = evaluation_figures(results, out)
    # Binned and summary numbers only; the per-source lists went into the figures.
    per_source = ("offsets_arcsec", "matched_true_flux_mjy", "flux_ratio", "matched_reference_index")
    payload = {k: v for k, v in results.items() if not k.startswith("_")}
    payload["methods"] = {name: {k: v for k, v in s.items() if k not in per_source}
                          for name, s in results["methods"].items()}
    (out / "metrics.json").write_text(json.dumps(_jsonable(payload), indent=1))
    lines = [f"# {title}", "", f"Model `{results['model']['name']}` (sha256 {results['model']['sha256']}); "
             f"fields: {', '.join(Path(f).name for f in results['fields'])}; reference: "
             f"{results.get('reference', 'simulated truth catalogue (450 µm)')}.", "",
             "Targets (Lauritsen et al. 2021): completeness ≥ 95 % above 15 mJy, purity ≥ 87 % in every flux "
             "bin, median offset ≤ 3″ above 10 mJy, median flux ratio within 10 % of 1 above 9 mJy. "
             "✓/✗ mark each target.", "", summary_table(results), ""]
    lines += ["## Per flux bin", "", "Purity (by measured flux; detections in brackets) and median position "
              "offset (by true flux) where a method has ≥ 5 detections / ≥ 3 matches — the comparison at equal "
              "flux, since methods reach different depths.", "", per_bin_table(results), ""]
    lines += ["## Against the baselines", "", "The network against each classical baseline on the headline "
              "measures (network value vs baseline value; ✓ where the network is better). Position offsets are "
              "compared on the reference sources both methods recover, so a baseline that finds only the easiest "
              "sources of a bin is not favoured by that.", "", baseline_comparison(results), "",
              "Median offsets on the common sources, by reference flux (mJy): network / other method "
              "(number of common sources).", "", paired_offset_table(results), ""]
    lines += [f"![{name}]({Path(path).name})" for name, path in figures.items()]
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
