"""The Python front door, end to end (run by tests/test_api.py).

Simulate a small field of the held-out sky, super-resolve its SPIRE maps with the shipped model
from in-memory objects, extract a catalogue, and write both to a scratch folder.
"""

import sys
import tempfile
from pathlib import Path

from astropy.nddata import CCDData, StdDevUncertainty

import galaxysr
from galaxysr.simulate import held_out_simulation


def main(out: Path) -> None:
    field = galaxysr.simulate_field(held_out_simulation(seed=4242, area_deg2=0.02))
    # Any of: FITS paths, HDULists, (array, WCS) tuples, NDData/CCDData, galaxysr Maps.
    spire = [CCDData(field[b].data, unit="mJy/beam", wcs=field[b].wcs, uncertainty=StdDevUncertainty(field[b].noise))
             for b in ("spire_250", "spire_350", "spire_500")]
    result = galaxysr.super_resolve(*spire)
    print(f"450 µm map {result.shape}, {result.unit}, beam {result.beam_fwhm:.2f}, "
          f"median error {float(abs(result.error).mean()):.2f} {result.unit}")
    catalogue = galaxysr.extract_sources(result)
    print(catalogue["ra", "dec", "flux", "flux_err", "flux_deboosted", "flags"][:5])
    galaxysr.write_map(result, out / "field_450.fits", overwrite=True)
    catalogue.write(out / "field_450.ecsv", overwrite=True)
    print(f"wrote {out / 'field_450.fits'} and {out / 'field_450.ecsv'} ({len(catalogue)} sources)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
