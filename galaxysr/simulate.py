"""Render a simulated sky (from :mod:`galaxysr.sky`) into SPIRE and SCUBA-2 maps.

Each band is rendered on its own native grid (instrument table) with a celestial TAN WCS:
point sources at sub-pixel positions, convolved analytically with the band's Gaussian beam
(a source of S mJy peaks at S mJy/beam), white instrumental noise, SPIRE maps
mean-subtracted as real SPIRE maps are, and an optional non-uniform (daisy-like) SCUBA-2
coverage with its rms map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from .config import ConfigRecord
from .errors import OutputExistsError
from .instruments import BANDS, FWHM_PER_SIGMA, SPIRE_BANDS, TARGET_BAND, Band
from .maps import Field, Map, tan_wcs
from .sky import SkyModel, colour_450_250, draw_galaxies, fit_counts, place_galaxies

__all__ = ["SIMULATOR_VERSION", "SimulationConfig", "SkyPrior", "HELD_OUT_SKY", "held_out_simulation", "render_sources",
           "render_catalogue", "column_mjy", "band_grid", "daisy_rms", "coverage_pattern", "spire_noise_map",
           "simulate_catalogue", "simulate_field", "MOCK_REAL_SKY", "write_mock_real"]


#: Bumped whenever the same SimulationConfig would render different maps, so cached
#: training fields are remade.
SIMULATOR_VERSION = 2


@dataclass
class SimulationConfig(ConfigRecord):
    """What to simulate.

    Attributes
    ----------
    area_deg2 : float
        Field area (deg²); the field is square.
    seed : int
        Seeds everything; the same seed gives the same field.
    ra_deg, dec_deg : float
        Field centre (deg, ICRS). Default: COSMOS.
    noise_scale : float
        Multiplies every band's default instrumental noise (0 gives noise-free maps).
    spire_noise_contrast : float
        Ratio of the noisiest to the quietest SPIRE pixels (±2σ of a smooth random coverage
        pattern, shared by the three bands as one scan pattern is); 1 is uniform noise.
    calibration : tuple of float
        Multiplicative calibration error of the SPIRE 250/350/500 µm maps (1 = exact).
    noise_seed : int or None
        Seeds the noise alone, so the same sky can be observed twice with independent noise;
        ``None`` derives it from ``seed``.
    scuba2_coverage : str
        ``"uniform"`` or ``"daisy"`` (rms rising away from the centre, NaN outside the
        inscribed circle, as a SCUBA-2 daisy map).
    margin_arcsec : float
        Galaxies are drawn this far beyond the map edges, so edge pixels are confused too.
    sky : SkyModel
        Population parameters.
    bright_sources : int
        Extra bright galaxies placed at random in the field (0: none): the galaxies the counts
        make rare — local galaxies and lensed sources of up to a few Jy at 250 µm — so that a
        network trained on the field sees the whole dynamic range of real skies.
    bright_flux_mjy : (float, float)
        Their 250 µm fluxes are drawn log-uniformly in this range; each takes the SED of a
        random galaxy of the field brighter than 10 mJy at 250 µm, scaled.
    """

    area_deg2: float = 0.25
    seed: int = 1
    ra_deg: float = 150.1
    dec_deg: float = 2.2
    noise_scale: float = 1.0
    spire_noise_contrast: float = 1.0
    calibration: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_seed: int | None = None
    scuba2_coverage: str = "uniform"
    margin_arcsec: float = 120.0
    sky: SkyModel = field(default_factory=SkyModel)
    bright_sources: int = 0
    bright_flux_mjy: tuple[float, float] = (200.0, 3000.0)

    WHAT: ClassVar[str] = "SimulationConfig parameter(s)"


@dataclass(frozen=True)
class SkyPrior(ConfigRecord):
    """The distribution training skies are drawn from (domain randomisation).

    Each training field draws its own galaxy population, noise and calibration from these
    ranges (uniform unless stated), so the network cannot lean on one SED family, one
    T(z) relation, one 450/250 colour or one depth. Every drawn population has its
    luminosity function refitted to the SPIRE counts (:func:`galaxysr.sky.fit_counts`) and
    is kept only if the rms offset of its 250/350/500 µm counts from Béthermin et al. (2012)
    over 5–50 mJy is at most ``max_counts_rms_dex``, so the confusion stays realistic while
    the colours change. The held-out evaluation sky (:data:`HELD_OUT_SKY`) uses an SED family
    and a T(z) relation that are not in ``sed_families`` / ``t_relations``.

    Attributes
    ----------
    sed_families, t_relations : tuple of str
        Drawn with equal probability (see :func:`galaxysr.sky.sed_shape` and
        :func:`galaxysr.sky.dust_temperature`).
    beta, lambda0_um, alpha_mir, t_dust_at_z2, t_dust_slope, t_dust_power, t_dust_scatter_dex,
    warm_fraction : (float, float)
        Ranges of the :class:`~galaxysr.sky.SkyModel` parameters of the same names
        (β; µm; mid-IR slope; K; K per unit z; exponent; dex; fraction).
    k_lstar_low, z_break_lstar, k_phistar_high : (float, float)
        Luminosity-function evolution (L* ∝ (1+z)^k below the break; φ* ∝ (1+z)^k above
        its break): these move the redshift distribution.
    clustered_fraction, clump_radius_arcsec, members_per_clump : (float, float)
        From a Poisson sky to strong clustering with close pairs below the SPIRE beams.
    spire_noise_scale : (float, float)
        SPIRE instrumental noise in units of the HerMES-deep default, drawn log-uniformly.
    spire_noise_contrast : (float, float)
        Spatial variation of the noise (noisiest/quietest, see :func:`spire_noise_map`).
    colour_450_250 : (float, float)
        Range of the population's median S450/S250 (galaxies with S450 ≥ 5 mJy), drawn
        log-uniformly; the dust temperature is tuned to reach it (:meth:`draw_sky`).
    colour_tolerance_dex : float
        How close to its target colour a drawn sky must come.
    calibration_jitter : float
        Each SPIRE band's calibration factor is drawn from 1 ± this.
    max_counts_rms_dex : float
        Acceptance limit on the counts (see above); the reference sky has 0.13 dex.
    """

    sed_families: tuple[str, ...] = ("mbb", "greybody", "powerlaw")
    t_relations: tuple[str, ...] = ("linear", "power", "flat")
    beta: tuple[float, float] = (1.5, 2.5)
    lambda0_um: tuple[float, float] = (100.0, 250.0)
    alpha_mir: tuple[float, float] = (1.5, 2.5)
    t_dust_at_z2: tuple[float, float] = (24.0, 50.0)
    t_dust_slope: tuple[float, float] = (2.0, 6.0)
    t_dust_power: tuple[float, float] = (0.3, 0.7)
    t_dust_scatter_dex: tuple[float, float] = (0.05, 0.15)
    warm_fraction: tuple[float, float] = (0.0, 0.4)
    k_lstar_low: tuple[float, float] = (2.6, 4.2)
    z_break_lstar: tuple[float, float] = (1.5, 2.5)
    k_phistar_high: tuple[float, float] = (-4.5, -3.0)
    clustered_fraction: tuple[float, float] = (0.0, 0.7)
    clump_radius_arcsec: tuple[float, float] = (5.0, 30.0)
    members_per_clump: tuple[float, float] = (2.0, 6.0)
    spire_noise_scale: tuple[float, float] = (0.5, 4.0)
    spire_noise_contrast: tuple[float, float] = (1.0, 3.0)
    colour_450_250: tuple[float, float] = (0.42, 1.2)
    colour_tolerance_dex: float = 0.02
    calibration_jitter: float = 0.05
    max_counts_rms_dex: float = 0.2

    WHAT: ClassVar[str] = "SkyPrior parameter(s)"

    def _candidate(self, rng: np.random.Generator) -> SkyModel:
        def pick(name):
            lo, hi = getattr(self, name)
            return float(rng.uniform(lo, hi))

        return SkyModel(
            sed_family=str(rng.choice(self.sed_families)), t_relation=str(rng.choice(self.t_relations)),
            beta=pick("beta"), lambda0_um=pick("lambda0_um"), alpha_mir=pick("alpha_mir"),
            t_dust_at_z2=pick("t_dust_at_z2"), t_dust_slope=pick("t_dust_slope"), t_dust_power=pick("t_dust_power"),
            t_dust_scatter_dex=pick("t_dust_scatter_dex"), warm_fraction=pick("warm_fraction"),
            k_lstar=(pick("k_lstar_low"), SkyModel.k_lstar[1]), z_break_lstar=pick("z_break_lstar"),
            k_phistar=(SkyModel.k_phistar[0], pick("k_phistar_high")),
            clustered_fraction=pick("clustered_fraction"), clump_radius_arcsec=pick("clump_radius_arcsec"),
            members_per_clump=pick("members_per_clump"))

    def draw_sky(self, rng: np.random.Generator, target_colour: float | None = None,
                 max_tries: int = 20) -> SkyModel:
        """One accepted galaxy population (see the class docstring).

        The 450/250 colour of a population on the counts is set mostly by its dust
        temperature, and colours far from the observed mean are rare among random draws.
        So a target colour is drawn first (log-uniform in ``colour_450_250``), and each
        candidate's ``t_dust_at_z2`` is adjusted by secant steps until the colour
        (:func:`galaxysr.sky.colour_450_250`) is within ``colour_tolerance_dex`` of it;
        candidates that miss, or miss the counts, are redrawn.
        """
        lo, hi = np.log(self.colour_450_250)
        log_target = np.log(target_colour) if target_colour is not None else rng.uniform(lo, hi)
        for _ in range(max_tries):
            candidate = self._candidate(rng)
            probe = int(rng.integers(2**31))
            log_t, slope, previous = np.log(candidate.t_dust_at_z2), -1.5, None
            for _ in range(5):
                sky, offsets = fit_counts(replace(candidate, t_dust_at_z2=float(np.exp(log_t))))
                log_colour = np.log(colour_450_250(draw_galaxies(0.5 * u.deg**2, np.random.default_rng(probe), sky)))
                if previous is not None and log_t != previous[0]:
                    slope = float(np.clip((log_colour - previous[1]) / (log_t - previous[0]), -4.0, -0.3))
                if abs(log_colour - log_target) <= self.colour_tolerance_dex * np.log(10):
                    break
                previous = (log_t, log_colour)
                log_t = float(np.clip(log_t + (log_target - log_colour) / slope, np.log(18.0), np.log(60.0)))
            else:
                continue
            if np.sqrt(np.mean(np.concatenate(list(offsets.values())) ** 2)) <= self.max_counts_rms_dex:
                return sky
        raise RuntimeError(f"no sky drawn from the prior met the colour {np.exp(log_target):.2f} and the counts "
                           f"within {max_tries} tries; widen max_counts_rms_dex or narrow colour_450_250")

    def draw(self, seed: int, area_deg2: float, **overrides) -> SimulationConfig:
        """The SimulationConfig of training field ``seed``: a pure function of the seed."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2026]))
        sky = self.draw_sky(rng)
        lo, hi = np.log(self.spire_noise_scale)
        config = SimulationConfig(
            area_deg2=area_deg2, seed=seed, sky=sky, noise_scale=float(np.exp(rng.uniform(lo, hi))),
            spire_noise_contrast=float(rng.uniform(*self.spire_noise_contrast)),
            calibration=tuple(float(c) for c in 1 + rng.uniform(-1, 1, 3) * self.calibration_jitter))
        return replace(config, **overrides)


