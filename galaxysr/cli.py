"""The ``galaxysr`` command: ``simulate``, ``mock-real``, ``train``, ``predict``, ``evaluate``.

The work of each subcommand is imported inside its handler; TensorFlow's C++ start-up
chatter is silenced unless TF_CPP_MIN_LOG_LEVEL is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _simulate(args) -> int:
    from tqdm import tqdm

    from .maps import write_field
    from .simulate import SimulationConfig, simulate_field

    out = Path(args.out)
    seeds = [args.seed + i for i in range(args.n_fields)]
    for seed in tqdm(seeds, desc="simulating fields", unit="field", disable=len(seeds) == 1):
        config = SimulationConfig(area_deg2=args.area, seed=seed, ra_deg=args.ra, dec_deg=args.dec,
                                  noise_scale=args.noise_scale, scuba2_coverage=args.coverage)
        folder = out if args.n_fields == 1 else out / f"field_{seed:05d}"
        write_field(simulate_field(config), folder, overwrite=args.overwrite)
        print(f"wrote {folder}") if args.n_fields == 1 else None
    return 0


def _mock_real(args) -> int:
    from .simulate import write_mock_real

    print(f"wrote {write_mock_real(args.out, seed=args.seed, overwrite=args.overwrite)}")
    return 0


def _train(args) -> int:
    from .datasets import DataConfig
    from .losses import LossConfig
    from .model import ModelConfig
    from .training import TrainConfig, train

    model = ModelConfig(input_bands=tuple(args.bands), tile=args.tile, depth=args.depth,
                        base_filters=args.base_filters, pixel_arcsec=args.pixel)
    data = DataConfig(sim_dir=args.sim_dir, n_sim_fields=args.n_sim_fields, sim_area_deg2=args.sim_area,
                      real_dirs=(tuple(args.real_dir or DataConfig().real_dirs) if args.sim_per_real > 0 else ()))
    loss = LossConfig(l1=args.w_l1, mean_flux=args.w_mean, median_flux=args.w_median,
                      aperture_flux=args.w_aperture)
    config = TrainConfig(model=model, loss=loss, data=data, epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         sim_per_real=args.sim_per_real, learning_rate=args.lr, seed=args.seed,
                         out_dir=args.out, strategy=args.strategy)
    summary = train(config, max_steps=args.max_steps, progress=not args.no_progress)
    if "artifact" in summary:
        print(f"trained {summary['final_step']} steps; model written to {summary['artifact']}")
    else:
        print(f"stopped at step {summary['final_step']} of {config.total_steps}; rerun the same command "
              "to continue from the last checkpoint")
    return 0


def _add_train(sub) -> None:
    from .datasets import DataConfig
    from .instruments import SPIRE_BANDS
    from .losses import LossConfig
    from .model import ModelConfig
    from .training import TrainConfig

    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    p = sub.add_parser("train", help="train the generator (resumes from --out if it holds a checkpoint)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train on simulated fields (made on first use) alternating with real "
                                   "SPIRE + SCUBA-2 pairs (default: the shipped MOCK pair). Rerunning the "
                                   "same command resumes from the last checkpoint in --out.")
    p.add_argument("--epochs", type=int, default=t.epochs, help="epochs to train")
    p.add_argument("--steps-per-epoch", type=int, default=t.steps_per_epoch, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=t.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=t.learning_rate, help="initial Adam learning rate (cosine decay)")
    p.add_argument("--sim-per-real", type=int, default=t.sim_per_real,
                   help="simulated steps per real step (0: simulated data only)")
    p.add_argument("--real-dir", action="append", default=None,
                   help=f"real pair folder (repeatable); default {list(d.real_dirs)}")
    p.add_argument("--sim-dir", default=d.sim_dir, help="folder of simulated training fields")
    p.add_argument("--n-sim-fields", type=int, default=d.n_sim_fields, help="simulated training fields")
    p.add_argument("--sim-area", type=float, default=d.sim_area_deg2, help="area of each simulated field (deg²)")
    p.add_argument("--bands", nargs="+", default=list(SPIRE_BANDS), choices=list(SPIRE_BANDS),
                   help="input SPIRE bands")
    p.add_argument("--tile", type=int, default=m.tile, help="tile side (pixels)")
    p.add_argument("--depth", type=int, default=m.depth, help="UNet levels")
    p.add_argument("--base-filters", type=int, default=m.base_filters, help="filters of the first level")
    p.add_argument("--pixel", type=float, default=m.pixel_arcsec, help="output pixel scale (arcsec)")
    for term, key in (("l1", "l1"), ("mean", "mean_flux"), ("median", "median_flux"), ("aperture", "aperture_flux")):
        p.add_argument(f"--w-{term}", type=float, default=getattr(LossConfig(), key),
                       help=f"weight of the {term} loss term")
    p.add_argument("--seed", type=int, default=t.seed, help="random seed")
    p.add_argument("--out", default=t.out_dir, help="run folder (checkpoints, TensorBoard logs, model)")
    p.add_argument("--strategy", choices=["mirrored", "multiworker", "default"], default=t.strategy,
                   help="tf.distribute strategy; multiworker reads TF_CONFIG")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this global step (rerun to continue)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)


def sibling_band_path(path_250: Path, band: str) -> Path:
    """Where the 350/500 µm map of a 250 µm file is expected: '250' → '350'/'500' (or
    SPIRE's PSW → PMW/PLW) in the file name."""
    wavelength = band[-3:]
    name = path_250.name
    for old, new in (("250", wavelength), ("PSW", {"350": "PMW", "500": "PLW"}[wavelength]),
                     ("psw", {"350": "pmw", "500": "plw"}[wavelength])):
        if old in name:
            return path_250.with_name(new.join(name.rsplit(old, 1)))
    raise FileNotFoundError(f"{path_250}: cannot guess the {wavelength} µm file name (no '250' or 'PSW' in "
                            f"it); pass --spire{wavelength}")


def _predict(args) -> int:
    from .inference import load_artifact, super_resolve
    from .maps import MapError, read_map

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise MapError(f"{out}: already exists; choose another name or pass --overwrite")
    artifact = load_artifact(args.model)
    path_250 = Path(args.spire250)
    maps = {}
    for band in artifact.config.input_bands:
        given = {"spire_250": path_250, "spire_350": args.spire350, "spire_500": args.spire500}[band]
        path = Path(given) if given else sibling_band_path(path_250, band)
        if not path.exists():
            raise MapError(f"{path}: the model needs the {band} map and it is not there; pass "
                           f"--spire{band[-3:]} PATH")
        maps[band] = read_map(path, band=band, default_unit=None)
    result = super_resolve(maps, artifact, overlap=args.overlap, batch_size=args.batch_size,
                           progress=not args.no_progress, out_path=out, overwrite=args.overwrite)
    print(f"wrote {result}")
    if args.catalogue:
        from .catalogue import extract_sources

        table = extract_sources(read_map(result, band=artifact.config.target_band), snr=args.snr)
        table.write(args.catalogue, overwrite=args.overwrite)
        print(f"wrote {args.catalogue} ({len(table)} sources)")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="super-resolve a SPIRE 250 µm map (+350/500) to 450 µm resolution",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Super-resolve SPIRE maps with a trained model (default: the shipped "
                                   "one). The 350/500 µm maps are found beside the 250 µm file by "
                                   "replacing '250' (or PSW) in its name, or given explicitly. Output: a "
                                   "FITS map in mJy/beam with a celestial WCS.")
    p.add_argument("spire250", help="SPIRE 250 µm FITS map (mJy/beam, Jy/beam or MJy/sr; SMAP layout ok)")
    p.add_argument("output", help="output FITS file")
    p.add_argument("--spire350", default=None, help="SPIRE 350 µm map (default: guessed from the 250 name)")
    p.add_argument("--spire500", default=None, help="SPIRE 500 µm map (default: guessed from the 250 name)")
    p.add_argument("--model", default=None, help="model folder / SavedModel / .keras (default: shipped model)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: a quarter tile)")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per network call")
    p.add_argument("--catalogue", default=None, help="also extract sources into this ECSV file")
    p.add_argument("--snr", type=float, default=4.0, help="detection S/N for --catalogue")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_predict)


