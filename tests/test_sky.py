from dataclasses import replace

import numpy as np
import pytest
from astropy import units as u
from astropy.modeling import fitting, models
from astropy.stats import sigma_clipped_stats
from astropy.table import Table

from galaxysr.cli import main
from galaxysr.instruments import BANDS, SPIRE_BANDS
from galaxysr.maps import read_field
from galaxysr.simulate import SimulationConfig, band_grid, render_catalogue, simulate_field
from galaxysr.sky import SkyModel, differential_counts, draw_galaxies

from importlib.resources import files

COUNTS = files("galaxysr") / "data" / "counts"


@pytest.mark.parametrize("band", list(BANDS))
def test_injected_point_source_peaks_at_its_flux_at_its_position(band):
    from astropy.coordinates import SkyCoord

    b = BANDS[band]
    rng = np.random.default_rng(7)
    wcs, shape = band_grid(b, SkyCoord(150 * u.deg, 2 * u.deg), 40 * b.pixel)
    x0, y0 = 20 + rng.uniform(-0.5, 0.5), 19 + rng.uniform(-0.5, 0.5)
    ra, dec = wcs.pixel_to_world_values(x0, y0)
    truth = Table({"ra": [ra] * u.deg, "dec": [dec] * u.deg, f"flux_{band}": [37.0] * u.mJy})
    image = render_catalogue(truth, b, wcs, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    guess = models.Gaussian2D(image.max(), 20, 19, b.sigma_pixels(), b.sigma_pixels())
    fit = fitting.LevMarLSQFitter()(guess, xx, yy, image)
    assert fit.amplitude.value == pytest.approx(37.0, rel=0.02)
    assert abs(fit.x_mean.value - x0) < 0.1 and abs(fit.y_mean.value - y0) < 0.1
    assert abs(fit.x_stddev.value) == pytest.approx(b.sigma_pixels(), rel=0.02)


def test_same_seed_same_field_other_seed_other_field():
    config = SimulationConfig(area_deg2=0.01, seed=5)
    a, b = simulate_field(config), simulate_field(config)
    c = simulate_field(SimulationConfig(area_deg2=0.01, seed=6))
    np.testing.assert_array_equal(a["spire_250"].data, b["spire_250"].data)
    assert len(a.truth) == len(b.truth)
    assert not np.array_equal(a["spire_250"].data, c["spire_250"].data)


def test_fluxes_are_physically_correlated_across_bands():
    cat = draw_galaxies(0.1 * u.deg**2, np.random.default_rng(1))
    s250, s500 = np.log10(cat["flux_spire_250"]), np.log10(cat["flux_spire_500"])
    assert np.corrcoef(s250, s500)[0, 1] > 0.8
    s450 = np.asarray(cat["flux_scuba2_450"])
    bright = np.asarray(cat["flux_spire_350"]) > 5
    # 450 µm lies between 350 and 500 µm on a modified blackbody
    between = (s450 <= np.maximum(cat["flux_spire_350"], cat["flux_spire_500"]) * 1.001) & \
              (s450 >= np.minimum(cat["flux_spire_350"], cat["flux_spire_500"]) * 0.999)
    assert between[bright].mean() > 0.99


def _literature(name):
    table = Table.read(COUNTS / name)
    return np.asarray(table["S"]), np.asarray(table["log10_dNdS"]), np.asarray(table["err_plus"])


@pytest.mark.parametrize("band", SPIRE_BANDS)
def test_spire_counts_match_bethermin_2012(band):
    # Tolerance: 0.2 dex (a model-systematic floor; cf. the 0.1–0.2 dex spread between
    # Béthermin 2012, Oliver 2010 and Glenn 2010) plus twice the published error.
    area = 2 * u.deg**2
    cat = draw_galaxies(area, np.random.default_rng(11))
    s, ref, err = _literature(f"bethermin2012_{band.replace('_', '')}.ecsv")
    sel = (s >= 5) & (s <= 50)
    edges = np.exp(np.log(s[sel])[:, None] + [-0.1, 0.1])
    for (lo, hi), value, e in zip(edges, ref[sel], err[sel]):
        _, n, _ = differential_counts(np.asarray(cat[f"flux_{band}"]), area, np.array([lo, hi]))
        assert abs(np.log10(n[0]) - value) < 0.2 + 2 * e, (band, lo, hi)


def test_scuba2_450_counts_match_studies():
    # Wang et al. (2017) show Herschel 350/500 counts lie ~0.3-0.45 dex above SCUBA-2 450
    # counts (beam/clustering). A model on the Herschel counts therefore sits up to that
    # much above STUDIES: we require < 0.45 dex and the published slope within 0.3.
    area = 2 * u.deg**2
    cat = draw_galaxies(area, np.random.default_rng(12))
    s, ref, err = _literature("wang2017_scuba450.ecsv")
    centres, n, _ = differential_counts(np.asarray(cat["flux_scuba2_450"]), area,
                                        np.geomspace(3.5, 25, 6))
    model = np.interp(np.log10(centres), np.log10(s), ref)
    assert np.all(np.abs(np.log10(n) - model) < 0.45)
    slope = np.polyfit(np.log10(centres), np.log10(n), 1)[0]
    assert abs(slope + 2.59) < 0.3


def test_confusion_noise_matches_nguyen_2010():
    field = simulate_field(SimulationConfig(area_deg2=0.5, seed=21, noise_scale=0.0),
                           bands=SPIRE_BANDS)
    for band in SPIRE_BANDS:
        _, _, std = sigma_clipped_stats(field[band].data, sigma=5, maxiters=None)
        expected = BANDS[band].confusion.to_value(u.mJy / u.beam)
        assert std == pytest.approx(expected, rel=0.25), band


def test_spire_maps_are_mean_subtracted_and_scuba2_daisy_has_holes():
    field = simulate_field(SimulationConfig(area_deg2=0.02, seed=2, scuba2_coverage="daisy"))
    for band in SPIRE_BANDS:
        assert abs(np.mean(field[band].data)) < 1e-3
    m = field["scuba2_450"]
    assert np.isnan(m.data[0, 0]) and np.isfinite(m.data[m.shape[0] // 2, m.shape[1] // 2])
    assert np.nanmax(m.noise) > 3 * np.nanmin(m.noise)


def test_simulate_command_writes_a_readable_field(tmp_path):
    assert main(["simulate", "--area", "0.01", "--seed", "3", "--out", str(tmp_path / "f")]) == 0
    field = read_field(tmp_path / "f")
    assert set(field.maps) == {"spire_250", "spire_350", "spire_500", "scuba2_450"}
    assert len(field.truth) > 10 and field.truth["ra"].unit == u.deg
    assert main(["simulate", "--area", "0.01", "--n-fields", "2", "--out", str(tmp_path / "many")]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["field_00001", "field_00002"]


# -- randomised training skies (domain randomisation) and the held-out sky -----------------

from galaxysr.simulate import HELD_OUT_SKY, SkyPrior, held_out_simulation  # noqa: E402
from galaxysr.sky import SED_FAMILIES, T_RELATIONS, colour_450_250, expected_counts_offsets  # noqa: E402


def _rms(offsets):
    return float(np.sqrt(np.mean(np.concatenate(list(offsets.values())) ** 2)))


@pytest.mark.parametrize("target,seed", [(0.45, 7), (1.0, 3)])
def test_prior_reaches_both_ends_of_the_colour_range_on_the_counts(target, seed):
    # The training prior must span S450/S250 ≈ 0.45–1.0 (galaxysr's own sky: 0.54; real
    # COSMOS sources 0.72; independent sky models ≈ 0.8) while staying on the SPIRE counts.
    prior = SkyPrior()
    assert prior.colour_450_250[0] <= 0.45 and prior.colour_450_250[1] >= 1.0
    sky = prior.draw_sky(np.random.default_rng(seed), target_colour=target)
    cat = draw_galaxies(1 * u.deg**2, np.random.default_rng(99), sky)   # an independent draw
    assert colour_450_250(cat) == pytest.approx(target, rel=0.08)
    assert _rms(expected_counts_offsets(sky)) <= prior.max_counts_rms_dex
    # The realised counts, not only the expected ones, sit on Béthermin et al. (2012).
    from galaxysr.sky import counts_offsets
    assert _rms(counts_offsets(cat, 1 * u.deg**2)) <= prior.max_counts_rms_dex + 0.05


def test_training_fields_differ_in_sky_noise_and_calibration():
    prior = SkyPrior()
    a, b = prior.draw(1, 0.04), prior.draw(2, 0.04)
    assert prior.draw(1, 0.04) == a                       # a pure function of the seed
    assert a.sky != b.sky and a.noise_scale != b.noise_scale and a.calibration != b.calibration
    for config in (a, b):
        assert prior.spire_noise_scale[0] <= config.noise_scale <= prior.spire_noise_scale[1]
        assert all(abs(c - 1) <= prior.calibration_jitter for c in config.calibration)


def test_held_out_sky_is_never_drawn_in_training():
    # By construction: its SED family and T(z) relation are not among the prior's choices.
    prior = SkyPrior()
    assert HELD_OUT_SKY.sed_family in SED_FAMILIES and HELD_OUT_SKY.t_relation in T_RELATIONS
    assert HELD_OUT_SKY.sed_family not in prior.sed_families
    assert HELD_OUT_SKY.t_relation not in prior.t_relations
    candidates = [prior._candidate(np.random.default_rng(s)) for s in range(200)]
    assert not any(c.sed_family == HELD_OUT_SKY.sed_family or c.t_relation == HELD_OUT_SKY.t_relation
                   for c in candidates)
    # ... and it is a realistic sky: on the counts, with a colour near real sources'.
    assert _rms(expected_counts_offsets(HELD_OUT_SKY)) < 0.12
    cat = draw_galaxies(1 * u.deg**2, np.random.default_rng(4), HELD_OUT_SKY)
    assert 0.7 < colour_450_250(cat) < 0.9


def test_spatially_varying_spire_noise_is_in_the_maps_and_their_noise_maps():
    config = held_out_simulation(seed=5, area_deg2=0.04, sky=SkyModel(phistar_scale=1e-6))  # (almost) no galaxies
    field = simulate_field(config, bands=SPIRE_BANDS)
    for band in SPIRE_BANDS:
        m = field[band]
        expected = BANDS[band].instrumental_noise.to_value(u.mJy / u.beam) * config.noise_scale
        assert np.median(m.noise) == pytest.approx(expected, rel=0.25)
        assert m.noise.max() / m.noise.min() > 1.3                 # it varies across the field
        # The map's scatter follows its noise map, pixel by pixel.
        assert np.std(m.data / m.noise) == pytest.approx(1.0, rel=0.05)


def test_calibration_errors_scale_the_spire_maps():
    base = SimulationConfig(area_deg2=0.01, seed=8, noise_scale=0.0)
    off = replace(base, calibration=(1.05, 1.0, 0.95))
    a, b = simulate_field(base, bands=SPIRE_BANDS), simulate_field(off, bands=SPIRE_BANDS)
    for band, factor in zip(SPIRE_BANDS, off.calibration):
        np.testing.assert_allclose(b[band].data, factor * a[band].data, rtol=1e-5, atol=1e-5)
