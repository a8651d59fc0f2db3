"""Re-observation: a catalogue drawn back through the SPIRE beams, its residuals and the forced
SPIRE fluxes (galaxysr.reobserve; issue "the catalogue must give back the SPIRE maps")."""

from dataclasses import replace

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from galaxysr.instruments import FWHM_PER_SIGMA, SPIRE_BANDS, get_band
from galaxysr.maps import MJY_PER_BEAM, Map, read_map, tan_wcs, write_map
from galaxysr.reobserve import FLAG_REFIT, forced_fluxes, refine, reobserve, residual, residuals

CENTRE = SkyCoord(150.0, 2.0, unit="deg")


def _spire_map(band: str, n: int = 72, data=None, noise: float | None = None) -> Map:
    b = get_band(band)
    wcs = tan_wcs(CENTRE, b.pixel, (n, n))
    data = np.zeros((n, n), np.float32) if data is None else np.asarray(data, np.float32)
    return Map(data, wcs, b, MJY_PER_BEAM, noise=None if noise is None else np.full((n, n), noise, np.float32))


def _catalogue(m: Map, x, y, fluxes: dict) -> Table:
    ra, dec = m.wcs.pixel_to_world_values(np.asarray(x, float), np.asarray(y, float))
    table = Table({"ra": ra * u.deg, "dec": dec * u.deg})
    for band, values in fluxes.items():
        table[f"flux_{band}"] = np.asarray(values, float) * u.mJy
    return table


def test_one_source_re_observed_is_the_instrument_beam_times_its_flux():
    m = _spire_map("spire_350")
    x, y, flux = 30.37, 41.8, 42.0
    drawn = reobserve(_catalogue(m, [x], [y], {"spire_350": [flux]}), m)
    sigma = get_band("spire_350").fwhm.to_value(u.arcsec) / FWHM_PER_SIGMA / get_band("spire_350").pixel.to_value(u.arcsec)
    yy, xx = np.mgrid[:m.shape[0], :m.shape[1]]
    beam = flux * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)
    np.testing.assert_allclose(drawn, beam, rtol=0.01, atol=1e-3 * flux)
    # On a pixel centre its peak is its flux: a point source of S mJy peaks at S mJy/beam.
    centred = reobserve(_catalogue(m, [30.0], [41.0], {"spire_350": [flux]}), m)
    assert centred[41, 30] == pytest.approx(flux, rel=1e-6) and centred.max() == centred[41, 30]


def test_the_true_catalogue_leaves_no_residual_on_a_noise_free_simulated_map():
    from galaxysr.simulate import SimulationConfig, simulate_field

    field = simulate_field(SimulationConfig(area_deg2=0.01, seed=5, noise_scale=0.0), bands=SPIRE_BANDS)
    for band in SPIRE_BANDS:
        truth = field.truth.copy()
        # The simulator scales each SPIRE band by its calibration factor: the map holds these fluxes.
        truth[f"flux_{band}"] = truth[f"flux_{band}"] * SimulationConfig(area_deg2=0.01, seed=5).calibration[
            SPIRE_BANDS.index(band)]
        resid = residual(truth, field[band]).map.data
        peak = np.nanmax(np.abs(field[band].data))
        assert peak > 10  # a sky with sources, not an empty one
        assert np.nanmax(np.abs(resid)) < 1e-4 * peak


def test_a_wrong_flux_leaves_a_residual_peak_at_its_source_and_raises_chi2():
    rng = np.random.default_rng(3)
    m = _spire_map("spire_250", noise=2.0)
    x, y, s = np.array([20.0, 50.0]), np.array([30.0, 45.0]), np.array([60.0, 30.0])
    sky = reobserve(_catalogue(m, x, y, {"spire_250": s}), m)
    m = replace(m, data=(sky + rng.normal(0, 2.0, m.shape)).astype(np.float32))
    right = residual(_catalogue(m, x, y, {"spire_250": s}), m)
    wrong = residual(_catalogue(m, x, y, {"spire_250": [60.0, 10.0]}), m)
    assert right.chi2_per_pixel == pytest.approx(1.0, abs=0.15)
    assert right.n_sources_above_5sigma == 0
    # 20 mJy missing over one beam: Σ (20 g / 2)² = 100 π σ² ≈ 515 more over the map's 5184 pixels.
    assert wrong.chi2_per_pixel - right.chi2_per_pixel == pytest.approx(0.1, abs=0.03)
    assert wrong.n_sources_above_5sigma == 1 and wrong.max_source_snr > 5


