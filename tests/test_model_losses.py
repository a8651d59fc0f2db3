from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
import keras
from astropy import units as u

from galaxysr.config import LossConfig
from galaxysr.conventions import InputConventions
from galaxysr.instruments import BANDS
from galaxysr.losses import (ApertureFluxLoss, CombinedLoss, L1Loss, MeanFluxLoss, MedianFluxLoss, PeakFluxLoss,
                             UncertaintyLoss, _masked_median, aperture_sums, disk_kernel, local_peaks)
from galaxysr.model import FluxScaling, ModelConfig, build_generator
from galaxysr.simulate import render_sources

SCALING = FluxScaling()
PIXEL = 2.0
SIGMA_450 = BANDS["scuba2_450"].sigma_pixels(PIXEL * u.arcsec)  # 450 µm beam sigma in 2" pixels


def _sky(sources, shape=(64, 64), background=0.0):
    """A 450-like map (mJy/beam) with sources [(x, y, flux)] on a flat background, shaped
    (1, H, W, 1) and normalised."""
    x, y, f = (np.array(v, float) for v in zip(*sources)) if sources else ([], [], [])
    image = render_sources(np.asarray(x), np.asarray(y), np.asarray(f), shape, SIGMA_450) + background
    return tf.constant(SCALING.forward(image)[None, :, :, None], tf.float32)


ALL = [L1Loss(), MeanFluxLoss(), MedianFluxLoss(), ApertureFluxLoss(), ApertureFluxLoss(use_generated=True),
       PeakFluxLoss(), PeakFluxLoss(use_generated=True), CombinedLoss(), CombinedLoss(real=True)]


@pytest.mark.parametrize("loss", ALL, ids=lambda l: f"{type(l).__name__}")
def test_zero_for_identical_positive_otherwise(loss):
    target = _sky([(20, 30, 20.0), (45, 12, 8.0)], background=0.5)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    dimmer = _sky([(20, 30, 14.0), (45, 12, 5.0)], background=0.2)
    assert float(loss(target, dimmer)) > 1e-4


@pytest.mark.parametrize("loss", ALL, ids=lambda l: f"{type(l).__name__}")
def test_gradients_reach_the_prediction(loss):
    target = _sky([(20, 30, 20.0), (45, 12, 8.0)])
    pred = tf.Variable(_sky([(21, 30, 10.0)]) + 0.01)
    with tf.GradientTape() as tape:
        value = loss(target, pred)
    grad = tape.gradient(value, pred).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_tf_aperture_sums_match_photutils():
    from photutils.aperture import CircularAperture, aperture_photometry

    rng = np.random.default_rng(3)
    sources = [(rng.uniform(10, 54), rng.uniform(10, 54), rng.uniform(3, 40)) for _ in range(8)]
    image = render_sources(*(np.array(v) for v in zip(*sources)), (64, 64), SIGMA_450)
    # Apertures on the peak pixels, as the loss places them (sources are off-centre).
    positions = np.round([[s[0], s[1]] for s in sources]).astype(np.float32)
    radius = BANDS["scuba2_450"].fwhm_pixels(PIXEL * u.arcsec)
    ours = aperture_sums(tf.constant(image[None], tf.float32), tf.constant(positions[None]), radius)
    theirs = aperture_photometry(image, CircularAperture(positions, r=radius), method="exact")
    np.testing.assert_allclose(ours.numpy()[0], np.asarray(theirs["aperture_sum"]), rtol=0.01)


