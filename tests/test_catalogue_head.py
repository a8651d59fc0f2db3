"""The catalogue head (issue 26): its targets in the tile stream, its loss, its training and its decoder."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from astropy import units as u
from astropy.coordinates import SkyCoord

from galaxysr.cells import (CATALOGUE_BANDS, CELL_CHANNELS, CELL_LAYOUT, augment_planes, cell_targets, decode_cells,
                            source_planes)
from galaxysr.config import LossConfig
from galaxysr.conventions import InputConventions
from galaxysr.datasets import turn_offsets
from galaxysr.losses import CatalogueLoss, CombinedLoss, cell_targets_tf
from galaxysr.maps import tan_wcs
from galaxysr.model import ModelConfig, build_generator
from galaxysr.training import Trainer, train
from test_cells import _separated, _truth
from test_training import TINY_MODEL, _weights, mock_real, sim_dir, tiny_config  # noqa: F401  (fixtures)

N, PIXEL = 64, 2.0


def _planes(seed: int, n: int = 12) -> tuple:
    wcs = tan_wcs(SkyCoord(150.0, 2.0, unit="deg"), PIXEL * u.arcsec, (N, N))
    rng = np.random.default_rng(seed)
    positions, s450 = _separated(rng, n), rng.uniform(3, 60, n)
    truth = _truth(wcs, positions, s450)
    return source_planes(truth, wcs, (N, N), CATALOGUE_BANDS), truth, wcs


@pytest.mark.parametrize("k, flip", [(0, False), (1, False), (2, True), (3, False), (3, True)])
def test_the_stream_turns_offsets_with_the_tile_as_the_numpy_encoding_does(k, flip):
    planes = _planes(k)[0].astype(np.float32)
    tile = tf.image.rot90(tf.constant(planes), k)
    tile = tf.reverse(tile, [1]) if flip else tile
    turned = turn_offsets(tile, tf.constant(k), tf.constant(flip)).numpy()
    np.testing.assert_allclose(turned, augment_planes(planes, k, flip), atol=1e-6)


def test_the_loss_reads_the_same_cell_targets_as_the_numpy_encoding():
    planes = _planes(5)[0]
    reference = cell_targets(planes, 2, CATALOGUE_BANDS)
    valid, present, offsets, log_flux = (t.numpy()[0] for t in cell_targets_tf(planes[None], 2, 2, 2.0))
    held = reference[..., 0] > 0
    assert valid.all() and np.array_equal(present, held) and held.sum() == 12
    np.testing.assert_allclose(offsets[held], reference[held][:, 1:3], atol=1e-6)
    np.testing.assert_allclose(log_flux[held], reference[held][:, 3:], atol=1e-6)


def _perfect_cells(planes: np.ndarray, confidence: float = 8.0) -> np.ndarray:
    """Raw head outputs (repeated over the cells' 2 × 2 pixels) that state ``planes``' truth."""
    cells = cell_targets(planes, 2, CATALOGUE_BANDS)
    raw = np.zeros((*cells.shape[:2], CELL_CHANNELS), np.float32)
    held = cells[..., 0] > 0
    raw[..., 0] = np.where(held, confidence, -confidence)
    raw[..., 1:3] = cells[..., 1:3]
    raw[..., 3:5] = np.log(0.05)
    raw[..., 5:9] = np.nan_to_num(cells[..., 3:])
    raw[..., 9:13] = np.log(0.02)
    return raw


def test_the_presence_loss_is_lower_for_the_right_sources_than_for_shuffled_ones():
    planes = _planes(7)[0].astype(np.float32)
    raw = np.repeat(np.repeat(_perfect_cells(planes, 3.0), 2, 0), 2, 1)[None]
    loss = CatalogueLoss()
    right = loss.parts(planes[None], raw)
    shuffled = np.random.default_rng(1).permutation(raw.reshape(-1, CELL_CHANNELS)).reshape(raw.shape)
    wrong = loss.parts(planes[None], shuffled)
    assert float(right["presence"][0]) < 0.1 * float(wrong["presence"][0])
    assert float(right["position"][0]) < float(wrong["position"][0])
    assert float(right["flux"][0]) < float(wrong["flux"][0])


def test_the_head_is_trained_through_the_unet_on_simulated_steps_only():
    model = ModelConfig(tile=64, depth=3, base_filters=4, catalogue_head=True)
    generator = build_generator(model)
    planes = _planes(9)[0].astype(np.float32)
    targets = np.concatenate([np.full((N, N, 2), 0.01, np.float32), planes], -1)[None]
    inputs = np.random.default_rng(0).normal(0, 0.05, (1, N, N, model.n_channels)).astype(np.float32)
    sim = CombinedLoss.from_configs(LossConfig(), model, InputConventions(), real=False)
    real = CombinedLoss.from_configs(LossConfig(), model, InputConventions(), real=True)
    assert {"presence", "cell_position", "cell_flux"} <= set(sim.active(targets, generator(inputs)))
    assert not {"presence", "cell_position", "cell_flux"} & set(real.active(targets, generator(inputs)))
    with tf.GradientTape() as tape:
        terms = sim.per_term(targets, generator(inputs, training=True))
        head = terms["presence"] + terms["cell_position"] + terms["cell_flux"]
    grads = dict(zip([v.path for v in generator.trainable_variables],
                     tape.gradient(head, generator.trainable_variables)))
    assert float(tf.reduce_sum(tf.abs(grads["down0_conv/kernel"]))) > 0  # into the encoder
    assert float(tf.reduce_sum(tf.abs(grads["cells_out/kernel"]))) > 0


def test_a_model_with_the_head_starts_from_one_without_and_its_head_learns(tmp_path, sim_dir):  # noqa: F811
    first = tiny_config(tmp_path / "first", sim_dir, model=replace(TINY_MODEL, catalogue_head=False), epochs=1,
                        steps_per_epoch=2)
    train(first, progress=False)
    headed = replace(TINY_MODEL, catalogue_head=True)
    second = tiny_config(tmp_path / "second", sim_dir, model=headed, epochs=6, steps_per_epoch=10,
                         init_from=str(Path(first.out_dir) / "model"))
    trainer = Trainer(second, progress=False)
    mine = [w.numpy() for layer in trainer.model.layers if not layer.name.startswith("cells_") for w in layer.weights]
    for a, b in zip(mine, _weights(first.out_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    history = trainer.run()["history"]
    assert history[-1]["sim_presence"] < 0.7 * history[0]["sim_presence"]
    assert history[-1]["sim_cell_flux"] < history[0]["sim_cell_flux"]
    assert "real_presence" not in history[-1]


def test_a_cell_the_head_is_sure_of_decodes_to_its_source_and_a_split_one_to_one_source():
    planes, truth, wcs = _planes(11)
    raw = _perfect_cells(planes)
    cat = decode_cells(raw, wcs, PIXEL)
    assert len(cat) == len(truth) and (np.asarray(cat["p"]) > 0.99).all()
    match = SkyCoord(truth["ra"], truth["dec"], unit="deg").match_to_catalog_sky(SkyCoord(cat["ra"], cat["dec"]))
    assert len(set(match[0])) == len(truth) and match[1].arcsec.max() < 0.1
    for band in CATALOGUE_BANDS:
        got = u.Quantity(cat[f"flux_{band}"])[match[0]].to_value(u.mJy)
        np.testing.assert_allclose(got, truth[f"flux_{band}"], rtol=0.01)
        assert cat[f"flux_{band}"].unit == u.mJy and cat[f"flux_{band}_err"].description
    # One source on the border of two cells, each half sure: one source, p ≈ 1.
    split = np.zeros((8, 8, CELL_CHANNELS), np.float32)
    split[..., 0] = -20.0
    split[4, 3, 0] = split[4, 4, 0] = 0.0   # p = 0.5 each
    split[4, 3, 2], split[4, 4, 2] = 0.5, -0.5  # both at their shared border
    split[..., 5:9] = 1.0
    one = decode_cells(split, wcs, PIXEL)
    assert len(one) == 1 and abs(float(one["p"][0]) - 1.0) < 1e-6
    assert cat["ra"].unit == u.deg and set(CELL_LAYOUT[:3]) == {"logit", "dy", "dx"}


def test_the_head_needs_a_sky_model_network_and_old_models_have_none():
    with pytest.raises(ValueError, match="catalogue head needs a sky-model network"):
        ModelConfig(output="map", catalogue_head=True)
    assert not ModelConfig.from_dict({"tile": 128}).catalogue_head  # a model saved before the head existed
    assert "cells" in ModelConfig().output_channels  # the default since 0.5
    assert "cells" not in ModelConfig(catalogue_head=False).output_channels
    assert ModelConfig(catalogue_head=True).output_channels["cells"].stop - \
        ModelConfig(catalogue_head=True).output_channels["cells"].start == CELL_CHANNELS


def test_forced_photometry_recovers_two_sources_half_a_beam_apart_within_their_errors():
    from galaxysr.catalogue import forced_photometry
    from galaxysr.instruments import FWHM_PER_SIGMA, get_band
    from galaxysr.maps import MJY_PER_BEAM, Map

    n, noise = 80, 0.5
    wcs = tan_wcs(SkyCoord(150.0, 2.0, unit="deg"), PIXEL * u.arcsec, (n, n))
    band = get_band("scuba2_450")
    sigma = band.fwhm.to_value(u.arcsec) / FWHM_PER_SIGMA / PIXEL
    x, y, s = np.array([40.3, 42.3, 20.0]), np.array([40.2, 40.2, 60.5]), np.array([20.0, 10.0, 5.0])  # 4″ apart
    yy, xx = np.mgrid[:n, :n]
    sky = sum(f * np.exp(-0.5 * ((xx - a) ** 2 + (yy - b) ** 2) / sigma**2) for a, b, f in zip(x, y, s))
    image = sky + np.random.default_rng(2).normal(0, noise, (n, n))
    m = Map(image.astype(np.float32), wcs, band, MJY_PER_BEAM, noise=np.full((n, n), noise, np.float32))
    flux, err = forced_photometry(m, x, y)
    assert np.all(np.abs(flux - s) < 3 * err)
    # The pair shares its light: errors widen by 1/√(1 − ρ²), ρ = exp(−d²/4σ²) the overlap of the two beams.
    rho = np.exp(-(x[1] - x[0]) ** 2 / (4 * sigma**2))
    np.testing.assert_allclose(err[:2], noise / np.sqrt(1 - rho**2), rtol=0.03)
    assert err[2] == pytest.approx(noise)
    exact, _ = forced_photometry(replace(m, data=sky.astype(np.float32)), x, y)
    np.testing.assert_allclose(exact, s, rtol=1e-3)
    outside, err_out = forced_photometry(m, np.array([-50.0]), np.array([10.0]))
    assert np.isnan(outside[0]) and np.isnan(err_out[0])
