"""Render a simulated sky (from :mod:`galaxysr.sky`) into SPIRE and SCUBA-2 maps.

Each band is rendered on its own native grid (instrument table) with a celestial TAN WCS:
point sources at sub-pixel positions, convolved analytically with the band's Gaussian beam
(a source of S mJy peaks at S mJy/beam), white instrumental noise, SPIRE maps
mean-subtracted as real SPIRE maps are, and an optional non-uniform (daisy-like) SCUBA-2
coverage with its rms map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from .instruments import BANDS, SPIRE_BANDS, TARGET_BAND, Band
from .maps import Field, Map, tan_wcs
from .sky import SkyModel, draw_galaxies, place_galaxies


@dataclass
class SimulationConfig:
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
    scuba2_coverage : str
        ``"uniform"`` or ``"daisy"`` (rms rising away from the centre, NaN outside the
        inscribed circle, as a SCUBA-2 daisy map).
    margin_arcsec : float
        Galaxies are drawn this far beyond the map edges, so edge pixels are confused too.
    sky : SkyModel
        Population parameters.
    """

    area_deg2: float = 0.25
    seed: int = 1
    ra_deg: float = 150.1
    dec_deg: float = 2.2
    noise_scale: float = 1.0
    scuba2_coverage: str = "uniform"
    margin_arcsec: float = 120.0
    sky: SkyModel = field(default_factory=SkyModel)

    def to_dict(self) -> dict:
        return asdict(self)


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
    sigma = float((fwhm / pixel).decompose()) / (2 * np.sqrt(2 * np.log(2)))
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
    return table


def simulate_field(config: SimulationConfig, bands=(*SPIRE_BANDS, TARGET_BAND),
                   truth: Table | None = None) -> Field:
    """Simulate a Field: truth catalogue and maps of ``bands`` on their native grids."""
    truth = simulate_catalogue(config) if truth is None else truth
    center = SkyCoord(config.ra_deg * u.deg, config.dec_deg * u.deg)
    side = np.sqrt(config.area_deg2) * u.deg
    noise_rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(3)[2])
    maps = {}
    for name in bands:
        band = BANDS[name]
        wcs, shape = band_grid(band, center, side)
        image = render_catalogue(truth, band, wcs, shape)
        rms0 = band.instrumental_noise.to_value(u.mJy / u.beam) * config.noise_scale
        noise = None
        if band.instrument == "SPIRE":
            image += rms0 * noise_rng.standard_normal(shape)
            image -= image.mean()  # SPIRE maps are high-pass filtered to zero mean
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
        raise FileExistsError(f"{out}: not empty; pass --overwrite to replace the mock pair")
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
