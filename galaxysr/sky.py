"""An empirical model of the dusty-galaxy population: catalogues, no pixels.

In the spirit of EGG (Schreiber et al. 2017) and SIDES (Béthermin et al. 2017), but
drawing from an evolving total-infrared luminosity function rather than from a stellar
mass function: galaxies get a redshift and an 8–1000 µm luminosity L_IR from the
modified-Schechter LF of Gruppioni et al. (2013, MNRAS 432, 23), then a far-IR SED — a
modified blackbody with β = 1.8 and a dust temperature that rises with redshift
(Schreiber et al. 2018, A&A 609, A30) with log-normal scatter — so that the fluxes at
250/350/450/500 µm are physically correlated. The LF normalisation was tuned (see
``docs/simulator.md``) so the counts sit on the Béthermin et al. (2012) SPIRE counts and on
the STUDIES 450 µm counts (Wang et al. 2017).

Optional clustering: a fraction of galaxies is grouped, in redshift order, into small
Thomas-process clumps on the sky, so close (blended) pairs at similar redshift occur more
often than in a Poisson sky.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict
from functools import lru_cache

import numpy as np
from astropy import constants as const
from astropy import units as u
from astropy.cosmology import Planck18
from astropy.table import Table

from .instruments import BANDS

_L_SUN_W = const.L_sun.to_value(u.W)
_H_OVER_K = (const.h / const.k_B).to_value(u.s * u.K)
_MPC_M = u.Mpc.to(u.m)


@dataclass(frozen=True)
class SkyModel:
    """Parameters of the galaxy population (all documented in ``docs/simulator.md``).

    Luminosity function φ(L, z) per Mpc³ per dex (Gruppioni et al. 2013, total IR):
    φ* (L/L*)^(1-α) exp[-log10²(1 + L/L*) / (2σ²)], with L* ∝ (1+z)^k_L and
    φ* ∝ (1+z)^k_φ, both broken at a redshift.
    """

    log_lstar0: float = 10.12          # log10 L*(z=0) / L_sun
    log_phistar0: float = -2.29        # log10 φ*(z=0) / (Mpc⁻³ dex⁻¹)
    phistar_scale: float = 0.72        # tuning of φ* against the counts (docs/simulator.md)
    alpha: float = 1.15
    sigma_lf: float = 0.45           # tuned (Gruppioni: 0.52)
    k_lstar: tuple[float, float] = (3.55, 1.62)
    z_break_lstar: float = 1.85
    k_phistar: tuple[float, float] = (-0.57, -3.92)
    z_break_phistar: float = 1.1
    z_range: tuple[float, float] = (0.02, 6.0)
    log_l_range: tuple[float, float] = (8.0, 13.6)
    beta: float = 1.8                  # dust emissivity index
    t_dust_at_z2: float = 31.7         # K (Schreiber et al. 2018: 32.9; tuned)
    t_dust_slope: float = 4.6          # K per unit redshift
    t_dust_min: float = 18.0           # K
    t_dust_lslope: float = 8.0         # K per dex of L_IR above 10^11.5 L_sun (hotter = brighter)
    fir_fraction: float = 0.71         # share of L_IR in the cold MBB; the rest is warm mid-IR dust
    t_dust_scatter_dex: float = 0.08   # log-normal scatter of T_dust
    min_flux_mjy: float = 0.25         # faintest galaxy kept, in its brightest band
    clustered_fraction: float = 0.3
    members_per_clump: float = 4.0
    clump_radius_arcsec: float = 20.0

    def to_dict(self) -> dict:
        return asdict(self)


def _phi_evolution(z, k, z_break):
    z = np.asarray(z, dtype=float)
    low = (1 + z) ** k[0]
    high = (1 + z_break) ** k[0] * ((1 + z) / (1 + z_break)) ** k[1]
    return np.where(z <= z_break, low, high)


def luminosity_function(log_l: np.ndarray, z: np.ndarray, model: SkyModel) -> np.ndarray:
    """φ(L_IR, z) in Mpc⁻³ dex⁻¹ for log10(L_IR / L_sun) ``log_l`` at redshift ``z``."""
    log_lstar = model.log_lstar0 + np.log10(_phi_evolution(z, model.k_lstar, model.z_break_lstar))
    phistar = (10 ** model.log_phistar0 * model.phistar_scale
               * _phi_evolution(z, model.k_phistar, model.z_break_phistar))
    x = 10 ** (log_l - log_lstar)
    return phistar * x ** (1 - model.alpha) * np.exp(-np.log10(1 + x) ** 2 / (2 * model.sigma_lf**2))


def dust_temperature(z: np.ndarray, log_l: np.ndarray, model: SkyModel) -> np.ndarray:
    """Mean dust temperature (K) at redshift ``z`` and log10 L_IR ``log_l``.

    Schreiber et al. (2018) T(z) for main-sequence galaxies, plus a rise with luminosity
    (the L_IR–T relation, e.g. Casey et al. 2018) so that luminous galaxies are warmer.
    """
    t = (model.t_dust_at_z2 + model.t_dust_slope * (np.asarray(z) - 2.0)
         + model.t_dust_lslope * (np.asarray(log_l) - 11.5))
    return np.maximum(t, model.t_dust_min)


def _mbb(nu_hz: np.ndarray, t_k: np.ndarray, beta: float) -> np.ndarray:
    """Unnormalised modified blackbody ν^β B_ν(T) (arbitrary units)."""
    x = np.clip(_H_OVER_K * nu_hz / t_k, 1e-6, 700.0)
    return nu_hz ** (3 + beta) / np.expm1(x)


@lru_cache(maxsize=8)
def _mbb_norm_table(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """∫_{8 µm}^{1000 µm} ν^β B_ν(T) dν on a temperature grid (same arbitrary units)."""
    temps = np.linspace(10.0, 120.0, 221)
    nu = np.geomspace(const.c.value / 1000e-6, const.c.value / 8e-6, 2000)
    integrand = _mbb(nu[None, :], temps[:, None], beta)
    return temps, np.trapezoid(integrand, nu, axis=1)


def band_fluxes(log_l: np.ndarray, z: np.ndarray, t_dust: np.ndarray, model: SkyModel,
                bands=tuple(BANDS)) -> dict[str, np.ndarray]:
    """Observed flux densities (mJy) in ``bands`` of galaxies with L_IR, z and T_dust.

    S_ν = (1+z) L_ν(ν(1+z)) / (4π D_L²), with L_ν a modified blackbody carrying a fraction
    ``fir_fraction`` of L_IR over rest-frame 8–1000 µm (the rest is warm dust and PAHs that
    emit shortward of the SPIRE bands at the redshifts that matter).
    """
    temps, norms = _mbb_norm_table(model.beta)
    norm = np.interp(t_dust, temps, norms)
    d_l = np.interp(z, *_luminosity_distance_table()) * _MPC_M
    lum_w = model.fir_fraction * 10 ** np.asarray(log_l) * _L_SUN_W
    out = {}
    for name in bands:
        nu_obs = const.c.value / BANDS[name].wavelength.to_value(u.m)
        l_nu = lum_w * _mbb(nu_obs * (1 + z), t_dust, model.beta) / norm  # W/Hz
        s_nu = (1 + z) * l_nu / (4 * np.pi * d_l**2)  # W/m²/Hz
        out[name] = s_nu / 1e-29  # 1 mJy = 1e-29 W m⁻² Hz⁻¹
    return out


@lru_cache(maxsize=1)
def _luminosity_distance_table():
    z = np.linspace(0.0, 10.0, 2001)
    return z, Planck18.luminosity_distance(z).to_value(u.Mpc)


@lru_cache(maxsize=1)
def _volume_table():
    z = np.linspace(0.0, 10.0, 2001)
    return z, Planck18.differential_comoving_volume(z).to_value(u.Mpc**3 / u.sr)


def draw_galaxies(area: u.Quantity, rng: np.random.Generator, model: SkyModel = SkyModel(),
                  dz: float = 0.02, dlogl: float = 0.04) -> Table:
    """Draw the galaxies in a patch of solid angle ``area``.

    Returns a Table with ``z``, ``log_lir`` (L_sun), ``t_dust`` (K) and ``flux_<band>``
    (mJy) for every band of the instrument table; positions are assigned by
    :func:`place_galaxies`. Bins of (z, L_IR) too faint to reach ``model.min_flux_mjy`` in
    any band, even for a cold SED, are skipped, which keeps deep simulations fast.
    """
    omega_sr = area.to_value(u.sr)
    z_edges = np.arange(model.z_range[0], model.z_range[1] + dz / 2, dz)
    l_edges = np.arange(model.log_l_range[0], model.log_l_range[1] + dlogl / 2, dlogl)
    zc = 0.5 * (z_edges[1:] + z_edges[:-1])
    lc = 0.5 * (l_edges[1:] + l_edges[:-1])
    zz, ll = np.meshgrid(zc, lc, indexing="ij")
    dv = np.interp(zz, *_volume_table()) * dz * omega_sr
    expected = luminosity_function(ll, zz, model) * dlogl * dv
    # A 2σ-cold SED is the brightest in the sub-mm at fixed L_IR: use it to skip bins.
    t_cold = dust_temperature(zz, ll, model) * 10 ** (-2 * model.t_dust_scatter_dex)
    brightest = np.max(np.stack(list(band_fluxes(ll, zz, t_cold, model).values())), axis=0)
    expected[brightest < 0.8 * model.min_flux_mjy] = 0.0
    counts = rng.poisson(expected).ravel()
    n = int(counts.sum())
    z = np.repeat(zz.ravel(), counts) + rng.uniform(-dz / 2, dz / 2, n)
    log_l = np.repeat(ll.ravel(), counts) + rng.uniform(-dlogl / 2, dlogl / 2, n)
    t_dust = dust_temperature(z, log_l, model) * 10 ** rng.normal(0.0, model.t_dust_scatter_dex, n)
    fluxes = band_fluxes(log_l, z, t_dust, model)
    keep = np.max(np.stack(list(fluxes.values())), axis=0) >= model.min_flux_mjy
    table = Table({"z": z[keep], "log_lir": log_l[keep], "t_dust": t_dust[keep] * u.K})
    for name, values in fluxes.items():
        table[f"flux_{name}"] = values[keep] * u.mJy
    return table


def place_galaxies(n: int, z: np.ndarray, half_size: u.Quantity, rng: np.random.Generator,
                   model: SkyModel = SkyModel()) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (arcsec, tangent plane) in a square of half-side ``half_size``.

    A fraction ``model.clustered_fraction`` of galaxies, taken in redshift order so clump
    members share a redshift, is placed in Gaussian clumps of ``clump_radius_arcsec``; the
    rest is uniform. Offsets wrap periodically so the density stays uniform at the edges.
    """
    h = half_size.to_value(u.arcsec)
    x = rng.uniform(-h, h, n)
    y = rng.uniform(-h, h, n)
    n_clustered = int(round(model.clustered_fraction * n))
    if n_clustered > 1 and model.members_per_clump > 1:
        chosen = rng.choice(n, n_clustered, replace=False)
        chosen = chosen[np.argsort(z[chosen])]
        n_clumps = max(1, int(n_clustered / model.members_per_clump))
        clump_of = np.minimum((np.arange(n_clustered) * n_clumps) // n_clustered, n_clumps - 1)
        cx, cy = rng.uniform(-h, h, n_clumps), rng.uniform(-h, h, n_clumps)
        r = model.clump_radius_arcsec
        x[chosen] = (cx[clump_of] + rng.normal(0, r, n_clustered) + h) % (2 * h) - h
        y[chosen] = (cy[clump_of] + rng.normal(0, r, n_clustered) + h) % (2 * h) - h
    return x, y


def differential_counts(flux_mjy: np.ndarray, area: u.Quantity, edges_mjy: np.ndarray):
    """Differential number counts dN/dS (Jy⁻¹ deg⁻²) and Poisson errors in flux bins.

    Returns bin centres (geometric, mJy), counts and 1σ errors.
    """
    n, _ = np.histogram(flux_mjy, bins=edges_mjy)
    width_jy = np.diff(edges_mjy) / 1e3
    area_deg2 = area.to_value(u.deg**2)
    centres = np.sqrt(edges_mjy[1:] * edges_mjy[:-1])
    return centres, n / width_jy / area_deg2, np.sqrt(np.maximum(n, 1)) / width_jy / area_deg2
