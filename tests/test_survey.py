"""Whole-survey super-resolution on Dask (galaxysr survey)."""

import os
import signal
from dataclasses import replace
import threading
import time

from pathlib import Path

import keras
import numpy as np
import pytest

from galaxysr.instruments import SPIRE_BANDS
from galaxysr.maps import read_map, write_map
from galaxysr.model import ModelConfig, build_generator
from galaxysr.simulate import SimulationConfig, simulate_field
from galaxysr.survey import plan_blocks, start_client, survey_field
from galaxysr.training import TrainConfig, export_artifact


@pytest.mark.parametrize("per_block", [1, 2, 3, 50])
def test_blocks_own_every_pixel_once_and_run_every_tile_that_touches_it(per_block):
    tile, stride = 64, 48
    shape = (300, 211)
    ys = list(range(0, shape[0] - tile, stride)) + [shape[0] - tile]
    xs = list(range(0, shape[1] - tile, stride)) + [shape[1] - tile]
    owner = np.zeros(shape, int)
    for block in plan_blocks(ys, xs, shape, tile, per_block):
        y_lo, y_hi, x_lo, x_hi = block.core
        owner[y_lo:y_hi, x_lo:x_hi] += 1
        run_rows, run_cols = range(*block.rows), range(*block.cols)
        for i, y0 in enumerate(ys):
            touches = y0 < y_hi and y0 + tile > y_lo
            assert touches == (i in run_rows), (block, i)
        for j, x0 in enumerate(xs):
            assert (x0 < x_hi and x0 + tile > x_lo) == (j in run_cols), (block, j)
    assert (owner == 1).all()


@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    folder = tmp_path_factory.mktemp("survey")
    field = simulate_field(SimulationConfig(area_deg2=0.03, seed=31), bands=SPIRE_BANDS)
    for band in SPIRE_BANDS:
        m = field[band]
        if band == "spire_250":  # a ragged edge: scattered NaN pixels, as real level-2 maps have
            data = m.data.copy()
            data[np.random.default_rng(1).random(data.shape) < 0.02] = np.nan
            m = type(m)(**{**m.__dict__, "data": data})
        write_map(m, folder / f"deep_{band[-3:]}.fits")
    # An untrained network's peaks depend on its weights (10 to 108 above the 98.5th percentile
    # over eight draws): fix the draw so the catalogue tests see the same map everywhere.
    keras.utils.set_random_seed(0)
    config = TrainConfig(model=ModelConfig(tile=64, depth=4, base_filters=4))
    model = export_artifact(build_generator(config.model), config, folder / "model")
    return folder, model


@pytest.fixture(scope="module")
def client():
    client, cluster, _ = start_client(workers=2)
    yield client
    client.close()
    cluster.close()


def _predict(folder, model, out):
    from galaxysr.cli import main

    assert main(["predict", str(folder / "deep_250.fits"), str(out), "--model", str(model), "--no-progress"]) == 0
    return read_map(out)


def test_survey_equals_predict_and_resumes_only_missing_blocks(small_field, client, tmp_path):
    folder, model = small_field
    reference = _predict(folder, model, tmp_path / "predict.fits")
    first = survey_field(client, folder / "deep_250.fits", tmp_path / "out", model=model, tiles_per_block=2,
                         progress=False, catalogue=True)
    assert first["blocks"] > 4 and first["computed"] == first["blocks"] and first["skipped"] == 0
    mosaic = read_map(first["mosaic"])
    # predict draws a catalogue-head network's map from its catalogue and keeps the per-pixel map as
    # MEAN; so does the survey, from the catalogue it reads block by block.
    assert reference.mean is not None and mosaic.mean is not None and "GSRPLANE" not in mosaic.meta
    np.testing.assert_allclose(mosaic.mean, reference.mean, rtol=1e-5, atol=1e-6)
    assert mosaic.meta["GSRDRAWN"][0] == reference.meta["GSRDRAWN"][0] > 100
    # Blocks fit their detections apart: 9 of 97 344 pixels differ by 0.05 % of the brightest peak.
    np.testing.assert_allclose(mosaic.data, reference.data, rtol=0, atol=2e-3 * np.nanmax(reference.data))
    assert mosaic.beam_fwhm == reference.beam_fwhm and mosaic.mean_fwhm == reference.mean_fwhm
    np.testing.assert_allclose(mosaic.error, reference.error, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mosaic.flags, reference.flags)
    assert mosaic.wcs.wcs.compare(reference.wcs.wcs, tolerance=1e-10)
    assert mosaic.meta["GSRHASH"][0] == reference.meta["GSRHASH"][0]
    # A rerun of a finished field has nothing to do.
    same = survey_field(client, folder / "deep_250.fits", tmp_path / "out", model=model, tiles_per_block=2,
                        progress=False, catalogue=True)
    assert same["up_to_date"] and same["computed"] == 0
    # A crash after some blocks (before the mosaic was assembled): only the missing ones are
    # computed on the rerun.
    blocks = sorted((tmp_path / "out" / "blocks_deep").glob("block_*.npz"))
    for path in [*blocks[:2], Path(first["mosaic"])]:
        path.unlink()
    again = survey_field(client, folder / "deep_250.fits", tmp_path / "out", model=model, tiles_per_block=2,
                         progress=False)
    assert again["computed"] == 2 and again["skipped"] == first["blocks"] - 2
    np.testing.assert_allclose(read_map(again["mosaic"]).mean, reference.mean, rtol=1e-5, atol=1e-6)