def test_masked_median_equals_numpy_for_any_mask():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 17, 19)).astype("float32")
    # Full, half, a third, empty, most and almost none valid: odd and even counts per row.
    keep = rng.random(values.shape) < np.array([1.0, 0.5, 0.33, 0.0, 0.9, 0.02])[:, None, None]
    got = _masked_median(tf.constant(values), tf.constant(keep.astype("float32"))).numpy()
    want = [np.median(v[k]) if k.any() else 0.0 for v, k in zip(values, keep)]
    assert len({int(k.sum()) % 2 for k in keep[keep.reshape(6, -1).any(1)]}) == 2  # both parities tested
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_aperture_sums_count_pixels_beyond_the_edge_as_zero():
    image = tf.ones((1, 32, 32), tf.float32)
    radius = BANDS["scuba2_450"].fwhm_pixels(PIXEL * u.arcsec)
    inside, corner = aperture_sums(image, tf.constant([[[16.0, 16.0], [0.0, 0.0]]]), radius).numpy()[0]
    assert inside == pytest.approx(np.pi * radius**2, rel=0.02)   # the full disk
    # At the corner pixel only the x ≥ 0, y ≥ 0 part of the disk (its centre row and
    # column included) lies on the image.
    kernel = disk_kernel(radius)
    half = kernel.shape[0] // 2
    assert corner == pytest.approx(kernel[half:, half:].sum(), rel=1e-6)
    assert corner < 0.4 * inside


def test_combined_terms_equal_each_term_alone():
    # CombinedLoss converts to mJy once for all flux terms; the values must not change.
    target = _sky([(20, 30, 20.0), (45, 12, 8.0)], background=0.5)
    pred = _sky([(21, 30, 12.0), (45, 13, 9.0)], background=0.3)
    for real in (False, True):
        terms = CombinedLoss(LossConfig(bright_mjy=0.0), real=real).per_term(target, pred)  # the terms' default
        alone = {"l1": L1Loss(), "mean_flux": MeanFluxLoss(), "median_flux": MedianFluxLoss(),
                 "aperture_flux": ApertureFluxLoss(use_generated=real), "peak_flux": PeakFluxLoss(use_generated=real)}
        assert set(terms) == set(alone)
        for name, loss in alone.items():
            assert float(terms[name][0]) == pytest.approx(float(loss(target, pred)), rel=1e-6), (name, real)
            assert float(terms[name][0]) > 0, (name, real)


def test_peak_term_penalises_a_blurred_source_of_the_right_flux():
    # Same total flux, twice the beam area: the aperture term sees only what spills out of
    # the aperture (94 % → 75 % of 20 mJy); the beam-matched peak of a Gaussian of twice
    # the area reads 2/3 of the true peak (σ_p² + σ_p² over σ_p² + 2σ_p²).
    sharp = _sky([(32, 32, 20.0)])
    x, y = np.mgrid[:64, :64]
    wide = 10.0 * np.exp(-0.5 * ((x - 32) ** 2 + (y - 32) ** 2) / (2 * SIGMA_450**2))
    blurred = tf.constant(SCALING.forward(wide)[None, :, :, None], tf.float32)
    assert float(PeakFluxLoss()(sharp, blurred)) == pytest.approx(20.0 / 3, rel=0.05)
    assert float(ApertureFluxLoss()(sharp, blurred)) < 0.7 * float(PeakFluxLoss()(sharp, blurred))
    # A sharp source 1.5 pixels off costs the peak term little: position is not its job.
    shifted = _sky([(33.5, 32, 20.0)])
    assert float(PeakFluxLoss()(sharp, shifted)) < 0.1 * float(PeakFluxLoss()(sharp, blurred))
    # Pixel-scale spikes (a checkerboard) on the blurred source do not buy a better score.
    checker = wide * (1 + 0.6 * np.where((x + y) % 2 == 0, 1.0, -1.0))
    spiky = tf.constant(SCALING.forward(checker)[None, :, :, None], tf.float32)
    assert float(PeakFluxLoss()(sharp, spiky)) == pytest.approx(float(PeakFluxLoss()(sharp, blurred)), rel=0.1)


def test_local_peaks_find_the_largest_pixel_near_each_position():
    image = np.zeros((1, 20, 20), np.float32)
    image[0, 10, 12] = 5.0
    image[0, 3, 3] = 9.0
    peaks = local_peaks(tf.constant(image), tf.constant([[[10.0, 10.0], [15.0, 15.0]]]), radius_px=2.0)
    np.testing.assert_allclose(peaks.numpy(), [[5.0, 0.0]])


