"""The galaxysr command: simulate, mock-real, train, predict, evaluate, calibrate, survey.

The work of each subcommand is imported inside its handler. TensorFlow's C++ start-up
chatter is filtered out of standard error (:mod:`galaxysr.console`) unless ``--verbose``,
``GALAXYSR_VERBOSE=1`` or the user's own ``TF_CPP_MIN_LOG_LEVEL`` asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .config import BACKGROUND_METHODS, CATALOGUE_METHODS, HEAD_P_MIN, SKIES

__all__ = ["add_config_options", "build_parser", "config_from_options", "main"]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when there is one to show and its help does not
    already say it (no "(default: None)", no doubled defaults)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return super()._get_help_string(action)


def _simulate(args) -> int:
    import json

    from tqdm import tqdm

    from . import __version__
    from .evaluate import sky_simulation
    from .errors import OutputExistsError
    from .maps import write_field
    from .simulate import SIMULATOR_VERSION, simulate_field

    out = Path(args.out)
    seeds = [args.seed + i for i in range(args.n_fields)]
    written = current = 0
    for seed in tqdm(seeds, desc="simulating fields", unit="field", disable=len(seeds) == 1):
        config = replace(sky_simulation(args.sky, seed, args.area), ra_deg=args.ra, dec_deg=args.dec,
                         scuba2_coverage=args.coverage)
        if args.noise_scale != 1.0:
            config = replace(config, noise_scale=config.noise_scale * args.noise_scale)
        folder = out if args.n_fields == 1 else out / f"field_{seed:05d}"
        # What the field is made of (as it reads back from JSON): a rerun that would write the
        # same field has nothing to do; one that would write another is refused.
        recipe = json.loads(json.dumps({"simulator_version": SIMULATOR_VERSION, "simulation": config.to_dict()}))
        record = folder / "simulation.json"
        if record.exists() and not args.overwrite:
            try:
                if json.loads(record.read_text()).get("recipe") == recipe:
                    current += 1
                    continue
            except json.JSONDecodeError:
                pass
        if folder.exists() and any(folder.iterdir()) and not args.overwrite:
            raise OutputExistsError(folder, "already holds files not made by this command (another seed, area, "
                                    "sky or galaxysr version)", "choose another folder or allow overwriting it")
        write_field(simulate_field(config), folder, overwrite=True)
        record.write_text(json.dumps({"recipe": recipe, "galaxysr_version": __version__}, indent=1))
        written += 1
    what = str(out) if args.n_fields == 1 else f"{out} ({args.n_fields} fields)"
    print(f"wrote {what}" if written else f"{what}: up to date (same simulation); nothing to do")
    return 0


def _mock_real(args) -> int:
    from .simulate import write_mock_real

    print(f"wrote {write_mock_real(args.out, seed=args.seed, overwrite=args.overwrite)}")
    return 0


def add_config_options(parser, cls, title: str | None = None) -> None:
    """Add the command-line flags of the configuration dataclass ``cls``: one per field declared
    with :func:`galaxysr.config.option` (its flag, help and argparse options; the type from the
    field's type hint, the default from the field's), in an argument group ``title``."""
    import dataclasses
    import typing

    defaults, hints = cls(), typing.get_type_hints(cls)
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(cls)}
    group = parser.add_argument_group(title) if title else parser
    for f in dataclasses.fields(cls):
        if "cli" not in f.metadata:
            continue
        spec = dict(f.metadata["cli"])
        flag, negate = spec.pop("flag"), spec.pop("negate", False)
        spec.pop("zero_is_none", None)
        spec["help"] = spec["help"].format(**values)
        dest, default = f"{cls.__name__}.{f.name}", values[f.name]
        if negate or hints[f.name] is bool:
            group.add_argument(flag, dest=dest, action="store_false" if negate else "store_true", **spec)
            continue
        kind = hints[f.name]
        args = typing.get_args(kind)
        if typing.get_origin(kind) is tuple:
            kind, default = args[0], list(default)
            spec.setdefault("nargs", "+")
        elif type(None) in args:  # "X | None": the flag gives an X
            kind = next(a for a in args if a is not type(None))
        if "choices" in spec:
            spec["choices"] = list(spec["choices"])
        else:
            spec.setdefault("metavar", f.name.upper())
        group.add_argument(flag, dest=dest, type=kind, default=default, **spec)


def config_from_options(cls, args, **given):
    """The ``cls`` that the flags of :func:`add_config_options` describe, with the fields in
    ``given`` set by the caller (nested configs, or values the flags do not give)."""
    import dataclasses

    values = {}
    for f in dataclasses.fields(cls):
        if "cli" not in f.metadata or f.name in given:
            continue
        value = getattr(args, f"{cls.__name__}.{f.name}")
        if f.metadata["cli"].get("zero_is_none") and not value:
            value = None
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values, **given)


def _train_config(args):
    """The TrainConfig that ``galaxysr train`` options describe."""
    from .config import LossConfig
    from .conventions import InputConventions
    from .datasets import DataConfig
    from .model import ModelConfig
    from .training import TrainConfig

    sim_per_real = getattr(args, "TrainConfig.sim_per_real")
    real_dirs = tuple(args.real_dir or DataConfig().real_dirs) if sim_per_real > 0 else ()
    return config_from_options(TrainConfig, args, model=config_from_options(ModelConfig, args),
                               conventions=config_from_options(InputConventions, args),
                               loss=config_from_options(LossConfig, args),
                               data=config_from_options(DataConfig, args, real_dirs=real_dirs))


def _print_calibration(artifact, seed: int | None = None) -> None:
    """What calibration measured (beam, error factors) and the health check's verdict."""
    beam, errors = artifact.calibration.effective_beam, artifact.calibration.errors
    print(f"stacked output beam on {len(beam['fields'])} fields of the training distribution: "
          f"FWHM {beam['fwhm_arcsec']:.2f}″, peak/true {beam['peak_ratio']:.3f} ({beam['n']} bright "
          f"isolated sources); recorded in {artifact.path / 'calibration.json'}")
    if errors is not None:
        print(f"error map calibrated on {errors['n_sources']} matched sources: factors "
              + ", ".join(f"{f:.2f} at {s:.0f} mJy" for s, f in zip(errors["flux_mjy"], errors["factor"])))
    _print_curve(artifact, "error", "catalogue fluxes")
    presence = artifact.calibration.presence
    if presence is not None:
        shown = {0.1: None, 0.3: None, 0.5: None, 0.7: None, 0.9: None}
        for node, p in zip(presence["nodes"], presence["p_real"]):
            if round(node, 2) in shown:
                shown[round(node, 2)] = p
        print(f"catalogue head's p_real calibrated on {presence['n']} detections ({presence['n_real']} real): "
              + ", ".join(f"{p:.2f} at {presence['score']} {s:g}" for s, p in shown.items() if p is not None))
    _print_curve(artifact, "head", "catalogue head's forced fluxes")
    confusion = artifact.calibration.confusion_mjy()
    if confusion:
        forced = artifact.calibration.reobservation.get("curves", {})
        print("refined SPIRE fluxes calibrated (median fit/true above 20 mJy was "
              + ", ".join(f"{r['ratio_above_20mjy']:.3f} at {band[-3:]} µm" for band, r in forced.items())
              + "); the confusion they leave in the SPIRE maps (predict --refine reads chi2 against it): "
              + ", ".join(f"{c:.2f} mJy/beam at {band[-3:]} µm" for band, c in confusion.items()))
    _print_health(artifact.meta, seed)