#: The held-out evaluation sky: a two-temperature dust SED and a saturating T(z) relation,
#: neither of which :class:`SkyPrior` ever draws (tested), on the SPIRE counts (luminosity
#: function refitted with :func:`galaxysr.sky.fit_counts`: rms 0.09 dex over 5–50 mJy), with
#: a 450/250 colour of 0.81, close to independent sky models and to real COSMOS sources.
HELD_OUT_SKY = SkyModel(sed_family="two_temperature", t_relation="saturating", beta=1.7, t_dust_at_z2=25.0,
                        warm_luminosity_fraction=0.25, t_dust_zscale=1.0, clustered_fraction=0.4,
                        clump_radius_arcsec=12.0, phistar_scale=0.9734, log_lstar0=10.3225, sigma_lf=0.3161)


def held_out_simulation(seed: int, area_deg2: float, **overrides) -> SimulationConfig:
    """A field of the held-out sky: :data:`HELD_OUT_SKY`, 1.5× HerMES-deep noise varying
    two-fold across the field, and fixed calibration errors (+3 %, −3 %, +2 %)."""
    config = SimulationConfig(area_deg2=area_deg2, seed=seed, sky=HELD_OUT_SKY, noise_scale=1.5,
                              spire_noise_contrast=2.0, calibration=(1.03, 0.97, 1.02))
    return replace(config, **overrides)


