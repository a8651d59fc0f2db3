import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from galaxysr.datasets import DataConfig
from galaxysr.maps import MapError
from galaxysr.model import ModelConfig
from galaxysr.simulate import write_mock_real
from galaxysr.training import TrainConfig, Trainer, train

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = ModelConfig(tile=32, depth=3, base_filters=4)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="session")
def mock_real(tmp_path_factory):
    return str(write_mock_real(tmp_path_factory.mktemp("real") / "pair", spire_side_arcmin=6,
                               scuba2_side_arcmin=4))


def tiny_config(tmp_path, sim_dir, real=(), **kwargs):
    data = DataConfig(sim_dir=sim_dir, n_sim_fields=2, sim_area_deg2=0.01, n_valid_tiles=4,
                      real_dirs=tuple(real), randomise=False)
    defaults = dict(model=TINY_MODEL, data=data, epochs=2, steps_per_epoch=3, batch_size=4,
                    sim_per_real=1 if real else 0, out_dir=str(tmp_path / "run"), strategy="default",
                    learning_rate=3e-3)
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def test_short_run_lowers_the_loss(tmp_path, sim_dir):
    config = tiny_config(tmp_path, sim_dir, epochs=8, steps_per_epoch=10)
    history = train(config, progress=False)["history"]
    # Mean training loss of the last epoch against the first.
    assert history[-1]["sim_total"] < 0.85 * history[0]["sim_total"]
    assert history[-1]["sim_l1"] < history[0]["sim_l1"]


def _weights(folder):
    from galaxysr.model import pixel_shuffle_layer

    pixel_shuffle_layer()  # registers the custom layer before loading
    model = tf.keras.models.load_model(Path(folder) / "model" / "model.keras")
    return model.get_weights()


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, sim_dir, mock_real):
    a = tiny_config(tmp_path / "a", sim_dir, real=[mock_real])
    b = replace(a, out_dir=str(tmp_path / "b"))
    full = train(a, progress=False)
    part = train(b, max_steps=3, progress=False)          # "killed" after step 3
    assert part["final_step"] == 3 and "artifact" not in part
    resumed = train(b, progress=False)                      # the same command again
    assert resumed["final_step"] == full["final_step"] == a.total_steps
    for wa, wb in zip(_weights(a.out_dir), _weights(b.out_dir)):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_alternation_draws_both_datasets_in_the_configured_ratio(tmp_path, sim_dir, mock_real):
    config = tiny_config(tmp_path, sim_dir, real=[mock_real], sim_per_real=2, epochs=1, steps_per_epoch=9)
    kinds = [("real" if config.is_real_step(s) else "sim") for s in range(9)]
    assert kinds == ["sim", "sim", "real"] * 3
    assert config.steps_before(7) == (5, 2)
    trainer = Trainer(config, progress=False)
    calls = {"sim": 0, "real": 0}
    for kind, fn in list(trainer._step_fns.items()):
        def counted(iterator, kind=kind, fn=fn):
            calls[kind] += 1
            return fn(iterator)
        trainer._step_fns[kind] = counted
    history = trainer.run()["history"]
    assert calls == {"sim": 6, "real": 3}
    assert "real_aperture_flux" in history[-1] and "sim_aperture_flux" in history[-1]


def test_exported_savedmodel_matches_the_in_memory_model(tmp_path, sim_dir):
    config = tiny_config(tmp_path, sim_dir, epochs=1, steps_per_epoch=2)
    trainer = Trainer(config, progress=False)
    trainer.run()
    artifact = trainer.export()
    x = np.random.default_rng(0).random((2, 64, 64, config.model.n_channels)).astype("float32")
    loaded = tf.saved_model.load(str(artifact / "saved_model"))  # keep a reference while serving
    served = loaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, trainer.model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    # Each weight is stored once (Keras' model.export stores every variable twice).
    weights_bytes = sum(w.nbytes for w in trainer.model.get_weights())
    stored = sum(f.stat().st_size for f in (artifact / "saved_model" / "variables").iterdir())
    assert weights_bytes <= stored < 1.2 * weights_bytes + 20_000
    saved = json.loads((artifact / "config.json").read_text())
    # The whole config, but no machine path: out_dir is the run folder's name.
    assert TrainConfig.from_dict(saved["train"]) == replace(trainer.config, out_dir=Path(config.out_dir).name)
    assert saved["normalisation"] == {"softening_mjy": 5.0, "ceiling_mjy": 500.0}


