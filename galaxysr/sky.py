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

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import ClassVar

import numpy as np
from astropy import constants as const
from astropy import units as u
from astropy.table import Table

from .config import ConfigRecord
from .instruments import BANDS

__all__ = ["SED_FAMILIES", "T_RELATIONS", "SkyModel", "luminosity_function", "dust_temperature", "sed_shape",
           "band_fluxes", "draw_galaxies", "place_galaxies", "differential_counts", "COUNT_BANDS",
           "COUNT_RANGE_MJY", "reference_counts", "counts_offsets", "expected_counts_offsets", "fit_counts",
           "colour_450_250"]

_L_SUN_W = const.L_sun.to_value(u.W)
_H_OVER_K = (const.h / const.k_B).to_value(u.s * u.K)
_MPC_M = u.Mpc.to(u.m)


#: Far-IR SED families (see :func:`sed_shape`).
SED_FAMILIES = ("mbb", "greybody", "powerlaw", "two_temperature")
#: Dust temperature–redshift relations (see :func:`dust_temperature`).
T_RELATIONS = ("linear", "power", "flat", "saturating")


@dataclass(frozen=True)
class SkyModel(ConfigRecord):
    """Parameters of the galaxy population (all documented in ``docs/simulator.md``).

    Luminosity function φ(L, z) per Mpc³ per dex (Gruppioni et al. 2013, total IR):
    φ* (L/L*)^(1-α) exp[-log10²(1 + L/L*) / (2σ²)], with L* ∝ (1+z)^k_L and
    φ* ∝ (1+z)^k_φ, both broken at a redshift. The defaults are the calibrated
    reference sky; :mod:`galaxysr.simulate` draws other skies around it for training.
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
    sed_family: str = "mbb"            # one of SED_FAMILIES
    beta: float = 1.8                  # dust emissivity index
    lambda0_um: float = 200.0          # greybody: wavelength where the dust turns optically thick (µm)
    alpha_mir: float = 2.0             # powerlaw: mid-IR slope S_ν ∝ ν^-α on the Wien side
    t_warm: float = 60.0               # two_temperature: warm component (K)
    warm_luminosity_fraction: float = 0.3  # two_temperature: share of the MBB luminosity that is warm
    t_relation: str = "linear"         # one of T_RELATIONS
    t_dust_at_z2: float = 31.7         # K at z = 2 and L_IR = 10^11.5 L_sun (Schreiber et al. 2018: 32.9; tuned)
    t_dust_slope: float = 4.6          # linear: K per unit redshift
    t_dust_power: float = 0.5          # power: T ∝ (1+z)^power
    t_dust_zscale: float = 1.0         # saturating: T approaches its high-z value over this redshift scale
    t_dust_min: float = 18.0           # K
    t_dust_lslope: float = 8.0         # K per dex of L_IR above 10^11.5 L_sun (hotter = brighter)
    warm_fraction: float = 0.0         # share of galaxies with dust warmer by warm_delta_t (AGN-heated, starbursts)
    warm_delta_t: float = 15.0         # K
    fir_fraction: float = 0.71         # share of L_IR in the far-IR SED; the rest is warm mid-IR dust
    t_dust_scatter_dex: float = 0.08   # log-normal scatter of T_dust
    min_flux_mjy: float = 0.25         # faintest galaxy kept, in its brightest band
    clustered_fraction: float = 0.3
    members_per_clump: float = 4.0
    clump_radius_arcsec: float = 20.0

    def __post_init__(self):
        if self.sed_family not in SED_FAMILIES:
            raise ValueError(f"unknown SED family {self.sed_family!r}; choose one of {', '.join(SED_FAMILIES)}")
        if self.t_relation not in T_RELATIONS:
            raise ValueError(f"unknown T(z) relation {self.t_relation!r}; choose one of {', '.join(T_RELATIONS)}")

    WHAT: ClassVar[str] = "SkyModel parameter(s)"


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

    Every relation passes through ``t_dust_at_z2`` at z = 2 and L_IR = 10^11.5 L_sun and
    adds a rise with luminosity (the L_IR–T relation, e.g. Casey et al. 2018):

    - ``linear``: + slope (z − 2) (the redshift trend of Schreiber et al. 2018);
    - ``power``: × ((1+z)/3)^power (Magnelli et al. 2014-like);
    - ``flat``: no redshift evolution;
    - ``saturating``: rises from ``t_dust_min`` at z = 0 and levels off beyond ~2 zscale.
    """
    z = np.asarray(z, dtype=float)
    t2 = model.t_dust_at_z2
    if model.t_relation == "linear":
        t = t2 + model.t_dust_slope * (z - 2.0)
    elif model.t_relation == "power":
        t = t2 * ((1 + z) / 3.0) ** model.t_dust_power
    elif model.t_relation == "flat":
        t = np.full_like(z, t2)
    else:  # saturating
        rise = -np.expm1(-z / model.t_dust_zscale) / -np.expm1(-2.0 / model.t_dust_zscale)
        t = model.t_dust_min + (t2 - model.t_dust_min) * rise
    t = t + model.t_dust_lslope * (np.asarray(log_l) - 11.5)
    return np.maximum(t, model.t_dust_min)