def render_sources(x: np.ndarray, y: np.ndarray, flux: np.ndarray, shape: tuple[int, int],
                   sigma: float, max_elements: int = 4_000_000) -> np.ndarray:
    """Sum of Gaussian beams of peak ``flux`` at pixel positions (x, y).

    The Gaussian is evaluated exactly at pixel centres (no sub-pixel binning), so a
    source keeps its sub-pixel position and peak. ``sigma`` is in pixels; stamps extend
    to 5σ. Returns float64 (ny, nx) in the unit of ``flux`` per beam.
    """
    ny, nx = shape
    half = int(np.ceil(5 * sigma))
    offsets = np.arange(-half, half + 1)
    inside = (x > -half - 1) & (x < nx + half) & (y > -half - 1) & (y < ny + half)
    x, y, flux = x[inside], y[inside], flux[inside]
    out = np.zeros(ny * nx)
    step = max(1, max_elements // len(offsets) ** 2)
    for start in range(0, len(x), step):
        xs, ys, fs = x[start:start + step], y[start:start + step], flux[start:start + step]
        px = np.round(xs).astype(np.int64)[:, None] + offsets
        py = np.round(ys).astype(np.int64)[:, None] + offsets
        gx = np.exp(-0.5 * ((px - xs[:, None]) / sigma) ** 2) * ((px >= 0) & (px < nx))
        gy = np.exp(-0.5 * ((py - ys[:, None]) / sigma) ** 2) * ((py >= 0) & (py < ny))
        weights = fs[:, None, None] * gy[:, :, None] * gx[:, None, :]
        index = np.clip(py, 0, ny - 1)[:, :, None] * nx + np.clip(px, 0, nx - 1)[:, None, :]
        out += np.bincount(index.ravel(), weights=weights.ravel(), minlength=ny * nx)
    return out.reshape(ny, nx)


def render_catalogue(truth: Table, band: Band, wcs, shape: tuple[int, int],
                     fwhm: u.Quantity | None = None) -> np.ndarray:
    """Noise-free map (mJy/beam) of ``truth``'s ``flux_<band>`` on ``wcs``/``shape``.

    ``fwhm`` overrides the band's beam (e.g. to render the 450 µm truth at another
    resolution); the pixel scale is taken from ``wcs``.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    pixel = float(np.mean(proj_plane_pixel_scales(wcs))) * u.deg
    fwhm = band.fwhm if fwhm is None else fwhm
    sigma = float((fwhm / pixel).decompose()) / FWHM_PER_SIGMA
    x, y = wcs.world_to_pixel_values(np.asarray(truth["ra"]), np.asarray(truth["dec"]))
    flux = column_mjy(truth, f"flux_{band.name}")
    return render_sources(np.asarray(x), np.asarray(y), flux, shape, sigma)


def column_mjy(table: Table, name: str) -> np.ndarray:
    """A flux column in mJy (columns without a unit are taken to be mJy already)."""
    column = table[name]
    unit = getattr(column, "unit", None)
    values = np.asarray(column, dtype=float)
    return values if unit is None else (values * unit).to_value(u.mJy)


def band_grid(band: Band, center: SkyCoord, side: u.Quantity):
    """Native-pixel TAN WCS and shape of a square map of side ``side`` for ``band``."""
    n = int(np.ceil(float((side / band.pixel).decompose())))
    return tan_wcs(center, band.pixel, (n, n)), (n, n)


def daisy_rms(shape: tuple[int, int], rms0: float) -> np.ndarray:
    """A SCUBA-2 daisy-like rms map: flat core, rising outwards, NaN outside the circle."""
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    r = np.hypot((xx - (nx - 1) / 2) / (nx / 2), (yy - (ny - 1) / 2) / (ny / 2))
    rms = rms0 * (1 + 3.0 * r**2) ** 1.5
    rms[r > 1] = np.nan
    return rms


def coverage_pattern(x_arcsec: np.ndarray, y_arcsec: np.ndarray, seed: int, n_modes: int = 6,
                     wavelength_arcmin: tuple[float, float] = (4.0, 20.0)) -> np.ndarray:
    """A smooth random pattern of zero mean and unit variance on the sky (tangent-plane
    offsets in arcsec): a sum of plane waves of random direction, phase and wavelength.

    Stands for the uneven depth of a scan map. Being a function of sky position, it is
    the same pattern in every band whatever its pixel grid.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
    angle = rng.uniform(0, np.pi, n_modes)
    k = 2 * np.pi / (rng.uniform(*wavelength_arcmin, n_modes) * 60.0)
    phase = rng.uniform(0, 2 * np.pi, n_modes)
    waves = np.cos(k * (np.cos(angle) * x_arcsec[..., None] + np.sin(angle) * y_arcsec[..., None]) + phase)
    return waves.sum(-1) * np.sqrt(2.0 / n_modes)


def spire_noise_map(band: Band, shape: tuple[int, int], config: SimulationConfig) -> np.ndarray:
    """1σ instrumental noise (mJy/beam) of a simulated SPIRE map of ``band`` on its native
    grid of ``shape`` (centred on the field): the band's default level × ``noise_scale``,
    modulated by :func:`coverage_pattern` so that ±2σ of it spans ``spire_noise_contrast``."""
    ny, nx = shape
    pixel = band.pixel.to_value(u.arcsec)
    yy, xx = np.mgrid[:ny, :nx]
    pattern = coverage_pattern((xx - (nx - 1) / 2) * pixel, (yy - (ny - 1) / 2) * pixel, config.seed)
    rms0 = band.instrumental_noise.to_value(u.mJy / u.beam) * config.noise_scale
    return rms0 * np.exp(np.log(config.spire_noise_contrast) / 4 * pattern)


def simulate_catalogue(config: SimulationConfig) -> Table:
    """The truth catalogue of a field: positions (deg), z, L_IR, T_dust and band fluxes."""
    sky_rng, pos_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(2))
    side = np.sqrt(config.area_deg2) * u.deg + 2 * config.margin_arcsec * u.arcsec
    table = draw_galaxies(side**2, sky_rng, config.sky)
    dx, dy = place_galaxies(len(table), np.asarray(table["z"]), side / 2, pos_rng, config.sky)
    center = SkyCoord(config.ra_deg * u.deg, config.dec_deg * u.deg)
    # Offsets are gnomonic-plane coordinates: place them through a 1"-pixel TAN WCS.
    ref = tan_wcs(center, 1 * u.arcsec, (1, 1))
    ra, dec = ref.pixel_to_world_values(-dx, dy)  # RA increases to the east (left)
    table.add_column(np.asarray(ra) % 360.0 * u.deg, name="ra", index=0)
    table.add_column(np.asarray(dec) * u.deg, name="dec", index=1)
    table.meta.update({"simulator": "galaxysr.sky", "seed": config.seed,
                       "area_deg2": config.area_deg2, "margin_arcsec": config.margin_arcsec})
    if config.bright_sources:
        table = _add_bright_sources(table, config, center)
    return table