def test_two_replicas_give_the_first_step_loss_of_one(tmp_path, sim_dir):
    # Dropout off: a batch split over replicas draws different dropout masks by design.
    # What must agree is everything else: the data split, synchronised BatchNorm and the
    # global-batch loss reduction.
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    losses = []
    for n, name in ((1, "one"), (2, "two")):
        config = tiny_config(tmp_path / name, sim_dir, epochs=1, steps_per_epoch=1, seed=3,
                             model=replace(TINY_MODEL, dropout=0.0))
        strategy = tf.distribute.MirroredStrategy(devices[:n])
        summary = train(config, progress=False, strategy=strategy)
        losses.append(summary["history"][0]["sim_total"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_bad_configurations_fail_before_training(tmp_path, sim_dir, mock_real):
    with pytest.raises(MapError, match="real-pair folder not found"):
        Trainer(tiny_config(tmp_path / "a", sim_dir, real=[str(tmp_path / "nowhere")]), progress=False)
    # A 450 µm map from another part of the sky.
    elsewhere = tmp_path / "elsewhere"
    write_mock_real(elsewhere, spire_side_arcmin=6, scuba2_side_arcmin=4)
    from astropy.io import fits

    with fits.open(elsewhere / "scuba2_450.fits", mode="update") as hdul:
        hdul[0].header["CRVAL1"] += 1.0
    with fits.open(elsewhere / "scuba2_450_rms.fits", mode="update") as hdul:
        hdul[0].header["CRVAL1"] += 1.0
    with pytest.raises(MapError, match="does not overlap"):
        Trainer(tiny_config(tmp_path / "b", sim_dir, real=[str(elsewhere)]), progress=False)
    # Coverage too poor for any tile.
    config = tiny_config(tmp_path / "c", sim_dir, real=[mock_real])
    config = replace(config, data=replace(config.data, real_max_rms_mjy=0.1))
    with pytest.raises(MapError, match="no usable"):
        Trainer(config, progress=False)
    # Resuming with a different architecture is refused, not silently mixed.
    train(tiny_config(tmp_path / "d", sim_dir, epochs=1, steps_per_epoch=1), progress=False)
    with pytest.raises(ValueError, match="different model"):
        Trainer(tiny_config(tmp_path / "d", sim_dir, model=replace(TINY_MODEL, base_filters=8)), progress=False)


def test_mock_real_pair_is_reproducible_by_its_command(tmp_path):
    from astropy.io import fits

    shipped = REPO / "galaxysr" / "data" / "mock_real"
    made = write_mock_real(tmp_path / "again")
    for name in ("spire_250.fits", "scuba2_450.fits", "scuba2_450_rms.fits"):
        with fits.open(shipped / name) as a, fits.open(made / name) as b:
            index = 1 if name.startswith("spire") else 0
            # Same to float32 rounding (NumPy's SIMD exp may differ by an ulp between CPUs).
            np.testing.assert_allclose(a[index].data, b[index].data, rtol=1e-5, atol=1e-6, equal_nan=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multiworker_strategy_trains_with_two_local_workers(tmp_path, sim_dir):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    # Simulate the fields once, so both workers read the same ones.
    from galaxysr.datasets import ensure_simulated_fields

    ensure_simulated_fields(DataConfig(sim_dir=sim_dir, n_sim_fields=2, sim_area_deg2=0.01, randomise=False),
                            [1, 2, 1001], progress=False)
    args = [sys.executable, str(REPO / "train.py"), "--epochs", "1", "--steps-per-epoch", "3",
            "--batch-size", "4", "--tile", "32", "--depth", "3", "--base-filters", "4", "--sim-per-real", "0",
            "--n-sim-fields", "2", "--sim-area", "0.01", "--sim-dir", sim_dir, "--strategy", "multiworker",
            "--no-progress", "--no-randomise", "--no-calibration"]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(args + ["--out", str(tmp_path / f"w{index}")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    assert "trained 3 steps" in outputs[0]
    assert (tmp_path / "w0" / "model" / "saved_model").exists()      # the chief exports
    assert not (tmp_path / "w1" / "model").exists()                  # the other worker does not


def _workers(args, out, ports, extra=()):
    """Start two MultiWorkerMirroredStrategy workers on 127.0.0.1 sharing ``out``; wait."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(args + ["--out", str(out), *extra], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    return outputs


@pytest.mark.slow
def test_multiworker_run_stopped_and_restarted_equals_an_uninterrupted_one(tmp_path, sim_dir):
    from galaxysr.datasets import ensure_simulated_fields

    ensure_simulated_fields(DataConfig(sim_dir=sim_dir, n_sim_fields=2, sim_area_deg2=0.01, randomise=False),
                            [1, 2, 1001], progress=False)
    args = [sys.executable, str(REPO / "train.py"), "--epochs", "2", "--steps-per-epoch", "3",
            "--batch-size", "4", "--tile", "32", "--depth", "3", "--base-filters", "4", "--sim-per-real", "0",
            "--n-sim-fields", "2", "--sim-area", "0.01", "--sim-dir", sim_dir, "--no-randomise",
            "--strategy", "multiworker", "--no-progress", "--no-calibration"]
    _workers(args, tmp_path / "whole", [_free_port(), _free_port()])
    _workers(args, tmp_path / "parts", [_free_port(), _free_port()], ["--max-steps", "3"])   # both stopped
    outputs = _workers(args, tmp_path / "parts", [_free_port(), _free_port()])             # both restarted
    assert "resumed from step 3" in outputs[0]
    for wa, wb in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "parts")):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert not list((tmp_path / "parts").glob("checkpoints_worker*"))  # the other worker's scratch is gone


def test_a_run_can_start_from_another_models_weights(tmp_path, sim_dir):
    first = tiny_config(tmp_path / "first", sim_dir, epochs=1, steps_per_epoch=2)
    train(first, progress=False)
    second = tiny_config(tmp_path / "second", sim_dir, epochs=1, steps_per_epoch=2,
                         init_from=str(Path(first.out_dir) / "model"))
    trainer = Trainer(second, progress=False)
    for a, b in zip(trainer.model.get_weights(), _weights(first.out_dir)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="architecture differs"):
        Trainer(replace(second, out_dir=str(tmp_path / "third"),
                        model=replace(second.model, base_filters=8)), progress=False)


def test_adversarial_term_trains_the_discriminator_and_resumes_exactly(tmp_path, sim_dir, mock_real):
    from galaxysr.config import LossConfig
    from galaxysr.training import Trainer

    loss = LossConfig(adversarial=0.05)
    a = tiny_config(tmp_path / "a", sim_dir, real=[mock_real], loss=loss)
    b = replace(a, out_dir=str(tmp_path / "b"))
    trainer = Trainer(a, progress=False)
    before = [v.numpy().copy() for v in trainer.discriminator.trainable_variables]
    history = trainer.run()["history"]
    after = [v.numpy() for v in trainer.discriminator.trainable_variables]
    assert any(np.abs(x - y).max() > 0 for x, y in zip(before, after))   # the discriminator learns
    assert np.isfinite(history[-1]["sim_adversarial"]) and history[-1]["sim_discriminator"] > 0
    assert "real_adversarial" not in history[-1]                          # simulated steps only
    trainer.export()
    train(b, max_steps=3, progress=False)
    train(b, progress=False)                                              # resumed, discriminator included
    for x, y in zip(_weights(tmp_path / "a" / "run"), _weights(tmp_path / "b")):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_the_eta_counts_steps_epoch_pauses_and_the_work_after_training():
    from galaxysr.training import _SteadyRate

    rate = _SteadyRate(steps_per_epoch=10)
    for _ in range(30):
        rate.step(0.5)
    rate.pause(6.0)
    # 100 steps × 0.5 s + (10 epochs + 10 pauses after) × 6 s = 170 s
    assert rate.eta(100, 10, after_pauses=10) == "3 min"
    assert rate.eta(100, 10) == "2 min"
    assert rate.rate() == pytest.approx(1 / (0.5 + 0.6))
    assert _SteadyRate(10).eta(100, 10) == ""  # no estimate before the rate settles


def test_same_seed_on_the_same_machine_gives_identical_weights(tmp_path, sim_dir, mock_real):
    # Warm-up, clipping and the real phase included: two runs of one command, bit for bit.
    a = tiny_config(tmp_path / "a", sim_dir, real=[mock_real], epochs=2, steps_per_epoch=5, warmup_steps=600)
    b = replace(a, out_dir=str(tmp_path / "b"))
    train(a, progress=False)
    train(b, progress=False)
    for wa, wb in zip(_weights(a.out_dir), _weights(b.out_dir)):
        np.testing.assert_array_equal(wa, wb)


def test_learning_rate_warms_up_then_decays():
    from galaxysr.training import learning_rate_schedule

    config = TrainConfig(epochs=200, steps_per_epoch=60, learning_rate=1e-3, final_lr_fraction=0.05)
    lr = learning_rate_schedule(config)
    assert float(lr(0)) == pytest.approx(0.0, abs=1e-12)
    assert float(lr(300)) == pytest.approx(0.5e-3, rel=1e-4)         # half-way up the warm-up
    assert float(lr(600)) == pytest.approx(1e-3, rel=1e-4)           # the peak
    assert float(lr(12_000)) == pytest.approx(0.05e-3, rel=1e-3)     # the end of the cosine
    assert 0.05e-3 < float(lr(6_300)) < 1e-3
    # A short run warms up over at most 5 % of its steps; 0 is the old schedule.
    short = learning_rate_schedule(replace(config, epochs=2, steps_per_epoch=40))
    assert float(short(4)) == pytest.approx(1e-3, rel=1e-4)
    none = learning_rate_schedule(replace(config, warmup_steps=0))
    assert float(none(0)) == pytest.approx(1e-3)


def test_gradients_are_clipped_to_the_configured_global_norm(tmp_path, sim_dir):
    config = tiny_config(tmp_path, sim_dir, epochs=1, steps_per_epoch=2, clip_global_norm=0.5)
    trainer = Trainer(config, progress=False)
    assert trainer.optimizer.global_clipnorm == 0.5
    history = trainer.run()["history"]
    assert history[-1]["sim_grad_norm"] > 0     # the norm before clipping is logged


def test_loss_spikes_are_reported_and_ordinary_noise_is_not():
    from galaxysr.training import SpikeWatch

    rng = np.random.default_rng(0)
    watch = SpikeWatch()
    for step in range(1, 201):
        watch.step(step, "sim", 0.3 * (1 + 0.2 * rng.standard_normal()), 0.4)
    assert watch.report(1.0) == []
    watch.step(201, "sim", 7.56, 12.0)           # the newcomer's epoch-13 spike
    watch.step(202, "sim", 2.0, 0.9)             # a smaller one whose gradient needed no clipping
    for epoch, loss in enumerate((0.24, 0.22, 0.21, 6162.7), start=1):
        watch.validation(60 * epoch, loss)
    lines = watch.report(1.0)
    assert len(lines) == 2 and "2 loss spike(s)" in lines[0] and "at step 201" in lines[0]
    assert "1 of 2 clipped to gradient norm 1" in lines[0]
    assert "validation loss 6163 at step 240" in lines[1]
    assert [s["kind"] for s in watch.all] == ["sim", "sim", "valid"]
    assert watch.report(1.0) == []               # said once


def test_runs_before_0_4_load_without_warm_up_or_clipping():
    data = TrainConfig().to_dict()
    for key in ("warmup_steps", "clip_global_norm", "deterministic"):
        data.pop(key)
    old = TrainConfig.from_dict(data)
    assert (old.warmup_steps, old.clip_global_norm, old.deterministic) == (0, None, False)


def test_artifact_records_its_provenance_and_no_machine_path(tmp_path, sim_dir):
    import galaxysr

    config = tiny_config(tmp_path, sim_dir, epochs=1, steps_per_epoch=1)
    artifact = Path(train(config, progress=False)["artifact"])
    saved = json.loads((artifact / "config.json").read_text())
    assert Path(config.out_dir).is_absolute() and saved["train"]["out_dir"] == "run"
    assert saved["provenance"]["galaxysr_version"] == galaxysr.__version__
    assert saved["provenance"]["seed"] == config.seed
    assert saved["provenance"]["command"].split()[0] in ("python", "pytest")


def test_deterministic_flag_trains_with_op_determinism(tmp_path, sim_dir):
    # enable_op_determinism is process-wide: run it in a child process.
    code = ("import sys, json; from galaxysr.cli import main; sys.exit(main(['train', '--epochs', '1', "
            "'--steps-per-epoch', '2', '--tile', '32', '--depth', '3', '--base-filters', '4', '--batch-size', '2', "
            f"'--sim-dir', {sim_dir!r}, '--n-sim-fields', '2', '--sim-area', '0.01', '--sim-per-real', '0', "
            f"'--no-randomise', '--strategy', 'default', '--no-calibration', '--no-progress', '--deterministic', "
            f"'--out', {str(tmp_path / 'det')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "det" / "model" / "config.json").read_text())
    assert saved["train"]["deterministic"] is True


def test_train_flags_come_from_the_config_fields_and_give_their_defaults():
    from galaxysr.cli import _train_config, build_parser
    from galaxysr.conventions import InputConventions

    parser = build_parser(only="train")
    assert _train_config(parser.parse_args(["train"])) == TrainConfig()
    config = _train_config(parser.parse_args(
        ["train", "--epochs", "3", "--clip-norm", "0", "--no-noise-inputs", "--bands", "spire_250", "--pixel", "1.5",
         "--w-sky", "2", "--no-randomise", "--sim-per-real", "0", "--init-from", "m", "--deterministic"]))
    assert (config.epochs, config.clip_global_norm, config.init_from, config.deterministic) == (3, None, "m", True)
    assert config.model.input_bands == ("spire_250",) and not config.model.noise_inputs
    assert config.conventions == InputConventions(pixel_arcsec=1.5) and config.loss.sky_model == 2.0
    assert not config.data.randomise and config.data.real_dirs == ()
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "dropout rate on the first 2 decoder levels" in help_text and "(default: 10.0)" in help_text