def test_uncertainty_loss_is_smallest_at_the_true_error_and_leaves_the_map_alone():
    rng = np.random.default_rng(3)
    target = rng.uniform(0.0, 0.5, (1, 32, 32, 1)).astype("float32")
    error = 0.04
    pred = target + rng.laplace(0.0, error, target.shape).astype("float32")

    def loss_at(scale):
        return float(UncertaintyLoss()(target, np.concatenate([pred, np.full_like(pred, scale)], -1)))

    scales = [0.01, 0.02, 0.04, 0.08, 0.16]
    assert scales[int(np.argmin([loss_at(b) for b in scales]))] == error
    both = tf.Variable(np.concatenate([pred, np.full_like(pred, 0.05)], -1))
    with tf.GradientTape() as tape:
        value = UncertaintyLoss()(target, both)
    grad = tape.gradient(value, both).numpy()
    assert np.all(grad[..., 0] == 0) and np.abs(grad[..., 1]).sum() > 0


def test_combined_loss_uses_the_error_channel_only_when_there_is_one():
    target = _sky([(20, 30, 20.0)])
    pred = _sky([(21, 30, 15.0)])
    with_error = tf.concat([pred, tf.fill(tf.shape(pred), 0.05)], -1)
    assert "uncertainty" not in CombinedLoss().per_term(target, pred)
    loss = CombinedLoss(uncertainty_head=True)
    terms = loss.per_term(target, with_error)
    assert "uncertainty" in terms
    assert float(terms["l1"][0]) == pytest.approx(float(CombinedLoss().per_term(target, pred)["l1"][0]))


def test_real_data_term_uses_sources_on_the_generated_map():
    blank = _sky([])
    generated = _sky([(32, 32, 25.0)])
    assert float(ApertureFluxLoss()(blank, generated)) == 0.0          # target-only: nothing found
    assert float(ApertureFluxLoss(use_generated=True)(blank, generated)) > 10.0  # ~25 mJy × 94 %


def test_no_sources_gives_zero_not_nan():
    blank = _sky([])
    for loss in (ApertureFluxLoss(), ApertureFluxLoss(use_generated=True), CombinedLoss(real=True)):
        value = float(loss(blank, blank))
        assert np.isfinite(value) and value == pytest.approx(0.0, abs=1e-6)


def test_nan_target_pixels_are_masked_from_every_term():
    target = _sky([(20, 30, 20.0)]).numpy()
    target[:, :, 40:] = np.nan
    pred_a = _sky([(20, 30, 18.0)]).numpy()
    pred_b = pred_a.copy()
    pred_b[:, :, 40:] = 0.9  # very different where the target has no data
    for loss in ALL:
        a, b = float(loss(target, pred_a)), float(loss(target, pred_b))
        assert np.isfinite(a) and a == pytest.approx(b, rel=1e-5, abs=1e-6), type(loss).__name__


def test_flux_scaling_round_trip_and_ceiling():
    flux = np.array([-30.0, -1.0, 0.0, 0.3, 5.0, 80.0, 499.0, 2000.0])
    np.testing.assert_allclose(SCALING.inverse(SCALING.forward(flux)), flux, rtol=1e-6, atol=1e-9)
    tensor = SCALING.inverse(SCALING.forward(tf.constant(flux, tf.float32)))
    np.testing.assert_allclose(tensor.numpy(), flux, rtol=1e-4, atol=1e-5)
    assert SCALING.forward(500.0) == pytest.approx(1.0)
    # A sigmoid output (< 1) can never exceed the ceiling: brighter fluxes saturate.
    assert SCALING.inverse(0.999999) < 500.0 and SCALING.forward(2000.0) > 1.0