def test_catalogue_of_the_blocks_has_no_duplicates_in_the_overlaps(small_field, client, tmp_path):
    from galaxysr.catalogue import extract_sources

    from astropy.table import Table

    folder, model = small_field
    first = survey_field(client, folder / "deep_250.fits", tmp_path / "cat", model=model, tiles_per_block=2,
                         progress=False)
    # The untrained test model's map has no real sources: take its brightest peaks as such
    # (peaks of the map, method "psf": its sky model is an even haze).
    floor = float(np.nanpercentile(read_map(first["mosaic"]).data, 98.5))
    result = survey_field(client, folder / "deep_250.fits", tmp_path / "cat", model=model, tiles_per_block=2,
                          progress=False, catalogue=True, min_flux_mjy=floor, snr=0.0, overwrite=True,
                          method="psf")
    merged = Table.read(result["catalogue"])
    whole = extract_sources(read_map(result["mosaic"]), snr=0.0, min_flux_mjy=floor, method="psf")
    assert len(merged) > 10
    assert abs(len(merged) - len(whole)) <= max(2, 0.05 * len(whole))
    xy = np.round(np.c_[merged["x"], merged["y"]], 1)
    pairs = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    assert np.sum(pairs < 1.0) == len(merged)  # every source only matches itself


def test_a_head_models_survey_keeps_the_cells_and_lists_predicts_head_catalogue(small_field, client, tmp_path):
    from astropy.table import Table
    from scipy.spatial import cKDTree

    from galaxysr.catalogue import extract_sources

    folder, model = small_field
    reference = _predict(folder, model, tmp_path / "predict.fits")
    # The untrained head's p is low everywhere: keep every decoded detection, whatever its flux.
    options = {"model": model, "tiles_per_block": 2, "progress": False, "catalogue": True, "p_min": 0.0,
               "min_flux_mjy": -1e9}
    result = survey_field(client, folder / "deep_250.fits", tmp_path / "head", **options)
    mosaic = read_map(result["mosaic"])
    np.testing.assert_allclose(mosaic.cells, reference.cells, rtol=1e-5, atol=1e-6)
    # The mosaic's header gives the per-pixel map's wider beam; its catalogue is measured as predict's is.
    merged = Table.read(result["catalogue"])
    whole = extract_sources(reference, method="head", p_min=0.0, min_flux_mjy=-1e9)
    assert len(merged) == len(whole) > 100
    distance, nearest = cKDTree(np.c_[whole["x"], whole["y"]]).query(np.c_[merged["x"], merged["y"]])
    assert np.all(distance < 0.05)  # map pixels, though 16 blocks each fitted their own detections
    np.testing.assert_allclose(merged["flux"], whole["flux"][nearest], rtol=5e-3)
    np.testing.assert_allclose(merged["p_real"], whole["p_real"][nearest], atol=1e-4)
    # A block file written before blocks kept their cells is made again, not read without them.
    first = sorted((tmp_path / "head" / "blocks_deep").glob("block_*.npz"))[0]
    with np.load(first) as saved:
        np.savez(first, **{k: saved[k] for k in saved.files if k != "cells"})
    again = survey_field(client, folder / "deep_250.fits", tmp_path / "head", **options, overwrite=True)
    assert again["computed"] == 1 and again["skipped"] == result["blocks"] - 1
    np.testing.assert_allclose(read_map(again["mosaic"]).cells, reference.cells, rtol=1e-5, atol=1e-6)