def _print_curve(artifact, reading: str, what: str) -> None:
    """One line on a flux curve the calibration fitted (reading: a key of its ``flux_scale`` curves)."""
    curve = artifact.calibration.flux_curves().get(reading)
    if curve is not None:
        record = artifact.calibration.flux_scale["curves"][reading]
        print(f"{what} calibrated on {record['n_pairs']} matched sources (median S_out/S_true above 9 mJy was "
              f"{record['ratio_above_9mjy']:.3f}): factors "
              + ", ".join(f"{f:.2f} at {s:.0f} mJy" for s, f in zip(curve.nodes_mjy, curve.factors)))


def _print_health(meta: dict, seed: int | None = None) -> None:
    """The health check's verdict: one line when healthy, a warning on stderr when not."""
    from .evaluate.health import health_lines

    if "health" not in meta:
        return
    lines = health_lines(meta["health"], seed)
    print("\n".join(lines), file=sys.stdout if meta["health"]["ok"] else sys.stderr)


def _train(args) -> int:
    from .training import CALIBRATION_PAUSES, train

    config = _train_config(args)
    summary = train(config, max_steps=args.max_steps, progress=not args.no_progress,
                    after_pauses=0.0 if args.no_calibration else CALIBRATION_PAUSES)
    if "artifact" in summary:
        print(f"trained {summary['final_step']} steps; model written to {summary['artifact']}")
        spikes = [x for x in summary.get("spikes", []) if x["kind"] != "valid"]
        print(f"loss spikes (a step over 3× the running median): {len(spikes) or 'none'}"
              + (f", largest {max(x['ratio'] for x in spikes):.1f}× at step "
                 f"{max(spikes, key=lambda x: x['ratio'])['step']}" if spikes else ""))
        use = (f"use it: python predict.py SPIRE_250.fits OUT.fits --model {summary['artifact']}   "
               f"(or galaxysr evaluate --model {summary['artifact']})")
        if summary.get("chief", True) and not args.no_calibration:
            from .evaluate import calibrate_artifact
            from .inference import load_artifact

            started = time.perf_counter()
            try:
                artifact = calibrate_artifact(load_artifact(summary["artifact"]), config.data)
            except ValueError as error:
                print(f"galaxysr train: warning: the model was not calibrated ({error}); its errors are "
                      f"uncalibrated — run `galaxysr calibrate {summary['artifact']}`", file=sys.stderr)
                print(use)
                return 0
            print(f"calibrated in {time.perf_counter() - started:.0f} s")
            _print_calibration(artifact, config.seed)
        print(use)
    else:
        print(f"stopped at step {summary['final_step']} of {config.total_steps}; rerun the same command "
              "to continue from the last checkpoint")
    return 0


