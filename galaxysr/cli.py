"""The ``galaxysr`` command: ``simulate``, ``mock-real``, ``train``, ``predict``, ``evaluate``.

Heavy modules (TensorFlow) are imported inside the handlers so ``--help`` and
``simulate`` start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Later pipeline stages register their subcommands here (see the bottom of this module).
_EXTRA_COMMANDS: list = []


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