def _add_bright_sources(table: Table, config: SimulationConfig, center: SkyCoord) -> Table:
    """``table`` with ``config.bright_sources`` bright galaxies appended (see
    :class:`SimulationConfig`), at random positions inside the map."""
    from astropy.table import vstack

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 99]))
    s250 = column_mjy(table, "flux_spire_250")
    donors = np.flatnonzero(s250 > 10.0)
    if not len(donors):
        return table
    n = config.bright_sources
    picked = table[rng.choice(donors, n)]
    lo, hi = np.log(config.bright_flux_mjy)
    scale = np.exp(rng.uniform(lo, hi, n)) / column_mjy(picked, "flux_spire_250")
    for band in BANDS:
        name = f"flux_{band}"
        if name in picked.colnames:
            picked[name] = picked[name] * scale
    half = np.sqrt(config.area_deg2) * 3600.0 / 2 - 60.0  # arcsec; away from the very edge
    ref = tan_wcs(center, 1 * u.arcsec, (1, 1))
    ra, dec = ref.pixel_to_world_values(rng.uniform(-half, half, n), rng.uniform(-half, half, n))
    picked["ra"] = np.asarray(ra) % 360.0 * u.deg
    picked["dec"] = np.asarray(dec) * u.deg
    return vstack([table, picked], metadata_conflicts="silent")


