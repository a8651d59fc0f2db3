"""Real data, as users download them: the HerMES scan of Abell 1689 from the Herschel Science
Archive (level-2, extended-source calibrated MJy/sr maps with the Planck zero level added;
shipped in ``galaxysr/data/real/A1689_1342201247``), super-resolved with the shipped model.

    python docs/examples/a1689.py [OUT.png]      # default: a1689.png in the current folder

Writes a figure of the three SPIRE inputs (as the network sees them: point-source mJy/beam,
background removed), the 450 µm output (the network's catalogue drawn through the 7.9″ beam) with
that catalogue overlaid, and prints what was done to the inputs. No 450 µm map exists for this field: what can be judged is that the
whole footprint is super-resolved and that sources look like sources.
"""

import sys
from importlib.resources import files
from pathlib import Path

import numpy as np

from galaxysr import extract_sources, super_resolve
from galaxysr.conventions import condition
from galaxysr.maps import read_map

FOLDER = files("galaxysr") / "data" / "real" / "A1689_1342201247"
TAGS = {"spire_250": "psw", "spire_350": "pmw", "spire_500": "plw"}


def archive_file(band: str) -> str:
    """The archive's file of ``band`` (its name as the archive gives it)."""
    return str(next(p for p in FOLDER.iterdir() if f"hspire{TAGS[band]}" in p.name))


def main(out: str = "a1689.png") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = {band: read_map(archive_file(band), band=band) for band in TAGS}
    result = super_resolve(maps["spire_250"], maps["spire_350"], maps["spire_500"])
    catalogue = extract_sources(result)
    for band in TAGS:
        print(f"{band}: calibration {result.meta[f'CAL{band[-3:]}'][0]}, background removed "
              f"{result.meta[f'BKG{band[-3:]}'][0]:+.1f} mJy/beam")
    covered = np.isfinite(result.data).mean()
    chosen = (f"p_real ≥ {catalogue.meta['p_min']:g}" if catalogue.meta["method"] == "head"
              else f"S/N ≥ {catalogue.meta['snr']:g}")
    print(f"450 µm map: {result.shape[1]} × {result.shape[0]} pixels of {result.pixel_scale:.1f}, "
          f"{covered:.0%} of the grid with data; {len(catalogue)} sources at {chosen} "
          f"(brightest {catalogue['flux'][0]:.1f})" if len(catalogue) else "no sources")

    fig = Figure(figsize=(16, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    for ax, band in zip(axes, TAGS):
        seen = condition(maps[band]).map  # on its own archive grid (6″/10″/14″ pixels)
        ax.imshow(seen.data, origin="lower", cmap="inferno", vmin=-10, vmax=np.nanpercentile(seen.data, 99.5))
        ax.set_title(f"SPIRE {band[-3:]} µm, {seen.pixel_scale.to_value('arcsec'):.0f}″ pixels", fontsize=9)
    ax = axes[3]
    ax.imshow(result.data, origin="lower", cmap="inferno", vmin=0, vmax=np.nanpercentile(result.data, 99.7))
    ax.plot(catalogue["x"], catalogue["y"], "o", mfc="none", mec="cyan", ms=7, mew=0.8)
    ax.set_title(f"galaxysr 450 µm + catalogue ({len(catalogue)} sources)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Abell 1689, HerMES SPIRE scan 1342201247 (ESA Herschel Science Archive); inputs in mJy/beam, "
                 "point-source calibrated, background removed, as the network sees them")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
