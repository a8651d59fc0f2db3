#!/usr/bin/env python
"""Train the galaxysr generator: ``python train.py --epochs 200`` (see ``--help``)."""
import sys

from galaxysr.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
