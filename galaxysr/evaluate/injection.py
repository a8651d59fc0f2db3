"""Injection–recovery: isolated point sources of known flux put into SPIRE maps, and what the
network makes of them.

Sources of 5 / 10 / 20 / 40 mJy at 450 µm, with SPIRE fluxes from the colours of the
evaluated sky's own sources of that flux, are placed on a grid at least 75″ apart (two
500 µm beams: each is isolated) and drawn into the SPIRE maps through their beams. The
network is run on the maps with and without them, and the *difference* — the network's
response to the injected sources alone — is measured at each true position: the stacked
FWHM, peak/true, integrated/true and the offset of each source's centroid. Scenarios:
maps holding only white noise at 1× and 3× HerMES-deep (the decoder's own beam, with
nothing to confuse it), and the evaluated sky's maps (the same with confusion).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from ..instruments import BANDS, SPIRE_BANDS, TARGET_BAND
from ..maps import Field, Map
from ..simulate import column_mjy, render_catalogue
from .metrics import stamps_at, isolated_source_stats, stamp_ratios

__all__ = ["INJECTION_FLUXES_MJY", "InjectionConfig", "injection_colours", "injection_catalogue", "inject",
           "response_offsets", "recovery_stats", "injection_recovery", "INJECTION_TARGETS", "BRIGHT_250_MJY",
           "bright_colours", "bright_recovery"]

#: 450 µm fluxes injected (mJy).
INJECTION_FLUXES_MJY = (5.0, 10.0, 20.0, 40.0)

#: 250 µm fluxes of the bright-source check (mJy): is anything clipped?
BRIGHT_250_MJY = (500.0, 1000.0, 2000.0)

#: Targets (issue "Sources as sharp and as bright as the sky"): per scenario kind and flux
#: range, (quantity, low, high).
INJECTION_TARGETS = {
    "noise": [((10, 40), "fwhm_arcsec", BANDS[TARGET_BAND].fwhm.to_value(u.arcsec), 8.3), ((10, 40), "peak_ratio", 0.95, 1.05),
              ((10, 40), "integrated_ratio", 0.95, 1.05), ((10, 40), "median_offset_arcsec", 0.0, 1.0),
              ((5, 5), "peak_ratio", 0.85, 1.15), ((5, 5), "integrated_ratio", 0.85, 1.15)],
    "sky": [((20, 40), "fwhm_arcsec", 0.0, 8.5), ((20, 40), "peak_ratio", 0.90, 1.10)],
}


@dataclass(frozen=True)
class InjectionConfig:
    """How sources are injected.

    Attributes
    ----------
    fluxes_mjy : tuple of float
        450 µm fluxes, assigned in turn along the grid.
    spacing_arcsec : float
        Grid spacing (≥ 75″: two SPIRE 500 µm beams).
    edge_arcsec : float
        No source closer than this to a map edge.
    noise_levels : tuple of float
        White-noise scenarios, in units of the HerMES-deep SPIRE noise of the instrument table.
    colour_width_dex : float
        Half-width of the 450 µm flux bin in which the sky's colours are taken.
    seed : int
        Seeds the sub-pixel jitter of the grid (so every sub-pixel phase is sampled).
    bright_250_mjy : tuple of float
        250 µm fluxes of the bright-source check (local and lensed galaxies: is the output
        clipped?), injected into the evaluated sky ``bright_spacing_arcsec`` apart with the
        median colours of the sky's brightest sources; () skips it.
    """

    fluxes_mjy: tuple[float, ...] = INJECTION_FLUXES_MJY
    spacing_arcsec: float = 75.0
    edge_arcsec: float = 60.0
    noise_levels: tuple[float, ...] = (1.0, 3.0)
    colour_width_dex: float = 0.1
    seed: int = 7
    bright_250_mjy: tuple[float, ...] = BRIGHT_250_MJY
    bright_spacing_arcsec: float = 180.0


def injection_colours(truth: Table, fluxes_mjy, width_dex: float = 0.1, min_sources: int = 10) -> dict:
    """Median S_band / S_450 of the ``truth`` sources whose 450 µm flux is within
    ``width_dex`` of each flux (widened until ``min_sources`` are found): flux → {band: ratio}."""
    s450 = column_mjy(truth, f"flux_{TARGET_BAND}")
    out = {}
    for flux in fluxes_mjy:
        width = width_dex
        while True:
            sel = np.abs(np.log10(np.maximum(s450, 1e-6) / flux)) <= width
            if sel.sum() >= min_sources or width > 1.0:
                break
            width *= 1.5
        if not sel.any():
            raise ValueError(f"no sources near {flux:g} mJy at 450 µm in the truth catalogue to take colours from")
        out[float(flux)] = {b: float(np.median(column_mjy(truth[sel], f"flux_{b}") / s450[sel])) for b in SPIRE_BANDS}
    return out


def injection_catalogue(m: Map, colours: dict, config: InjectionConfig = InjectionConfig()) -> Table:
    """Point sources on a grid ``config.spacing_arcsec`` apart inside ``m`` (≥ ``edge_arcsec``
    from its edges), each moved by a random sub-pixel amount, with 450 µm fluxes from
    ``config.fluxes_mjy`` in turn and SPIRE fluxes from ``colours`` (:func:`injection_colours`).
    Columns as a truth catalogue: ``ra``, ``dec`` (deg), ``flux_<band>`` (mJy)."""
    pixel = m.pixel_scale.to_value(u.arcsec)
    ny, nx = m.shape
    edge, step = config.edge_arcsec / pixel, config.spacing_arcsec / pixel
    xs = np.arange(edge, nx - 1 - edge + 1e-9, step)
    ys = np.arange(edge, ny - 1 - edge + 1e-9, step)
    if len(xs) < 1 or len(ys) < 1:
        raise ValueError(f"{m.source}: too small for an injection grid {config.spacing_arcsec:g}″ apart and "
                         f"{config.edge_arcsec:g}″ from the edges; use a larger field")
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    rng = np.random.default_rng(config.seed)
    gx = gx + rng.uniform(-0.5, 0.5, gx.size)
    gy = gy + rng.uniform(-0.5, 0.5, gy.size)
    ra, dec = m.wcs.pixel_to_world_values(gx, gy)
    s450 = np.resize(np.asarray(config.fluxes_mjy, float), gx.size)
    table = Table({"ra": (np.asarray(ra) % 360) * u.deg, "dec": np.asarray(dec) * u.deg,
                   f"flux_{TARGET_BAND}": s450 * u.mJy})
    for band in SPIRE_BANDS:
        table[f"flux_{band}"] = s450 * np.array([colours[float(s)][band] for s in s450]) * u.mJy
    return table


def inject(maps: dict[str, Map], sources: Table) -> dict[str, Map]:
    """``maps`` (band → Map, mJy/beam) with ``sources`` drawn in through each band's beam."""
    out = {}
    for band, m in maps.items():
        m = m.to(u.mJy / u.beam)
        out[band] = replace(m, data=(m.data + render_catalogue(sources, m.band, m.wcs, m.shape)).astype(np.float32))
    return out