def _add_train(sub, light: bool = False) -> None:
    p = sub.add_parser("train", help="train the generator (resumes from --out if it holds a checkpoint)",
                       formatter_class=_Help,
                       description="Train on simulated fields (made on first use) alternating with real "
                                   "SPIRE + SCUBA-2 pairs (default: the shipped MOCK pair). Rerunning the "
                                   "same command resumes from the last checkpoint in --out.")
    if light:
        return
    from .config import LossConfig
    from .conventions import InputConventions
    from .datasets import DataConfig
    from .model import ModelConfig
    from .training import TrainConfig

    add_config_options(p, TrainConfig, "training")
    add_config_options(p, ModelConfig, "model")
    add_config_options(p, InputConventions, "input conventions")
    data = p.add_argument_group("data")
    add_config_options(data, DataConfig)
    data.add_argument("--real-dir", action="append", default=None,
                      help=f"real pair folder (repeatable); default {list(DataConfig().real_dirs)}")
    add_config_options(p, LossConfig, "loss weights")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this global step (rerun to continue)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-calibration", action="store_true",
                   help="skip measuring the output beam, calibrating the error map and the health check "
                        "after training")
    p.set_defaults(handler=_train)


def _add_background(p) -> None:
    p.add_argument("--background", choices=BACKGROUND_METHODS, default=None,
                   help="how the SPIRE maps' background (e.g. the archive's Planck zero level) is removed "
                        "(default: the model's own convention, filter; docs/inference.md)")