def test_forced_fluxes_recover_two_sources_half_a_beam_apart_within_their_errors():
    band = get_band("spire_250")
    sigma = band.fwhm.to_value(u.arcsec) / FWHM_PER_SIGMA / band.pixel.to_value(u.arcsec)
    fwhm_px = sigma * FWHM_PER_SIGMA
    x = np.array([35.0, 35.0 + 0.5 * fwhm_px, 12.0])
    y = np.array([36.0, 36.4, 60.0])
    s = np.array([40.0, 20.0, 15.0])
    hits = []
    for seed in range(6):
        m = _spire_map("spire_250", noise=2.0)
        sky = reobserve(_catalogue(m, x, y, {"spire_250": s}), m)
        m = replace(m, data=(sky + 3.0 + np.random.default_rng(seed).normal(0, 2.0, m.shape)).astype(np.float32))
        flux, err, background = forced_fluxes(m, x, y)
        assert background == pytest.approx(3.0, abs=0.5)  # a pedestal is the background's, not the sources'
        assert np.all(err[:2] > err[2])  # sharing light widens a blended pair's errors
        hits.append(np.abs(flux - s) < 3 * err)
    assert np.mean(hits) > 0.9
    exact, _, _ = forced_fluxes(_spire_map("spire_250", data=reobserve(_catalogue(_spire_map("spire_250"), x, y,
                                                                                  {"spire_250": s}),
                                                                       _spire_map("spire_250")), noise=1.0), x, y)
    np.testing.assert_allclose(exact, s, rtol=1e-3)


def test_forced_fluxes_are_not_negative_and_an_off_map_source_gets_none():
    m = _spire_map("spire_500", noise=1.0)
    m = replace(m, data=np.random.default_rng(0).normal(0, 1.0, m.shape).astype(np.float32))
    flux, err, _ = forced_fluxes(m, np.array([10.0, 20.0, -60.0]), np.array([10.0, 30.0, 5.0]))
    assert np.all(flux[:2] >= 0) and np.all(np.isfinite(err[:2]))
    assert np.isnan(flux[2]) and np.isnan(err[2])


def test_refine_adds_forced_spire_fluxes_and_flags_a_network_flux_that_disagrees():
    maps, x, y = {}, np.array([20.0, 40.0]), np.array([25.0, 40.0])
    truth = {"spire_250": [50.0, 30.0], "spire_350": [40.0, 25.0], "spire_500": [25.0, 15.0]}
    for band in SPIRE_BANDS:
        m = _spire_map(band, n=48, noise=1.0)
        # Every band's map on its own pixels, the sources at the same sky positions.
        ra, dec = _spire_map("spire_250", n=72).wcs.pixel_to_world_values(x, y)
        bx, by = m.wcs.world_to_pixel_values(ra, dec)
        sky = reobserve(_catalogue(m, bx, by, {band: truth[band]}), m)
        maps[band] = replace(m, data=(sky + np.random.default_rng(1).normal(0, 1.0, m.shape)).astype(np.float32))
    base = _spire_map("spire_250", n=72)
    cat = _catalogue(base, x, y, {"spire_250": [50.0, 60.0]})  # the network's second 250 µm flux is 2× wrong
    cat["flux_spire_250_err"] = [2.0, 2.0] * u.mJy
    out = refine(cat, maps)
    for band in SPIRE_BANDS:
        np.testing.assert_allclose(np.asarray(out[f"flux_{band}_forced"]), truth[band], rtol=0.1)
        assert out[f"flux_{band}_forced"].unit == u.mJy and out[f"flux_{band}_forced"].description
    assert list(out["flags"] & FLAG_REFIT) == [0, FLAG_REFIT]
    # Re-observed with its forced fluxes, the catalogue explains the maps.
    for band, r in residuals(out, maps).items():
        assert r.chi2_per_pixel < 1.3, band


def test_residual_extensions_round_trip_with_their_wcs(tmp_path):
    m = _spire_map("spire_250", noise=1.0)
    m = replace(m, data=np.random.default_rng(0).normal(0, 1.0, m.shape).astype(np.float32))
    cat = _catalogue(m, [30.0], [30.0], {"spire_250": [5.0]})
    r = residual(cat, m)
    out = Map(np.zeros((40, 40), np.float32), tan_wcs(CENTRE, 2 * u.arcsec, (40, 40)), get_band("scuba2_450"),
              MJY_PER_BEAM, residuals={"spire_250": r.as_extension()})
    back = read_map(write_map(out, tmp_path / "out.fits"))
    got = back.residuals["spire_250"]
    np.testing.assert_allclose(got.data, r.map.data, rtol=1e-6)
    assert got.band.name == "spire_250" and got.unit == MJY_PER_BEAM
    np.testing.assert_allclose(got.wcs.wcs.crval, m.wcs.wcs.crval)
    np.testing.assert_allclose(got.pixel_scale.to_value(u.arcsec), 6.0, rtol=1e-6)
    assert got.meta["CHI2PIX"][0] == pytest.approx(r.chi2_per_pixel, abs=1e-4)