@pytest.mark.parametrize("upsampling", ["transpose", "subpixel", "subpixel_head"])
def test_legacy_map_generator_shapes_and_range(upsampling):
    config = ModelConfig(depth=4, base_filters=4, tile=64, upsampling=upsampling, output="map", catalogue_head=False)
    assert config.n_channels == 6  # three maps and their noise
    model = build_generator(config)
    out = model(np.random.rand(2, 64, 96, 6).astype("float32"))
    assert out.shape == (2, 64, 96, 2)  # the map and its error scale
    assert float(tf.reduce_min(out[..., 0])) >= 0 and float(tf.reduce_max(out[..., 0])) <= 1
    assert float(tf.reduce_min(out[..., 1])) > 0
    plain = build_generator(replace(config, noise_inputs=False, uncertainty_head=False))
    assert plain(np.random.rand(1, 64, 64, 3).astype("float32")).shape == (1, 64, 64, 1)
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(depth=4, tile=100)


def test_sky_model_generator_outputs_map_error_and_packed_sky():
    config = ModelConfig(depth=4, base_filters=4, tile=64, catalogue_head=False)
    assert config.output_channels == {"map": slice(0, 1), "error": slice(1, 2), "sky": slice(2, 6)}
    assert ModelConfig(depth=4, base_filters=4, tile=64).output_channels["cells"] == slice(6, 19)  # the default
    out = build_generator(config)(np.random.rand(2, 64, 96, 6).astype("float32")).numpy()
    assert out.shape == (2, 64, 96, 6)  # map, its error scale, a 1″ sky packed 2 × 2 per 2″ pixel
    assert out[..., 0].min() >= 0 and out[..., 1].min() > 0 and out[..., 2:].min() >= 0
    # The map is the packed sky drawn through the beam: the same numbers by NumPy.
    from galaxysr.inference import unpack_sky
    from galaxysr.model import render_numpy

    sigma = BANDS["scuba2_450"].sigma_pixels(InputConventions().sky_pixel_arcsec(config.sky_oversample) * u.arcsec)
    drawn = render_numpy(unpack_sky(out[0, ..., 2:], 2), sigma, 2)
    np.testing.assert_allclose(SCALING.inverse(out[0, ..., 0]), drawn, rtol=1e-3, atol=1e-4)


def test_model_and_losses_round_trip_in_keras_format(tmp_path):
    model = build_generator(ModelConfig(depth=3, base_filters=4, tile=32, input_bands=("spire_250",)))
    model.compile(optimizer="adam", loss=CombinedLoss(LossConfig(l1=1, mean_flux=0.5), real=True,
                                                       pixel_arcsec=2.0))
    model.save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.rand(1, 32, 32, 2).astype("float32")
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert isinstance(back.loss, CombinedLoss) and back.loss.real and back.loss.weights["mean_flux"] == 0.5
    for loss in ALL:
        clone = type(loss).from_config(loss.get_config())
        assert clone.get_config() == loss.get_config()


def test_combined_loss_under_mirrored_strategy_matches_one_device():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "conftest should create two logical CPUs"
    targets = tf.concat([_sky([(20, 30, 20.0)]), _sky([(40, 10, 9.0), (12, 50, 30.0)])], 0)
    preds = tf.concat([_sky([(21, 30, 12.0)]), _sky([(40, 11, 7.0)])], 0)
    loss = CombinedLoss(real=True)
    single = float(tf.reduce_mean(loss.call(targets, preds)))

    strategy = tf.distribute.MirroredStrategy(devices[:2])
    dataset = tf.data.Dataset.from_tensor_slices((targets, preds)).batch(2)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(t, p):
        per_sample = loss.call(t, p)
        return tf.nn.compute_average_loss(per_sample, global_batch_size=2)

    replicas = strategy.run(step, args=batch)
    assert len(strategy.experimental_local_results(replicas)) == 2
    total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, replicas, axis=None))
    assert total == pytest.approx(single, rel=1e-5)