def _predict(args) -> int:
    from .inference import (MissingBandError, digest, input_maps, load_artifact, outputs_to_make, provenance,
                            super_resolve_maps)
    from .maps import MapError, read_map, write_map

    out = Path(args.output)
    artifact = load_artifact(args.model)
    if args.catalogue_method is None:  # the model's own catalogue: its head's when it has one
        from .catalogue import DEFAULT_METHOD

        args.catalogue_method = "head" if "cells" in artifact.config.output_channels else DEFAULT_METHOD
    try:
        maps = input_maps(artifact, Path(args.spire250), args.spire350, args.spire500)
    except MissingBandError as error:
        # The library names the problem; here the flag that fixes it.
        raise MapError(f"{error} (--spire{error.band[-3:]} PATH)") from None
    background = args.background or artifact.conventions.background
    options = {"overlap": args.overlap, "background": background}
    if args.refine:  # the map then carries the residuals of the refined catalogue
        options |= {"refine": True, "snr": args.snr, "min_flux": args.min_flux, "method": args.catalogue_method,
                    "p_min": args.p_min}
    made_from = provenance({b: m.source for b, m in maps.items()}, artifact, options)
    listed = digest(made_from, args.snr, args.min_flux, args.catalogue_method,
                    *((args.p_min,) if args.catalogue_method == "head" else ()), *(("refine",) if args.refine else ()))
    need_map, need_cat, need_priors = outputs_to_make(
        [(out, "GSRPROV", made_from), (args.catalogue and Path(args.catalogue), "GSRCAT", listed),
         (args.priors and Path(args.priors), "GSRCAT", listed)], args.overwrite)
    if not (need_map or need_cat or need_priors):
        names = ", ".join(str(p) for p in (out, args.catalogue, args.priors) if p)
        print(f"{names}: up to date (same inputs, model and options); nothing to do")
        return 0
    made = None
    if need_map:
        # A map drawn from the catalogue head is made in memory anyway: it is kept, so that its
        # catalogue reads the detections it was drawn from instead of decoding the file again.
        drawn = "cells" in artifact.config.output_channels
        result = super_resolve_maps(maps, artifact, overlap=args.overlap, batch_size=args.batch_size,
                                    progress=not args.no_progress, out_path=None if drawn else out, overwrite=True,
                                    background=background, header_extra={"GSRPROV": made_from})
        if drawn:
            made, result = replace(result, source=str(out)), write_map(result, out, overwrite=True)
        print(f"wrote {result}")
    if need_cat or need_priors or (need_map and args.refine):
        from .catalogue import extract_sources, write_catalogue, write_priors

        made = made if made is not None else read_map(out, band=artifact.config.target_band)
        table = extract_sources(made, snr=args.snr, min_flux_mjy=args.min_flux,
                                command=" ".join(["galaxysr", *sys.argv[1:]]), method=args.catalogue_method,
                                p_min=args.p_min)
        if args.refine:
            table = _refine(table, maps, artifact, out, background)
        table.meta["GSRCAT"] = listed
        if need_cat:
            write_catalogue(table, args.catalogue, overwrite=True)
            chosen = f"p_real ≥ {args.p_min:g}" if args.catalogue_method == "head" else f"S/N ≥ {args.snr:g}"
            print(f"wrote {args.catalogue} ({len(table)} sources at {chosen} and ≥ {args.min_flux:g} mJy)")
        if need_priors:
            write_priors(table, args.priors, overwrite=True, provenance=listed)
            print(f"wrote {args.priors} (XID+ prior list, {len(table)} positions)")
    return 0


def _refine(table, maps: dict, artifact, out: Path, background: str):
    """``predict --refine``: the catalogue's SPIRE fluxes fitted on the input maps at its positions,
    the catalogue re-observed through the SPIRE beams, and the residuals appended to ``out`` as
    ``RESID250/350/500`` with their χ² (said per band)."""
    import time

    from .reobserve import refine, residuals, write_residuals

    from .instruments import get_band

    started = time.perf_counter()
    confusion = artifact.calibration.confusion_mjy()
    where = "measured on the model's calibration fields"
    if not confusion:  # an upper bound: the confusion of every source, listed or not (instrument table)
        confusion = {band: get_band(band).confusion.to_value("mJy/beam") for band in maps}
        where = "the instrument table's full confusion, an upper bound: `galaxysr calibrate` measures the model's"
    curves = artifact.calibration.forced_curves()
    table = refine(table, maps, confusion, background, curves=curves)
    found = residuals(table, maps, confusion, background)
    write_residuals(out, found)
    for band, r in found.items():
        print(f"{band}: re-observed residual chi2/pixel {r.chi2_per_pixel:.2f} over {r.n_pixels} pixels (noise "
              f"{r.noise_mjy:.2f} + unlisted confusion {r.confusion_mjy:.2f} mJy/beam, {where}); "
              f"{r.n_sources_above_5sigma} catalogue sources with a residual over 5 sigma")
    print(f"refined {len(table)} sources' SPIRE fluxes and wrote RESID250/350/500 into {out} "
          f"in {time.perf_counter() - started:.1f} s")
    return table


