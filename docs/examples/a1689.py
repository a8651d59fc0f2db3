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
    from matplotlib.colors import PowerNorm

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

    fig = Figure(figsize=(20, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 5)
    for ax, band in zip(axes, TAGS):
        seen = condition(maps[band]).map  # on its own archive grid (6″/10″/14″ pixels)
        ax.imshow(seen.data, origin="lower", cmap="inferno", vmin=-10, vmax=np.nanpercentile(seen.data, 99.5))
        ax.set_title(f"SPIRE {band[-3:]} µm, {seen.pixel_scale.to_value('arcsec'):.0f}″ pixels", fontsize=9)
    # The drawn map is mostly empty sky between 7.9″ sources: a square-root stretch to its brightest
    # sources shows them at this size; the last panel zooms on the centre with the catalogue.
    norm = PowerNorm(0.5, vmin=0, vmax=float(np.nanpercentile(result.data[result.data > 0], 99.5)))
    axes[3].imshow(result.data, origin="lower", cmap="inferno", norm=norm)
    axes[3].set_title("galaxysr 450 µm (drawn catalogue, 7.9″ beam)", fontsize=9)
    ny, nx = result.shape
    half = 60  # 4′ × 4′ at 2″ pixels
    y0, x0 = ny // 2 - half, nx // 2 - half
    ax = axes[4]
    ax.imshow(result.data[y0:y0 + 2 * half, x0:x0 + 2 * half], origin="lower", cmap="inferno", norm=norm,
              extent=(x0 - 0.5, x0 + 2 * half - 0.5, y0 - 0.5, y0 + 2 * half - 0.5))
    inside = ((catalogue["x"] > x0) & (catalogue["x"] < x0 + 2 * half) & (catalogue["y"] > y0)
              & (catalogue["y"] < y0 + 2 * half)) if len(catalogue) else []
    ax.plot(catalogue["x"][inside], catalogue["y"][inside], "o", mfc="none", mec="cyan", ms=14, mew=0.8)
    ax.set_xlim(x0 - 0.5, x0 + 2 * half - 0.5)
    ax.set_ylim(y0 - 0.5, y0 + 2 * half - 0.5)
    ax.set_title(f"centre 4′ × 4′ + catalogue ({len(catalogue)} sources in all)", fontsize=9)
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