def _planck_nu3(nu_hz: np.ndarray, t_k: np.ndarray) -> np.ndarray:
    """ν³ / (exp(hν/kT) − 1), the shape of B_ν(T) (arbitrary units)."""
    x = np.clip(_H_OVER_K * nu_hz / t_k, 1e-6, 700.0)
    return nu_hz**3 / np.expm1(x)


@lru_cache(maxsize=16)
def _powerlaw_turnover(beta: float, alpha_mir: float) -> float:
    """x_c = hν_c/kT where a thin MBB's log slope 3 + β − x/(1 − e^-x) falls to −α (Casey 2012)."""
    from scipy.optimize import brentq

    return float(brentq(lambda x: 3 + beta - x / -np.expm1(-x) + alpha_mir, 1e-3, 60.0))


def _single_shape(nu_hz, t_k, model: SkyModel):
    family = model.sed_family
    if family == "greybody":
        nu0 = const.c.value / (model.lambda0_um * 1e-6)
        return -np.expm1(-(nu_hz / nu0) ** model.beta) * _planck_nu3(nu_hz, t_k) * nu0**model.beta
    mbb = nu_hz**model.beta * _planck_nu3(nu_hz, t_k)
    if family == "powerlaw":
        nu_c = _powerlaw_turnover(model.beta, model.alpha_mir) * t_k / _H_OVER_K
        at_c = nu_c**model.beta * _planck_nu3(nu_c, t_k)
        return np.where(nu_hz <= nu_c, mbb, at_c * (nu_hz / nu_c) ** -model.alpha_mir)
    return mbb


def sed_shape(nu_hz: np.ndarray, t_k: np.ndarray, model: SkyModel) -> np.ndarray:
    """Unnormalised rest-frame far-IR SED L_ν(ν) of dust at temperature ``t_k``.

    Families (``model.sed_family``):

    - ``mbb``: optically thin modified blackbody ν^β B_ν(T);
    - ``greybody``: general opacity (1 − exp[−(ν/ν0)^β]) B_ν(T), optically thick shortward of
      ``lambda0_um`` (e.g. Casey 2012; Conley et al. 2011);
    - ``powerlaw``: thin MBB joined to a mid-IR power law ν^−α where their slopes match (Casey 2012);
    - ``two_temperature``: thin MBBs at T and at ``t_warm``, the warm one carrying
      ``warm_luminosity_fraction`` of the luminosity.
    """
    if model.sed_family != "two_temperature":
        return _single_shape(nu_hz, t_k, model)
    cold = replace(model, sed_family="mbb")
    t_warm = np.maximum(model.t_warm, np.asarray(t_k) + 10.0)
    f = model.warm_luminosity_fraction
    return ((1 - f) * _single_shape(nu_hz, t_k, cold) / _norm_at(t_k, cold)
            + f * _single_shape(nu_hz, t_warm, cold) / _norm_at(t_warm, cold))


_NORM_KEYS = ("sed_family", "beta", "lambda0_um", "alpha_mir", "t_warm", "warm_luminosity_fraction")


@lru_cache(maxsize=64)
def _norm_table(key: tuple) -> tuple[np.ndarray, np.ndarray]:
    """∫_{8 µm}^{1000 µm} sed_shape dν on a temperature grid (same arbitrary units)."""
    model = SkyModel(**dict(zip(_NORM_KEYS, key)))
    temps = np.linspace(10.0, 150.0, 281)
    nu = np.geomspace(const.c.value / 1000e-6, const.c.value / 8e-6, 2000)
    integrand = sed_shape(nu[None, :], temps[:, None], model)
    return temps, np.trapezoid(integrand, nu, axis=1)


