#!/usr/bin/env python
"""Super-resolve a SPIRE map: ``python predict.py spire_250.fits out.fits`` (see ``--help``)."""
import sys

from galaxysr.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