def _add_predict(sub, light: bool = False) -> None:
    p = sub.add_parser("predict", help="super-resolve a SPIRE 250 µm map (+350/500) to 450 µm resolution",
                       formatter_class=_Help,
                       description="Super-resolve SPIRE maps with a trained model (default: the shipped "
                                   "one). The 350/500 µm maps are found beside the 250 µm file by "
                                   "replacing '250' (or PSW) in its name, or given explicitly. Output: a "
                                   "FITS map in mJy/beam with a celestial WCS.")
    if light:
        return
    p.add_argument("spire250", help="SPIRE 250 µm FITS map (mJy/beam, Jy/beam or MJy/sr; SMAP layout ok)")
    p.add_argument("output", help="output FITS file")
    p.add_argument("--spire350", default=None, help="SPIRE 350 µm map (default: guessed from the 250 name)")
    p.add_argument("--spire500", default=None, help="SPIRE 500 µm map (default: guessed from the 250 name)")
    p.add_argument("--model", default=None, help="model folder / SavedModel / .keras (default: shipped model)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: a quarter tile)")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per network call")
    _add_background(p)
    p.add_argument("--catalogue", default=None,
                   help="also extract sources into this table (.ecsv, .fits, .csv; columns in docs/inference.md)")
    p.add_argument("--priors", default=None, help="also write the source positions as an XID+ prior list (FITS)")
    p.add_argument("--snr", type=float, default=4.0, help="detection S/N against the output's ERROR plane")
    p.add_argument("--min-flux", type=float, default=2.0, help="detection floor (mJy/beam)")
    p.add_argument("--catalogue-method", choices=CATALOGUE_METHODS, default=None,
                   help="head: the catalogue head's sources, their positions refined and fluxes fitted on the "
                        "per-pixel map, p_real and four-band posteriors (the default for a model with a catalogue "
                        "head); psf: PSF fits on the per-pixel map (the default for a model without one); sky: "
                        "components of the SKYMODEL grouped within half a beam")
    p.add_argument("--p-min", type=float, default=HEAD_P_MIN,
                   help="--catalogue-method head: the least p_real (calibrated probability that a source is real) "
                        "kept; --snr does not apply there")
    p.add_argument("--refine", action="store_true",
                   help="fit the catalogue's SPIRE fluxes on the input maps at its positions (flux_spire_NNN_forced "
                        "columns), re-observe it through the SPIRE beams and write the residuals (RESID250/350/500 "
                        "extensions, chi2 per band); docs/inference.md")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_predict)


def _evaluate(args) -> int:
    from .evaluate import (EvalConfig, evaluate_real, evaluate_simulated, evaluation_fields, summary_table,
                           update_readme, write_report)
    from .inference import load_artifact

    artifact = load_artifact(args.model)
    config = config_from_options(EvalConfig, args)
    progress = not args.no_progress
    if args.real:
        runs = {"real pair": evaluate_real(args.real, artifact, config, progress=progress)}
        title = f"galaxysr evaluation on the pair {args.real}"
    elif args.fields:
        runs = {"given fields": evaluate_simulated(args.fields, artifact, config, progress=progress)}
        title = "galaxysr evaluation on the given simulated fields"
    else:
        runs = {sky: evaluate_simulated(evaluation_fields(config, sky, progress), artifact, config, progress=progress)
                for sky in config.skies}
        title = "galaxysr evaluation on simulated skies it was not trained on"
    report = write_report(runs, args.out, title)
    for sky, results in runs.items():
        print(f"\n{sky}:\n{summary_table(results)}")
    print(f"\nwrote {report}")
    if args.update_readme:
        headline = next(iter(runs.values()))
        update_readme(args.update_readme, headline, report)
        print(f"updated {args.update_readme} with the {next(iter(runs))} numbers")
    return 0