def test_abandoned_experiments_load_when_unused_and_are_refused_when_used():
    from galaxysr.model import ModelConfig

    saved = ModelConfig().to_dict()
    inert = {**saved, "sky_head": "pixels", "sharpen_power": 1.0, "sharpen_fwhm_arcsec": 4.7, "sharpen_iterations": 2}
    assert ModelConfig.from_dict(inert) == ModelConfig()
    for name, value in (("sky_head", "cells"), ("sharpen_power", 2.0)):
        with pytest.raises(ValueError, match=f"{name}={value!r}.*removed.*galaxysr 0.3"):
            ModelConfig.from_dict({**saved, name: value})


def test_combined_loss_takes_its_settings_from_loss_config_and_round_trips():
    config = LossConfig(l1=0.5, bright_mjy=50.0, max_sources=12)
    loss = CombinedLoss(config, real=True, sky_oversample=2)
    assert loss.weights["l1"] == 0.5 and loss.terms["sky_model"].bright_mjy == 50.0
    assert loss.terms["aperture_flux"].max_sources == 12
    back = CombinedLoss.from_config(loss.get_config())
    assert back.config == config and back.real and back.sky_oversample == 2
    assert CombinedLoss().config == LossConfig()


def test_config_records_round_trip_and_refuse_unknown_keys():
    import json

    from galaxysr.training import TrainConfig

    config = TrainConfig()
    back = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and isinstance(back.model.input_bands, tuple)
    assert isinstance(back.data.prior.beta, tuple) and isinstance(back.model.scaling, FluxScaling)
    saved = config.to_dict()
    saved["data"]["prior"]["typo"] = 1
    with pytest.raises(ValueError, match="unknown SkyPrior parameter\\(s\\) typo"):
        TrainConfig.from_dict(saved)
    legacy = config.to_dict()
    del legacy["warmup_steps"], legacy["loss"]["bright_mjy"]
    old = TrainConfig.from_dict(legacy)
    assert old.warmup_steps == 0 and old.loss.bright_mjy == 0.0


def test_input_conventions_are_their_own_record_and_old_configs_move_them_there():
    import json

    from galaxysr.training import TrainConfig

    config = TrainConfig(conventions=InputConventions(pixel_arcsec=1.5, background="median"))
    saved = json.loads(json.dumps(config.to_dict()))
    assert "pixel_arcsec" not in saved["model"] and saved["conventions"] == {"pixel_arcsec": 1.5,
                                                                              "background": "median"}
    assert TrainConfig.from_dict(saved) == config
    # Written before the split (the shipped 0.4 model's config): the two settings sat in "model".
    old = json.loads(json.dumps(TrainConfig().to_dict()))
    del old["conventions"]
    old["model"].update(pixel_arcsec=1.5, background="median")
    assert TrainConfig.from_dict(old).conventions == InputConventions(1.5, "median")
    del old["model"]["background"]  # older still: no background removal at prediction
    assert TrainConfig.from_dict(old).conventions.background == "none"
    with pytest.raises(ValueError, match="pixel_arcsec: input conventions, not model settings"):
        ModelConfig.from_dict(old["model"])
    with pytest.raises(ValueError, match="background must be one of"):
        InputConventions(background="mean")
    with pytest.raises(ValueError, match="pixel_arcsec must be a positive"):
        InputConventions(pixel_arcsec=0.0)


def test_the_generator_draws_its_beam_on_the_grid_of_its_input_conventions():
    """The same architecture on 1″ pixels draws the 7.9″ beam over twice as many pixels."""
    config = ModelConfig(depth=3, base_filters=4, tile=32)
    widths = {}
    for pixel in (2.0, 1.0):
        beam = build_generator(config, InputConventions(pixel_arcsec=pixel)).get_layer("beam")
        sky = np.zeros((1, 64, 64, 1), np.float32)
        sky[0, 32, 32, 0] = 1.0
        row = np.asarray(beam(sky))[0, 16, :, 0]
        widths[pixel] = (row >= row.max() / 2).sum()
    assert widths[1.0] == pytest.approx(2 * widths[2.0], abs=1)