def simulate_field(config: SimulationConfig, bands=(*SPIRE_BANDS, TARGET_BAND),
                   truth: Table | None = None) -> Field:
    """Simulate a Field: truth catalogue and maps of ``bands`` on their native grids."""
    truth = simulate_catalogue(config) if truth is None else truth
    center = SkyCoord(config.ra_deg * u.deg, config.dec_deg * u.deg)
    side = np.sqrt(config.area_deg2) * u.deg
    noise_seed = (np.random.SeedSequence(config.seed).spawn(3)[2] if config.noise_seed is None
                  else np.random.SeedSequence([config.seed, config.noise_seed, 3]))
    noise_rng = np.random.default_rng(noise_seed)
    maps = {}
    for name in bands:
        band = BANDS[name]
        wcs, shape = band_grid(band, center, side)
        image = render_catalogue(truth, band, wcs, shape)
        rms0 = band.instrumental_noise.to_value(u.mJy / u.beam) * config.noise_scale
        noise = None
        if band.instrument == "SPIRE":
            image *= config.calibration[SPIRE_BANDS.index(name)]
            rms = spire_noise_map(band, shape, config)
            image += rms * noise_rng.standard_normal(shape)
            image -= image.mean()  # SPIRE maps are high-pass filtered to zero mean
            noise = rms.astype(np.float32) if rms0 > 0 else None
        else:
            rms = (daisy_rms(shape, rms0) if config.scuba2_coverage == "daisy"
                   else np.full(shape, rms0))
            image += np.nan_to_num(rms) * noise_rng.standard_normal(shape)
            image[~np.isfinite(rms)] = np.nan
            noise = rms.astype(np.float32) if rms0 > 0 else None
        maps[name] = Map(data=image.astype(np.float32), wcs=wcs, band=band, noise=noise,
                         source=f"simulated seed {config.seed}")
    return Field(maps=maps, truth=truth, path=f"<simulated seed {config.seed}>")