def test_predict_refine_writes_forced_spire_fluxes_and_the_residuals_on_the_input_grids(field_files, tmp_path,
                                                                                         capsys):
    from astropy.io import fits

    from galaxysr.cli import main

    folder, field = field_files
    out, cat = tmp_path / "out.fits", tmp_path / "cat.ecsv"
    assert main(["predict", str(folder / "cosmos_250.fits"), str(out), "--catalogue", str(cat), "--refine",
                 "--no-progress"]) == 0
    said = capsys.readouterr().out
    for band in SPIRE_BANDS:
        assert f"{band}: re-observed residual chi2/pixel" in said
    result = read_map(out)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul if h.name.startswith("RESID")] == ["RESID250", "RESID350", "RESID500"]
        assert all(f"RCHI{b[-3:]}" in hdul[0].header for b in SPIRE_BANDS)
    for band in SPIRE_BANDS:
        resid = result.residuals[band]
        assert resid.shape == field[band].shape  # on the input map's own grid
        np.testing.assert_allclose(resid.wcs.wcs.crval, field[band].wcs.wcs.crval)
        assert np.isfinite(resid.meta["CHI2PIX"][0])
    table = Table.read(cat)
    assert len(table) > 0
    for band in SPIRE_BANDS:
        assert table[f"flux_{band}_forced"].unit == u.mJy
        assert np.all(np.asarray(table[f"flux_{band}_forced"]) >= 0)
    # The catalogue explains most of each map: its residual's variance is below the map's own.
    for band in SPIRE_BANDS:
        data = field[band].data
        assert np.nanvar(result.residuals[band].data) < 0.8 * np.nanvar(data - np.nanmean(data)), band


def test_pixels_with_data_and_no_error_are_left_out_of_the_fit():
    """Archive maps have pixels along their scan edges with a value and no error: the fit must not
    turn every flux into NaN because of them."""
    m = _spire_map("spire_250", noise=1.0)
    x, y, s = np.array([30.0]), np.array([30.0]), np.array([25.0])
    noise = m.noise.copy()
    noise[:, :5] = np.nan
    noise[29, 31] = np.nan  # one under the source
    data = reobserve(_catalogue(m, x, y, {"spire_250": s}), m)
    m = replace(m, data=(data + np.random.default_rng(0).normal(0, 1.0, m.shape)).astype(np.float32), noise=noise)
    flux, err, _ = forced_fluxes(m, x, y)
    assert np.isfinite(flux[0]) and np.isfinite(err[0]) and abs(flux[0] - 25.0) < 3 * err[0]


# -- the training term: the catalogue head's SPIRE fluxes against the input maps ------------------

A1689 = "data/real/A1689_1342201247"   # packaged SPIRE maps as the archive names them, no 450 µm map


def _head_truth(seed: int = 4):
    """(raw head outputs stating a truth, per-band noise-free input maps of that truth (mJy/beam),
    the truth's pixel positions and fluxes) on a 64-pixel tile of 2″ pixels."""
    from test_catalogue_head import _perfect_cells, _planes

    from galaxysr.simulate import render_sources

    planes, truth, wcs = _planes(seed)
    raw = np.repeat(np.repeat(_perfect_cells(planes, confidence=30.0), 2, 0), 2, 1)[None]
    x, y = wcs.world_to_pixel_values(np.asarray(truth["ra"]), np.asarray(truth["dec"]))
    maps = [render_sources(x, y, np.asarray(truth[f"flux_{b}"], float), planes.shape[:2],
                           get_band(b).sigma_pixels(2 * u.arcsec)) for b in SPIRE_BANDS]
    return raw, np.stack(maps, -1)[None].astype(np.float32)


def _scaled_inputs(maps_mjy: np.ndarray, noise_mjy: float = 1.0) -> np.ndarray:
    from galaxysr.model import FluxScaling

    scaling = FluxScaling()
    return np.concatenate([scaling.forward(maps_mjy), scaling.forward(np.full_like(maps_mjy, noise_mjy))],
                          -1).astype(np.float32)