def _norm_at(t_k, model: SkyModel):
    temps, norms = _norm_table(tuple(getattr(model, k) for k in _NORM_KEYS))
    return np.interp(t_k, temps, norms)


def band_fluxes(log_l: np.ndarray, z: np.ndarray, t_dust: np.ndarray, model: SkyModel,
                bands=tuple(BANDS)) -> dict[str, np.ndarray]:
    """Observed flux densities (mJy) in ``bands`` of galaxies with L_IR, z and T_dust.

    S_ν = (1+z) L_ν(ν(1+z)) / (4π D_L²), with L_ν the family's far-IR SED
    (:func:`sed_shape`) carrying a fraction ``fir_fraction`` of L_IR over rest-frame
    8–1000 µm (the rest is warm dust and PAHs that emit shortward of the SPIRE bands at the
    redshifts that matter).
    """
    norm = _norm_at(t_dust, model)
    d_l = np.interp(z, *_luminosity_distance_table()) * _MPC_M
    lum_w = model.fir_fraction * 10 ** np.asarray(log_l) * _L_SUN_W
    out = {}
    for name in bands:
        nu_obs = const.c.value / BANDS[name].wavelength.to_value(u.m)
        l_nu = lum_w * sed_shape(nu_obs * (1 + z), t_dust, model) / norm  # W/Hz
        s_nu = (1 + z) * l_nu / (4 * np.pi * d_l**2)  # W/m²/Hz
        out[name] = s_nu / 1e-29  # 1 mJy = 1e-29 W m⁻² Hz⁻¹
    return out


@lru_cache(maxsize=1)
def _luminosity_distance_table():
    from astropy.cosmology import Planck18  # imported on first use: it takes a second

    z = np.linspace(0.0, 10.0, 2001)
    return z, Planck18.luminosity_distance(z).to_value(u.Mpc)


@lru_cache(maxsize=1)
def _volume_table():
    from astropy.cosmology import Planck18

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
    if model.warm_fraction > 0:
        t_dust = t_dust + model.warm_delta_t * (rng.uniform(size=n) < model.warm_fraction)
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


#: Bands and flux range (mJy) over which skies are held to the published counts.
COUNT_BANDS = ("spire_250", "spire_350", "spire_500")
COUNT_RANGE_MJY = (5.0, 50.0)


def reference_counts(band: str, survey: str = "bethermin2012") -> Table:
    """Published differential counts of ``band`` shipped with galaxysr (``S`` in mJy,
    ``log10_dNdS`` in Jy⁻¹ deg⁻², errors in dex); Béthermin et al. (2012) by default."""
    from importlib.resources import files

    path = files("galaxysr") / "data" / "counts" / f"{survey}_{band.replace('_', '')}.ecsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shipped {survey} counts for {band}")
    return Table.read(path)


@lru_cache(maxsize=16)
def _count_bins(band: str, flux_range_mjy: tuple[float, float]):
    """Bins ±10 % in flux around each published point of Béthermin et al. (2012) in
    ``flux_range_mjy``, and the published log10 dN/dS there (cached: read once)."""
    table = reference_counts(band)
    s = np.asarray(table["S"], float)
    sel = (s >= flux_range_mjy[0]) & (s <= flux_range_mjy[1])
    edges = np.stack([s[sel] * np.exp(-0.1), s[sel] * np.exp(0.1)], -1)
    return edges, np.asarray(table["log10_dNdS"], float)[sel]


def _offsets(fluxes: dict, weights, area_deg2: float, bands, flux_range_mjy) -> dict[str, np.ndarray]:
    out = {}
    for band in bands:
        edges, published = _count_bins(band, flux_range_mjy)
        flux = fluxes[band]
        n = np.array([np.sum(weights[(flux >= lo) & (flux < hi)]) for lo, hi in edges])
        dnds = np.maximum(n, 0.5) / (np.diff(edges, axis=1)[:, 0] / 1e3) / area_deg2
        out[band] = np.log10(dnds) - published
    return out