#: The mock real pair's sky differs from the training simulator's on purpose.
MOCK_REAL_SKY = SkyModel(phistar_scale=0.62, t_dust_at_z2=33.5, clustered_fraction=0.5,
                         clump_radius_arcsec=15.0)


def write_mock_real(out: str, seed: int = 424242, overwrite: bool = False,
                    spire_side_arcmin: float = 20.0, scuba2_side_arcmin: float = 15.0,
                    calibration: float = 1.05, jitter_arcsec: tuple = (0.8, -0.5)) -> Path:
    """Write a small mock "real" SPIRE + SCUBA-2 450 pair in survey file formats.

    SPIRE maps are HerMES SMAP-like (empty primary; ``image``/``error``/``exposure``
    extensions; Jy/beam) on native grids; the 450 µm map is a one-plane cube in mJy/beam
    with a daisy rms map beside it, on its own 1″ grid, offset from the SPIRE centre. Its
    sky uses :data:`MOCK_REAL_SKY` (not the training simulator's parameters), and the
    450 µm map carries a ``calibration`` factor and an astrometric offset ``jitter_arcsec``
    (plus 0.5″ rms per source), as real pairs do. MOCK DATA: not an observation.
    """
    from astropy.io import fits

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(out, "is not empty", "choose another folder or allow overwriting the mock pair")
    out.mkdir(parents=True, exist_ok=True)
    config = SimulationConfig(area_deg2=(spire_side_arcmin / 60) ** 2, seed=seed, ra_deg=150.12,
                              dec_deg=2.25, sky=MOCK_REAL_SKY)
    truth = simulate_catalogue(config)
    field = simulate_field(config, bands=SPIRE_BANDS, truth=truth)
    note = "MOCK DATA made by galaxysr mock-real; not an observation"
    for name in SPIRE_BANDS:
        m = field[name]
        header = m.wcs.to_header()
        header["BUNIT"] = "Jy/beam"
        primary = fits.PrimaryHDU()
        primary.header.update({"TELESCOP": "Herschel", "INSTRUME": "SPIRE",
                               "WAVELN": m.band.wavelength.to_value(u.um), "COMMENT": note})
        rms = m.band.instrumental_noise.to_value(u.mJy / u.beam) * config.noise_scale
        fits.HDUList([primary, fits.ImageHDU(m.data / 1e3, header, name="image"),
                      fits.ImageHDU(np.full(m.shape, rms / 1e3, np.float32), header, name="error"),
                      fits.ImageHDU(np.ones(m.shape, np.float32), header, name="exposure")]
                     ).writeto(out / f"{name}.fits", overwrite=True)
    rng = np.random.default_rng(seed + 1)
    moved = truth.copy()
    cos_dec = np.cos(np.deg2rad(config.dec_deg))
    moved["ra"] = truth["ra"] + (jitter_arcsec[0] + rng.normal(0, 0.5, len(truth))) / 3600 / cos_dec
    moved["dec"] = truth["dec"] + (jitter_arcsec[1] + rng.normal(0, 0.5, len(truth))) / 3600
    band = BANDS[TARGET_BAND]
    centre = SkyCoord((config.ra_deg + 30 / 3600 / cos_dec) * u.deg, (config.dec_deg - 20 / 3600) * u.deg)
    wcs, shape = band_grid(band, centre, scuba2_side_arcmin * u.arcmin)
    rms = daisy_rms(shape, band.instrumental_noise.to_value(u.mJy / u.beam))
    image = calibration * render_catalogue(moved, band, wcs, shape)
    image += np.nan_to_num(rms) * rng.standard_normal(shape)
    image[~np.isfinite(rms)] = np.nan
    header = wcs.to_header()
    header.update({"BUNIT": "mJy/beam", "TELESCOP": "JCMT", "INSTRUME": "SCUBA-2", "FILTER": "450",
                   "COMMENT": note})
    cube = fits.PrimaryHDU(image.astype(np.float32)[None], header)  # one-plane cube, as SCUBA-2 products
    cube.header["NAXIS"] = 3
    cube.writeto(out / "scuba2_450.fits", overwrite=True)
    fits.PrimaryHDU(rms.astype(np.float32), header).writeto(out / "scuba2_450_rms.fits", overwrite=True)
    (out / "README.md").write_text(
        "# Mock real SPIRE + SCUBA-2 450 µm pair — MOCK DATA, not an observation\n\n"
        f"Made by `galaxysr mock-real --out {out}` (seed {seed}). SPIRE maps in HerMES SMAP layout "
        "(Jy/beam, image/error/exposure extensions); `scuba2_450.fits` a one-plane cube in mJy/beam "
        "with a daisy-like `scuba2_450_rms.fits`. The sky uses different population parameters from "
        f"the training simulator; the 450 µm map has a {calibration:.2f}× calibration factor and a "
        f"({jitter_arcsec[0]}, {jitter_arcsec[1]})″ astrometric offset plus 0.5″ rms per-source jitter. "
        "It stands in for a HerMES + STUDIES pair on machines that have none; point `train.py "
        "--real-dir` at real pairs laid out the same way.\n")
    return out