def response_offsets(diff: Map, positions: SkyCoord) -> np.ndarray:
    """Distance (arcsec) from each true position to the centroid of the network's response
    ``diff`` around it: a 2-D Gaussian fitted (photutils ``centroid_2dg``) within one beam
    FWHM of the true position. NaN where the stamp leaves the map or has no data."""
    from photutils.centroids import centroid_2dg

    pixel = diff.pixel_scale.to_value(u.arcsec)
    half = int(np.ceil(diff.beam_fwhm.to_value(u.arcsec) / pixel))
    xs, ys = diff.wcs.world_to_pixel(positions)
    out = np.full(len(xs), np.nan)
    for i, (x, y) in enumerate(zip(np.atleast_1d(xs), np.atleast_1d(ys))):
        ix, iy = int(round(float(x))), int(round(float(y)))
        if not (half <= ix < diff.shape[1] - half and half <= iy < diff.shape[0] - half):
            continue
        stamp = np.asarray(diff.data[iy - half:iy + half + 1, ix - half:ix + half + 1], np.float64)
        if not np.isfinite(stamp).all() or stamp.max() <= 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a poor centroid fit shows as a large offset, not as a warning
            cx, cy = centroid_2dg(np.clip(stamp, 0, None))
        out[i] = np.hypot(cx + ix - half - x, cy + iy - half - y) * pixel
    return out