def test_a_section_of_a_map_file_is_the_map_cut_alike_in_every_plane(small_field, tmp_path):
    from galaxysr.maps import read_map_section

    folder, model = small_field
    whole = _predict(folder, model, tmp_path / "predict.fits")
    assert whole.cells is not None and whole.sky_model is not None and whole.mean is not None
    (y0, y1), (x0, x1) = (40, 101), (18, 150)
    part = read_map_section(tmp_path / "predict.fits", (y0, y1), (x0, x1))
    for name in ("data", "noise", "flags", "mean"):
        np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[y0:y1, x0:x1])
    f, c = whole.sky_oversample, whole.cell_pixels
    np.testing.assert_array_equal(part.sky_model, whole.sky_model[f * y0:f * y1, f * x0:f * x1])
    np.testing.assert_array_equal(part.cells, whole.cells[y0 // c:-(-y1 // c), x0 // c:-(-x1 // c)])
    np.testing.assert_allclose(part.wcs.pixel_to_world_values(3.0, 7.0),
                               whole.wcs.pixel_to_world_values(x0 + 3.0, y0 + 7.0), rtol=0, atol=1e-10)
    assert part.beam_fwhm == whole.beam_fwhm and part.meta["GSRHASH"] == whole.meta["GSRHASH"]
    assert part.flux_curves == whole.flux_curves and part.mean_fwhm == whole.mean_fwhm
    with pytest.raises(ValueError, match="cell border"):
        read_map_section(tmp_path / "predict.fits", (41, 101), (18, 150))
    with pytest.raises(ValueError, match="not inside"):
        read_map_section(tmp_path / "predict.fits", (0, whole.shape[0] + 1), (0, 10))


def test_a_large_map_is_decoded_block_by_block_as_it_is_at_once(small_field, tmp_path, monkeypatch):
    from scipy.spatial import cKDTree

    import galaxysr.catalogue
    from galaxysr.catalogue import head_sources

    folder, model = small_field
    m = _predict(folder, model, tmp_path / "predict.fits")
    whole = head_sources(replace(m, decoded=None), p_min=0.0)
    monkeypatch.setattr(galaxysr.catalogue, "DECODE_BLOCK_PIXELS", 64)  # 25 blocks of this 312-pixel map
    blocks = head_sources(replace(m, decoded=None), p_min=0.0)
    assert len(blocks) == len(whole) > 100
    distance, nearest = cKDTree(np.c_[whole["x"], whole["y"]]).query(np.c_[blocks["x"], blocks["y"]])
    assert np.all(distance < 0.05) and len(set(nearest)) == len(whole)
    np.testing.assert_allclose(blocks["flux_forced"], whole["flux_forced"][nearest], rtol=5e-3, atol=1e-6)
    np.testing.assert_allclose(blocks["p_real"], whole["p_real"][nearest], atol=1e-6)


def test_a_survey_asked_for_the_head_catalogue_of_a_model_without_a_head_says_so(small_field, tmp_path):
    folder, _ = small_field
    config = TrainConfig(model=ModelConfig(tile=64, depth=4, base_filters=4, catalogue_head=False))
    model = export_artifact(build_generator(config.model), config, tmp_path / "model")
    with pytest.raises(ValueError, match="has no catalogue head.*--catalogue-method psf or sky"):
        survey_field(None, folder / "deep_250.fits", tmp_path / "out", model=model, catalogue=True, method="head")


def test_a_killed_worker_loses_no_finished_block_and_the_job_completes(small_field, client, tmp_path):
    folder, model = small_field
    out = tmp_path / "killed"
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        survey_field(client, folder / "deep_250.fits", out, model=model, tiles_per_block=1, progress=False)))
    thread.start()
    block_dir = out / "blocks_deep"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(block_dir.glob("block_*.npz"))) < 2:
        time.sleep(0.2)
    finished_before = {p.name: p.stat().st_mtime_ns for p in block_dir.glob("block_*.npz")}
    assert finished_before, "no block finished before the kill"
    victim = sorted(client.scheduler_info()["workers"])[0]
    os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)  # its nanny starts a new one
    thread.join(timeout=300)
    assert not thread.is_alive() and result.get("mosaic")
    for name, mtime in finished_before.items():  # finished blocks were not redone
        assert (block_dir / name).stat().st_mtime_ns == mtime
    reference = _predict(folder, model, tmp_path / "predict.fits")
    np.testing.assert_allclose(read_map(result["mosaic"]).mean, reference.mean, rtol=1e-5, atol=1e-6)