def _evaluate(args) -> int:
    from dataclasses import replace

    from .evaluate import (EvalConfig, evaluate_real, evaluate_simulated, evaluation_fields, summary_table,
                           update_readme, write_report)
    from .inference import load_artifact

    artifact = load_artifact(args.model)
    config = replace(EvalConfig(), snr=args.snr, min_flux_mjy=args.min_flux, match_radius_arcsec=args.radius,
                     area_deg2=args.area, seeds=tuple(args.seeds), field_dir=args.field_dir)
    if args.real:
        results = evaluate_real(args.real, artifact, config, progress=not args.no_progress)
        title = f"galaxysr evaluation on the pair {args.real}"
    else:
        folders = args.fields or evaluation_fields(config, progress=not args.no_progress)
        results = evaluate_simulated(folders, artifact, config, progress=not args.no_progress)
        title = "galaxysr evaluation on held-out simulated fields"
    report = write_report(results, args.out, title)
    print(summary_table(results))
    print(f"\nwrote {report}")
    if args.update_readme:
        update_readme(args.update_readme, results, report)
        print(f"updated {args.update_readme}")
    return 0


def _add_evaluate(sub) -> None:
    from .datasets import EVALUATION_SEEDS
    from .evaluate import EvalConfig

    c = EvalConfig()
    p = sub.add_parser("evaluate", help="completeness, purity, flux and position accuracy vs baselines",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Score the model and classical baselines (native 250, Richardson-Lucy, "
                                   "Wiener, truth upper bound) on held-out simulated fields, or on a real "
                                   "SPIRE + SCUBA-2 pair (--real), and write a report with plots.")
    p.add_argument("--model", default=None, help="model (default: the shipped one)")
    p.add_argument("--out", default="reports/evaluation", help="report folder")
    p.add_argument("--fields", nargs="+", default=None, help="simulated Field folders (default: simulate held-out ones)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(EVALUATION_SEEDS), help="held-out field seeds")
    p.add_argument("--area", type=float, default=c.area_deg2, help="area of each held-out field (deg²)")
    p.add_argument("--field-dir", default=c.field_dir, help="where held-out fields are cached")
    p.add_argument("--real", default=None, help="evaluate on this real pair folder instead")
    p.add_argument("--snr", type=float, default=c.snr, help="detection S/N")
    p.add_argument("--min-flux", type=float, default=c.min_flux_mjy, help="detection floor (mJy/beam)")
    p.add_argument("--radius", type=float, default=None, help="match radius in arcsec (default: 450 µm FWHM)")
    p.add_argument("--update-readme", default=None, metavar="README", help="also refresh the results block of README")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galaxysr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="simulate SPIRE + SCUBA-2 450 fields with a truth catalogue",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    sim.add_argument("--overwrite", action="store_true", help="replace existing files")
    sim.set_defaults(handler=_simulate)

    mock = sub.add_parser("mock-real", help="write the small mock real SPIRE + SCUBA-2 pair (MOCK data)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mock.add_argument("--out", default="data/mock_real", help="output folder")
    mock.add_argument("--seed", type=int, default=424242, help="random seed")
    mock.add_argument("--overwrite", action="store_true", help="replace an existing mock pair")
    mock.set_defaults(handler=_mock_real)

    _add_train(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .maps import MapError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (MapError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"galaxysr {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