def recovery_stats(diff: Map, sources: Table) -> dict:
    """Per injected 450 µm flux: the stacked FWHM (arcsec), median peak/true and
    integrated/true of the response map ``diff`` (:func:`isolated_source_stats`), the median
    offset of the response's centroid (arcsec) and the number of sources."""
    s450 = column_mjy(sources, f"flux_{TARGET_BAND}")
    coords = SkyCoord(sources["ra"], sources["dec"], unit="deg")
    out = {}
    for flux in np.unique(s450):
        sel = s450 == flux
        stats = isolated_source_stats([(diff, coords[sel], s450[sel])])
        offsets = response_offsets(diff, coords[sel])
        stats["median_offset_arcsec"] = float(np.nanmedian(offsets)) if np.isfinite(offsets).any() else float("nan")
        out[f"{flux:g}"] = stats
    return out


def _white_noise_field(template: Field, level: float) -> dict[str, Map]:
    """SPIRE maps on ``template``'s grids holding only white noise of ``level`` × the
    instrument table's HerMES-deep level (with that noise as their noise maps)."""
    maps = {}
    rng = np.random.default_rng(int(level * 1000) + 11)
    for band in SPIRE_BANDS:
        m = template[band]
        rms = BANDS[band].instrumental_noise.to_value(u.mJy / u.beam) * level
        data = rms * rng.standard_normal(m.shape)
        maps[band] = replace(m.to(u.mJy / u.beam), data=(data - data.mean()).astype(np.float32),
                             noise=np.full(m.shape, rms, np.float32), source=f"white noise {level:g}x")
    return maps


def injection_recovery(artifact, field: Field, config: InjectionConfig = InjectionConfig(),
                       progress: bool = False) -> dict:
    """Injection–recovery of ``artifact`` for one evaluated simulated ``field`` (truth known):
    scenarios ``noise_<level>x`` (white-noise maps on the field's grids) and ``sky`` (the
    field's own maps). Returns ``{"colours": …, "scenarios": {name: recovery_stats}, "n": …,
    "_maps": {name: response Map}}`` (the last for figures)."""
    from ..inference import super_resolve_maps

    colours = injection_colours(field.truth, config.fluxes_mjy, config.colour_width_dex)
    bands = artifact.config.input_bands
    scenarios = {f"noise_{level:g}x": _white_noise_field(field, level) for level in config.noise_levels}
    scenarios["sky"] = {b: field[b] for b in bands}
    results, responses, sources, bright = {}, {}, None, {}
    for name, maps in scenarios.items():
        maps = {b: maps[b] for b in bands}
        base = super_resolve_maps(maps, artifact, progress=progress)
        if sources is None:
            sources = injection_catalogue(base, colours, config)
        injected = super_resolve_maps(inject(maps, sources), artifact, progress=progress)
        diff = replace(injected, data=(injected.data - base.data).astype(np.float32), noise=None, sky_model=None)
        results[name] = recovery_stats(diff, sources)
        responses[name] = diff
        if name == "sky":
            bright = bright_recovery(artifact, maps, field.truth, config, base=base, progress=progress)
    return {"colours": {f"{k:g}": v for k, v in colours.items()}, "scenarios": results, "n": int(len(sources)),
            "bright": bright,
            "config": {"fluxes_mjy": list(config.fluxes_mjy), "spacing_arcsec": config.spacing_arcsec,
                       "bright_250_mjy": list(config.bright_250_mjy), "bright_spacing_arcsec": config.bright_spacing_arcsec,
                       "noise_levels": list(config.noise_levels)},
            "_maps": responses, "_sources": sources}