def _add_evaluate(sub, light: bool = False) -> None:
    p = sub.add_parser("evaluate", help="completeness, purity, flux and position accuracy vs baselines",
                       formatter_class=_Help,
                       description="Score the model and classical baselines (native 250, Richardson-Lucy, "
                                   "Wiener, truth upper bound) on held-out simulated fields, or on a real "
                                   "SPIRE + SCUBA-2 pair (--real), and write a report with plots.")
    if light:
        return
    from .config import REPORT_DIR
    from .evaluate import EvalConfig

    p.add_argument("--model", default=None, help="model (default: the shipped one)")
    p.add_argument("--out", default=REPORT_DIR, help="report folder")
    p.add_argument("--fields", nargs="+", default=None, help="simulated Field folders instead of --sky")
    p.add_argument("--real", default=None, help="evaluate on this real pair folder instead")
    add_config_options(p, EvalConfig, "scoring")
    p.add_argument("--update-readme", default=None, metavar="README", help="also refresh the results block of README")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_evaluate)


def _survey(args) -> int:
    from .survey import survey

    summaries = survey(args.spire250, args.out, workers=args.workers, scheduler=args.scheduler,
                       progress=not args.no_progress, model=args.model, tiles_per_block=args.block_tiles,
                       batch_size=args.batch_size, catalogue=args.catalogue, overwrite=args.overwrite,
                       snr=args.snr, min_flux_mjy=args.min_flux, background=args.background,
                       method=args.catalogue_method, p_min=args.p_min)
    for s in summaries:
        if s.get("up_to_date"):
            print(f"{s['mosaic']}: up to date (same inputs, model and options); nothing to do")
            continue
        extra = f"; {s['sources']} sources in {s['catalogue']}" if "sources" in s else ""
        print(f"wrote {s['mosaic']} ({s['computed']} blocks computed, {s['skipped']} reused, "
              f"{s['seconds']:.0f} s){extra}")
    return 0


def _calibrate(args) -> int:
    from .evaluate import calibrate_artifact
    from .inference import load_artifact
    from .training import TrainConfig

    artifact = load_artifact(args.model)
    data = TrainConfig.from_dict(artifact.meta["train"]).data
    artifact = calibrate_artifact(artifact, data, progress=not args.no_progress)
    _print_calibration(artifact, artifact.meta["train"].get("seed"))
    return 0


def _add_calibrate(sub, light: bool = False) -> None:
    p = sub.add_parser("calibrate", help="measure a trained model's output beam, calibrate its catalogue fluxes "
                                         "and its error map", formatter_class=_Help,
                       description="What train.py does after training: simulate the calibration fields of the "
                                   "model's training distribution, measure the stacked beam of bright isolated "
                                   "sources, the catalogue's fluxes against the truth (a flux curve per bin of "
                                   "true flux) and the scatter of fluxes about the truth, record them in the "
                                   "model's calibration.json (output headers carry the flux curves and the "
                                   "catalogue applies them), and run the health check.")
    if light:
        return
    p.add_argument("model", help="model folder written by train.py")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_calibrate)