def counts_offsets(catalogue: Table, area: u.Quantity, bands=COUNT_BANDS,
                   flux_range_mjy: tuple[float, float] = COUNT_RANGE_MJY) -> dict[str, np.ndarray]:
    """log10 (simulated / Béthermin et al. 2012) differential counts of ``catalogue`` at each
    published flux point in ``flux_range_mjy``, per band (bins ±10 % in flux around each
    point; an empty bin counts as half a galaxy)."""
    fluxes = {b: np.asarray(catalogue[f"flux_{b}"], float) for b in bands}
    return _offsets(fluxes, np.ones(len(catalogue)), area.to_value(u.deg**2), bands, flux_range_mjy)


def expected_counts_offsets(model: SkyModel, bands=COUNT_BANDS,
                            flux_range_mjy: tuple[float, float] = COUNT_RANGE_MJY,
                            dz: float = 0.05, dlogl: float = 0.05, nodes: int = 5) -> dict[str, np.ndarray]:
    """Like :func:`counts_offsets` for the *expected* counts of ``model``: the luminosity
    function integrated on a (z, L_IR) grid with the temperature scatter by Gauss–Hermite
    quadrature, no Poisson draw — smooth in the parameters, so it can be fitted."""
    z_edges = np.arange(model.z_range[0], model.z_range[1] + dz / 2, dz)
    l_edges = np.arange(10.0, model.log_l_range[1] + dlogl / 2, dlogl)  # fainter never reach 5 mJy
    zz, ll = np.meshgrid(0.5 * (z_edges[1:] + z_edges[:-1]), 0.5 * (l_edges[1:] + l_edges[:-1]), indexing="ij")
    zz, ll = zz.ravel(), ll.ravel()
    number = luminosity_function(ll, zz, model) * dlogl * np.interp(zz, *_volume_table()) * dz * (u.deg**2).to(u.sr)
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    mean_t = dust_temperature(zz, ll, model)
    fluxes, weights = {b: [] for b in bands}, []
    for xi, wi in zip(x, w / w.sum()):
        for extra, share in ((0.0, 1 - model.warm_fraction), (model.warm_delta_t, model.warm_fraction)):
            if share > 0:
                for band, f in band_fluxes(ll, zz, mean_t * 10 ** (model.t_dust_scatter_dex * xi) + extra,
                                           model, bands).items():
                    fluxes[band].append(f)
                weights.append(number * wi * share)
    return _offsets({b: np.concatenate(f) for b, f in fluxes.items()}, np.concatenate(weights), 1.0, bands,
                    flux_range_mjy)


def fit_counts(model: SkyModel) -> tuple[SkyModel, dict[str, np.ndarray]]:
    """``model`` with its luminosity function (φ*, L*, σ) refitted to the SPIRE counts of
    Béthermin et al. (2012), and the expected count offsets after the fit (dex).

    A sky whose SEDs, temperatures or redshift distribution changed no longer sits on the
    observed counts; refitting the three LF parameters that set the counts' level, knee and
    bright-end slope brings it back, so randomised training skies keep realistic counts
    and confusion. Least squares over the published points in 5–50 mJy at 250/350/500 µm
    (about 2 s).
    """
    from scipy.optimize import least_squares

    def refitted(p):
        return replace(model, phistar_scale=model.phistar_scale * 10 ** p[0], log_lstar0=model.log_lstar0 + p[1],
                       sigma_lf=model.sigma_lf * 10 ** p[2])

    def residuals(p):
        return np.concatenate(list(expected_counts_offsets(refitted(p)).values()))

    fit = least_squares(residuals, [0.0, 0.0, 0.0], diff_step=1e-2, bounds=([-2, -0.6, -0.3], [2, 0.6, 0.3]))
    best = refitted(fit.x)
    return best, expected_counts_offsets(best)


def colour_450_250(catalogue: Table, min_flux_450_mjy: float = 5.0) -> float:
    """Median S450/S250 of the galaxies brighter than ``min_flux_450_mjy`` at 450 µm (the
    sources a 450 µm catalogue holds)."""
    s450 = np.asarray(catalogue["flux_scuba2_450"], float)
    s250 = np.asarray(catalogue["flux_spire_250"], float)
    bright = s450 >= min_flux_450_mjy
    return float(np.median(s450[bright] / s250[bright]))