def bright_colours(truth: Table, n_brightest: int = 20) -> dict:
    """Median S_band / S_250 of the ``n_brightest`` sources at 250 µm of ``truth``: the
    colours bright injected sources are given (band → ratio, the 450 µm target included)."""
    s250 = column_mjy(truth, "flux_spire_250")
    top = np.argsort(s250)[::-1][:n_brightest]
    return {b: float(np.median(column_mjy(truth[top], f"flux_{b}") / s250[top])) for b in (*SPIRE_BANDS, TARGET_BAND)}


def bright_recovery(artifact, maps: dict[str, Map], truth: Table, config: InjectionConfig = InjectionConfig(),
                    base: Map | None = None, progress: bool = False) -> dict:
    """Sources of ``config.bright_250_mjy`` at 250 µm injected into ``maps`` (a sky's SPIRE
    maps, ``truth`` its catalogue for the colours), ``bright_spacing_arcsec`` apart: per 250 µm
    flux the 450 µm truth, the response's peak/true and integrated/true
    (:func:`isolated_source_stats` on each source alone) and the largest output pixel, so
    a ceiling shows as a peak/true falling with flux."""
    from ..inference import super_resolve_maps

    if not config.bright_250_mjy:
        return {}
    colours = bright_colours(truth)
    base = base if base is not None else super_resolve_maps(maps, artifact, progress=progress)
    spaced = replace(config, spacing_arcsec=config.bright_spacing_arcsec, fluxes_mjy=tuple(config.bright_250_mjy),
                     edge_arcsec=max(config.edge_arcsec, 90.0))
    grid = injection_catalogue(base, {float(f): {b: 1.0 for b in SPIRE_BANDS} for f in config.bright_250_mjy}, spaced)
    s250 = column_mjy(grid, f"flux_{TARGET_BAND}")  # the grid's flux column holds the 250 µm flux here
    for band in (*SPIRE_BANDS, TARGET_BAND):
        grid[f"flux_{band}"] = s250 * colours[band] * u.mJy
    injected = super_resolve_maps(inject({b: maps[b] for b in artifact.config.input_bands}, grid), artifact,
                                  progress=progress)
    diff = replace(injected, data=(injected.data - base.data).astype(np.float32), noise=None, sky_model=None)
    coords = SkyCoord(grid["ra"], grid["dec"], unit="deg")
    s450 = column_mjy(grid, f"flux_{TARGET_BAND}")
    stamps, used = stamps_at(diff, coords, half=18)
    peaks, integrated = stamp_ratios(diff, stamps, s450[used]) if len(used) else (np.array([]), np.array([]))
    out = {}
    for flux in config.bright_250_mjy:
        sel = np.isclose(s250[used], flux)
        out[f"{flux:g}"] = {"s450_mjy": float(flux * colours[TARGET_BAND]),
                            "peak_ratio": float(np.median(peaks[sel])) if sel.any() else float("nan"),
                            "integrated_ratio": float(np.median(integrated[sel])) if sel.any() else float("nan"),
                            "n": int(sel.sum())}
    out["max_output_mjy"] = float(np.nanmax(injected.data))
    return out


def meets_targets(injection: dict) -> dict:
    """For each scenario and target of :data:`INJECTION_TARGETS`: the measured value(s) and
    whether they are inside the target range; ``{scenario: [(flux, quantity, value, ok)]}``."""
    out = {}
    for name, stats in injection["scenarios"].items():
        kind = "sky" if name == "sky" else "noise"
        rows = []
        for (lo, hi), quantity, low, high in INJECTION_TARGETS[kind]:
            for flux, s in stats.items():
                if lo <= float(flux) <= hi:
                    value = s[quantity]
                    rows.append((float(flux), quantity, value, bool(np.isfinite(value) and low <= value <= high)))
        out[name] = rows
    return out