def _add_survey(sub, light: bool = False) -> None:
    p = sub.add_parser("survey", help="super-resolve whole survey fields on a Dask cluster",
                       formatter_class=_Help,
                       description="Super-resolve one or more SPIRE fields block by block on Dask: a LocalCluster "
                                   "of --workers processes, or an existing cluster (--scheduler; e.g. from "
                                   "dask-jobqueue on SLURM/PBS, docs/survey.md). The result equals predict's "
                                   "pixel for pixel. Finished blocks are kept under OUT/blocks_<field>/, so "
                                   "rerunning the same command after a crash computes only what is missing.")
    if light:
        return
    p.add_argument("spire250", nargs="+", help="SPIRE 250 µm FITS map(s); 350/500 µm files found beside each")
    p.add_argument("--out", required=True, help="output folder: <field>_450.fits (+ .ecsv) and block files")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per 2 cores)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler instead of a LocalCluster")
    p.add_argument("--model", default=None, help="model folder / SavedModel / .keras (default: shipped model)")
    p.add_argument("--block-tiles", type=int, default=8, help="block side in tiles (memory per worker grows with it)")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per network call")
    _add_background(p)
    p.add_argument("--catalogue", action="store_true", help="also extract a merged source catalogue per field")
    p.add_argument("--snr", type=float, default=4.0, help="detection S/N for --catalogue (psf, sky)")
    p.add_argument("--min-flux", type=float, default=2.0, help="detection floor (mJy/beam) for --catalogue")
    p.add_argument("--catalogue-method", choices=CATALOGUE_METHODS, default=None,
                   help="head: the catalogue head's sources read from the mosaic's CELLS block by block, as "
                        "predict's (the default for a model with a catalogue head); psf: PSF fits on the mosaic "
                        "(the default for a model without one); sky: components of its SKYMODEL")
    p.add_argument("--p-min", type=float, default=HEAD_P_MIN,
                   help="--catalogue-method head: the least p_real kept; --snr does not apply there")
    p.add_argument("--overwrite", action="store_true", help="replace existing mosaics and catalogues")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(handler=_survey)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. With ``only``, the other subcommands get their one-line help
    but no arguments, so ``galaxysr --help`` and ``galaxysr CMD --help`` import nothing
    they do not need (answering in ~1–2 s rather than importing every stage)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="galaxysr", description="Super-resolve Herschel SPIRE maps to SCUBA-2 "
                                     "450 µm resolution: simulate, train, predict, evaluate, calibrate, survey.")
    parser.add_argument("--version", action="version", version=f"galaxysr {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up and runtime messages (also GALAXYSR_VERBOSE=1; may "
                             "follow the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="simulate SPIRE + SCUBA-2 450 fields with a truth catalogue",
                         formatter_class=_Help)
    sim.add_argument("--area", type=float, default=0.25, help="field area in deg²")
    sim.add_argument("--seed", type=int, default=1, help="random seed (field i uses seed+i)")
    sim.add_argument("--n-fields", type=int, default=1, help="number of fields (folders field_SEED)")
    sim.add_argument("--out", required=True, help="output folder")
    sim.add_argument("--ra", type=float, default=150.1, help="field centre RA (deg)")
    sim.add_argument("--dec", type=float, default=2.2, help="field centre Dec (deg)")
    sim.add_argument("--noise-scale", type=float, default=1.0,
                     help="multiplies the default instrumental noise of every band (0 = noise-free)")
    sim.add_argument("--coverage", choices=["uniform", "daisy"], default="uniform",
                     help="SCUBA-2 450 coverage pattern")
    sim.add_argument("--sky", choices=SKIES, default="reference",
                     help="the reference sky, the held-out evaluation sky, or a draw from the training prior")
    sim.add_argument("--overwrite", action="store_true", help="replace existing files")
    sim.set_defaults(handler=_simulate)

    mock = sub.add_parser("mock-real", help="write the small mock real SPIRE + SCUBA-2 pair (MOCK data)",
                          formatter_class=_Help)
    mock.add_argument("--out", default="data/mock_real", help="output folder")
    mock.add_argument("--seed", type=int, default=424242, help="random seed")
    mock.add_argument("--overwrite", action="store_true", help="replace an existing mock pair")
    mock.set_defaults(handler=_mock_real)

    for name, add in (("train", _add_train), ("predict", _add_predict), ("evaluate", _add_evaluate),
                      ("calibrate", _add_calibrate), ("survey", _add_survey)):
        add(sub, light=only is not None and only != name)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    from .console import log_to_stdout, one_line_warnings, quiet_native_output
    from .errors import OutputExistsError

    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv  # accepted before or after the subcommand (train.py/predict.py pass it after)
    argv = [a for a in argv if a != "--verbose"]
    args = build_parser(only=_command_of(argv) or "").parse_args(argv)
    one_line_warnings()
    if args.command in ("predict", "survey") or verbose:
        log_to_stdout()  # what was done to the user's inputs; evaluate and train run many predictions
    if verbose:
        os.environ["GALAXYSR_VERBOSE"] = "1"
    try:
        with quiet_native_output():
            return int(args.handler(args) or 0)
    except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, ValueError) as error:
        # MapError is a ValueError; library errors name the file, the problem and the fix,
        # and here the flag that applies it.
        message = str(error)
        if isinstance(error, OutputExistsError) and hasattr(args, "overwrite"):
            message = error.message("--overwrite")
        print(f"galaxysr {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