def test_the_training_term_draws_a_cell_as_the_instrument_beam_times_its_flux():
    """Issue 27, item 3: the re-observation term draws each cell through each SPIRE beam of the
    instrument table at its sub-cell position, peak = p × flux (to 0.1 %)."""
    from galaxysr.losses import ReobservationLoss

    raw, maps = _head_truth()
    drawn = ReobservationLoss().drawn(raw).numpy()
    assert maps.max() > 30
    np.testing.assert_allclose(drawn, maps, atol=1e-3 * maps.max())


def test_the_training_term_is_zero_for_the_true_catalogue_on_noise_free_maps_and_grows_with_a_wrong_one():
    from galaxysr.cells import CELL_LAYOUT
    from galaxysr.losses import ReobservationLoss

    raw, maps = _head_truth()
    loss = ReobservationLoss()
    inputs = _scaled_inputs(maps)
    assert float(loss(inputs, raw)) < 1e-4
    for channel, change in (("log_flux_spire_350", np.log10(1.3)), ("dx", 0.5)):
        wrong = raw.copy()
        wrong[..., CELL_LAYOUT.index(channel)] += change
        assert float(loss(inputs, wrong)) > 0.05, channel


def _spire_only_batch(model, n: int = 4):
    from galaxysr.conventions import InputConventions
    from galaxysr.datasets import TileStream, prepare_real, read_real_folder, resolve_path

    field = read_real_folder(resolve_path(A1689), (*model.input_bands, model.target_band))
    pair = prepare_real(field, model, InputConventions(), max_rms_mjy=2.0)
    assert pair.spire_only and np.isnan(pair.target).all() and np.isfinite(pair.inputs).all(-1).mean() > 0.3
    stream = TileStream([pair], model, InputConventions(), seed=3, min_good=0.6, name="A1689 SPIRE")
    return stream.take(n)


def test_a_real_phase_batch_without_a_450_map_trains_through_positions_and_fluxes():
    """Issue 27, item 3: real SPIRE maps with no 450 µm map (the archive's A1689 files) give a real
    batch whose only term is the re-observation; its gradient reaches the head's positions and
    SPIRE fluxes and the network's weights, and a few steps lower it."""
    import keras
    import tensorflow as tf

    from galaxysr.cells import CELL_LAYOUT
    from galaxysr.config import LossConfig
    from galaxysr.conventions import InputConventions
    from galaxysr.losses import CombinedLoss
    from galaxysr.model import ModelConfig, build_generator

    model = ModelConfig(tile=64, depth=3, base_filters=4, catalogue_head=True)
    inputs, targets = _spire_only_batch(model)
    loss = CombinedLoss.from_configs(LossConfig(reobservation=1.0), model, InputConventions(), real=True)
    keras.utils.set_random_seed(0)
    generator = build_generator(model)
    start = 1 + int(model.uncertainty_head) + model.sky_oversample**2
    predictions = tf.Variable(generator(inputs))
    with tf.GradientTape() as tape:
        terms = loss.per_term(targets, predictions, inputs)
    assert all(np.isfinite(v.numpy()).all() for v in terms.values()), terms
    grad = tape.gradient(terms["reobservation"], predictions).numpy()[..., start:]
    for channel in ("logit", "dy", "dx", "log_flux_spire_250", "log_flux_spire_350", "log_flux_spire_500"):
        assert np.abs(grad[..., CELL_LAYOUT.index(channel)]).sum() > 0, channel
    assert np.abs(grad[..., CELL_LAYOUT.index("log_flux_scuba2_450")]).sum() == 0
    optimizer = keras.optimizers.Adam(3e-3)
    history = []
    for _ in range(12):
        with tf.GradientTape() as tape:
            total = tf.reduce_mean(loss.total(loss.per_term(targets, generator(inputs, training=True), inputs)))
        grads = tape.gradient(total, generator.trainable_variables)
        assert float(tf.linalg.global_norm(grads)) > 0
        optimizer.apply_gradients(zip(grads, generator.trainable_variables))
        history.append(float(total))
    assert history[-1] < 0.8 * history[0], history


def test_a_spire_only_real_folder_needs_the_re_observation_term(tmp_path):
    from test_training import TINY_MODEL, tiny_config

    from galaxysr.config import LossConfig
    from galaxysr.training import Trainer

    model = replace(TINY_MODEL, tile=64, catalogue_head=True)
    config = tiny_config(tmp_path, str(tmp_path / "sim"), real=(A1689,), model=model, epochs=1, steps_per_epoch=2)
    with pytest.raises(ValueError, match="re-observation"):
        Trainer(config, progress=False)
    config = replace(config, loss=LossConfig(reobservation=0.5))
    history = Trainer(config, progress=False).run()["history"]
    assert np.isfinite(history[-1]["real_reobservation"]) and np.isfinite(history[-1]["sim_reobservation"])
