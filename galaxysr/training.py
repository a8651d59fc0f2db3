"""Training: a `tf.distribute` custom loop alternating simulated and real batches.

The loop follows Keras' custom-training examples: per-replica step under
``strategy.run``, per-sample losses averaged with the *global* batch size, gradients
applied by a Keras 3 optimizer built inside ``strategy.scope()``. Simulated steps use the
aperture term on target detections; real steps on target *and* generated detections.
Checkpoints (`tf.train.CheckpointManager`) hold model, optimizer and step, and the data
stream is a pure function of the step, so rerunning the same command resumes exactly.
At the end the model is exported as a ModelArtifact folder (SavedModel, ``.keras``,
``config.json``, ``metrics.json``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar
from pathlib import Path

import numpy as np

from . import __version__
from .config import RUN_DIR, STRATEGIES, ConfigRecord, LossConfig, option
from .datasets import DataConfig, TileStream, load_pairs
from .conventions import InputConventions
from .model import ModelConfig

__all__ = ["ARTIFACT_FILES", "TrainConfig", "learning_rate_schedule", "SpikeWatch", "make_strategy", "write_config",
           "command_line", "git_commit", "provenance", "portable", "CheckpointPolicy", "Reporter", "Trainer",
           "export_saved_model", "export_artifact", "train"]

ARTIFACT_FILES = ("saved_model", "model.keras", "config.json", "metrics.json")


@dataclass(frozen=True)
class TrainConfig(ConfigRecord):
    """Everything that defines a training run; written as ``config.json`` beside the model.

    Attributes
    ----------
    model, conventions, loss, data
        The architecture (:class:`~galaxysr.model.ModelConfig`), the grid and background of its
        inputs (:class:`~galaxysr.conventions.InputConventions`), the loss and the training data.
    epochs, steps_per_epoch : int
        Training length; an epoch ends with validation, summaries and a checkpoint.
    batch_size : int
        Global batch (split over replicas).
    sim_per_real : int
        Simulated steps per real step (1 = strict alternation as in Lauritsen et al.;
        0 = simulated data only).
    learning_rate, final_lr_fraction, beta_1 : float
        Adam with cosine decay from ``learning_rate`` to ``final_lr_fraction`` of it.
    warmup_steps : int
        Steps of linear learning-rate warm-up from 0 to ``learning_rate`` before the cosine
        decay (0: none, as before 0.4), at most 5 % of the run. The default, 600, is the first
        5 % of the default run.
    clip_global_norm : float or None
        Gradients are scaled down to this global norm when larger (Keras' ``global_clipnorm``;
        None: no clipping, as before 0.4). The default, 1.0, is ≈ 2.5× the median norm of the
        default run's steps: in its first 900 steps it clips 3 % of the simulated and 15 % of
        the real ones, and every loss spike (norms 60 to 5 × 10⁵: Jy-bright tiles). See
        docs/training.md, "Robust training".
    deterministic : bool
        ``tf.config.experimental.enable_op_determinism()`` for the run: the same weights from
        the same seed on the same machine even where TF would pick a non-deterministic kernel.
    seed : int
        Seeds weights, dropout and the data streams.
    out_dir : str
        Run folder: ``checkpoints/``, ``logs/`` (TensorBoard), ``model/`` (the artifact).
    strategy : str
        ``mirrored`` (all local devices), ``multiworker`` (TF_CONFIG), or ``default``.
    log_every : int
        Steps between TensorBoard scalar summaries (of each phase).
    init_from : str or None
        A model folder written by train.py whose weights start this run (fine-tuning, or a
        longer schedule continued with new settings); the architecture must match.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    conventions: InputConventions = field(default_factory=InputConventions)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = option(200, flag="--epochs", help="epochs to train")
    steps_per_epoch: int = option(60, flag="--steps-per-epoch", help="steps per epoch")
    batch_size: int = option(8, flag="--batch-size", help="global batch size")
    sim_per_real: int = option(2, flag="--sim-per-real", help="simulated steps per real step (0: simulated data only)")
    learning_rate: float = option(1e-3, flag="--lr", help="peak Adam learning rate (cosine decay)")
    final_lr_fraction: float = 0.05
    beta_1: float = 0.5
    warmup_steps: int = option(600, flag="--warmup-steps",
                               help="steps of linear learning-rate warm-up before the cosine decay (0: none)")
    clip_global_norm: float | None = option(1.0, flag="--clip-norm", zero_is_none=True,
                                            help="clip gradients to this global norm (0: no clipping)")
    deterministic: bool = option(False, flag="--deterministic",
                                 help="deterministic TF kernels (tf.config.experimental.enable_op_determinism): the "
                                      "same weights from the same seed on the same machine; see docs/training.md")
    seed: int = option(0, flag="--seed", help="random seed")
    out_dir: str = option(RUN_DIR, flag="--out", help="run folder (checkpoints, TensorBoard logs, model)")
    strategy: str = option("mirrored", flag="--strategy", choices=STRATEGIES,
                           help="tf.distribute strategy; multiworker reads TF_CONFIG")
    log_every: int = 10
    init_from: str | None = option(None, flag="--init-from", metavar="MODEL",
                                   help="start from the weights of this model folder (same architecture) instead "
                                        "of at random")

    #: Runs before 0.4 had no warm-up, clipping or determinism switch.
    LEGACY: ClassVar[dict] = {"warmup_steps": 0, "clip_global_norm": None, "deterministic": False}
    WHAT: ClassVar[str] = "training setting(s)"

    @classmethod
    def _upgrade(cls, data: dict) -> dict:
        # Configs written before InputConventions existed (the shipped 0.4 model's among them)
        # kept the pixel scale and background inside the model settings.
        return InputConventions.split_from(data)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def is_real_step(self, step: int) -> bool:
        """Whether global step ``step`` uses a real batch (the last of each cycle)."""
        if self.sim_per_real <= 0 or not self.data.real_dirs:
            return False
        return step % (self.sim_per_real + 1) == self.sim_per_real

    def steps_before(self, step: int) -> tuple[int, int]:
        """(simulated, real) steps taken before global step ``step``."""
        if self.sim_per_real <= 0 or not self.data.real_dirs:
            return step, 0
        cycle = self.sim_per_real + 1
        real = step // cycle + (1 if step % cycle > self.sim_per_real else 0)
        return step - real, real


def make_strategy(name: str):
    """A `tf.distribute` strategy by name (TF's own; no home-made scheduling).

    ``mirrored`` mirrors over every local GPU (or logical device); with a single device
    it is the default strategy instead, which computes the same thing: MirroredStrategy
    over one CPU device more than halved the training rate on a 2-core machine (sys time
    ≈ 45 % of user time; docs/benchmarks.md).
    """
    import tensorflow as tf

    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        if len(devices) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in devices])
        return tf.distribute.get_strategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable "
                             "(cluster addresses and this worker's index); see docs/training.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                    and "chief" not in resolver.cluster_spec().as_dict())


#: Command-line flags of TrainConfig fields, for messages.
_FLAGS = {"epochs": "--epochs", "learning_rate": "--lr", "batch_size": "--batch-size", "seed": "--seed",
          "sim_per_real": "--sim-per-real", "steps_per_epoch": "--steps-per-epoch",
          "warmup_steps": "--warmup-steps", "clip_global_norm": "--clip-norm"}


def _task_id(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0)


def _check_resume(config: TrainConfig, out: Path) -> None:
    saved = out / "config.json"
    if not saved.exists():
        return
    previous = TrainConfig.from_dict(json.loads(saved.read_text())["train"])
    for part in ("model", "loss", "data"):
        if getattr(previous, part) != getattr(config, part):
            raise ValueError(f"{out}: holds a run with a different {part} configuration; resume it "
                             "with the same options, or train into a new --out folder")
    for name in ("batch_size", "sim_per_real", "seed", "steps_per_epoch"):
        if getattr(previous, name) != getattr(config, name):
            raise ValueError(f"{out}: holds a run with {name}={getattr(previous, name)}, not "
                             f"{getattr(config, name)}; resuming would change its data stream — use "
                             "the same value or a new --out folder")
    for name in ("epochs", "learning_rate", "final_lr_fraction", "beta_1", "warmup_steps", "clip_global_norm"):
        if getattr(previous, name) != getattr(config, name):
            raise ValueError(f"{out}: holds a run with {name}={getattr(previous, name)}, not "
                             f"{getattr(config, name)}; the learning-rate schedule is fixed by them, so "
                             "resuming with another value would not be the run it started as — use "
                             f"{_FLAGS.get(name, name)} {getattr(previous, name)} again, or a new --out folder")


def learning_rate_schedule(config: TrainConfig):
    """Adam's learning rate per step: a linear warm-up over ``warmup_steps`` (at most 5 %
    of the run) from 0 to ``learning_rate``, then a cosine decay to ``final_lr_fraction`` of
    it at the last step (Keras' ``CosineDecay`` does both)."""
    import keras

    # At most 5 % of the run: the default run's 600 of 12 000 steps, 4 of a short 80-step test.
    warmup = min(max(int(config.warmup_steps), 0), config.total_steps // 20)
    decay = max(config.total_steps - warmup, 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=decay,
                                                      alpha=config.final_lr_fraction)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=decay, alpha=config.final_lr_fraction,
                                                  warmup_target=config.learning_rate, warmup_steps=warmup)


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, as a user would type it again: ``python train.py
    --epochs 200`` or ``galaxysr train …`` (no machine paths)."""
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else "python"
    head = ["python", program] if program.endswith(".py") else [program]
    return shlex.join(head + argv[1:])


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
    """The git commit of the galaxysr source that is running (``+dirty`` when tracked files
    differ from it), or None outside a git checkout (an installed wheel)."""
    import subprocess

    folder = Path(folder or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def provenance(config: TrainConfig) -> dict:
    """What made a model: galaxysr version, the command, the seed and the git commit."""
    return {"galaxysr_version": __version__, "command": command_line(), "seed": config.seed,
            "git_commit": git_commit()}


def portable(config: TrainConfig) -> TrainConfig:
    """``config`` with no path of this machine in it: an absolute ``out_dir`` becomes its
    folder name (a model folder is copied elsewhere; where it was trained is no setting)."""
    out = Path(config.out_dir)
    return replace(config, out_dir=out.name) if out.is_absolute() else config


def write_config(config: TrainConfig, path: Path, extra: dict | None = None) -> None:
    payload = {"galaxysr_version": __version__, "train": config.to_dict(), **(extra or {})}
    path.write_text(json.dumps(payload, indent=2))


class CheckpointPolicy:
    """Where a run's checkpoints live and who writes them.

    Multi-worker runs share ``--out``: the chief keeps the checkpoints (the last three), every
    worker restores from them, and the others save to scratch folders they delete again (saving
    is a collective operation every worker must join).
    """

    def __init__(self, checkpoint, out: Path, strategy):
        import tensorflow as tf

        self.checkpoint, self.chief = checkpoint, _is_chief(strategy)
        chief_dir = out / "checkpoints"
        folder = chief_dir if self.chief else out / f"checkpoints_worker{_task_id(strategy)}"
        self.manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
        self.restored = tf.train.latest_checkpoint(str(chief_dir))

    def restore(self) -> bool:
        """Restore the chief's latest checkpoint, if there is one."""
        if self.restored:
            self.checkpoint.restore(self.restored).assert_existing_objects_matched()
        return bool(self.restored)

    def save(self, number: int) -> str:
        """Checkpoint after step ``number``; returns what to report."""
        import tensorflow as tf

        path = self.manager.save(checkpoint_number=number)
        if not self.chief:
            tf.io.gfile.rmtree(self.manager.directory)
            return "saved by the chief"
        return f"saved ({Path(path).name})"


class Reporter:
    """What a run says while it trains (chief only): the progress bar, one line per epoch (mean
    losses, steady rate, ETA, checkpoint), loss-spike notes (:class:`SpikeWatch`), TensorBoard
    scalars of both phases (``sim/*``, ``real/*`` every ``log_every`` steps *of that phase*, and
    their epoch means) and preview images; and the epoch history the run returns."""

    def __init__(self, config: TrainConfig, out: Path, chief: bool, progress: bool, replicas: int,
                 after_pauses: float = 0.0):
        import tensorflow as tf

        self.config, self.chief, self.progress = config, chief, progress
        self.replicas, self.after_pauses = replicas, float(after_pauses)
        self.writer = tf.summary.create_file_writer(str(out / "logs")) if chief else tf.summary.create_noop_writer()
        self.bar = None

    def begin(self, start: int) -> None:
        from tqdm import tqdm

        config = self.config
        # No ETA on the bar: the epoch lines carry the steady-rate one (tqdm's own jumps with
        # every end-of-epoch pause).
        self.bar = tqdm(total=config.total_steps, initial=start, unit="step", disable=not self.progress,
                        desc=f"training ({self.replicas} replica(s))", dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self.history, self.sums, self.counts = [], {}, {}
        self.started = time.perf_counter()
        self.rate = _SteadyRate(config.steps_per_epoch)
        self.watch = SpikeWatch()
        self.done = {"sim": 0, "real": 0}  # steps of each kind this session (counts resets each epoch)

    def step(self, step: int, kind: str, logs: dict, seconds: float, learning_rate, last: bool) -> None:
        """After global step ``step`` (0-based) of ``kind``, which took ``seconds``;
        ``learning_rate()`` gives the current rate when a summary is written."""
        import tensorflow as tf

        config = self.config
        self.watch.step(step + 1, kind, logs["total"], logs.get("grad_norm", float("nan")))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.done[kind] += 1
        sums = self.sums.setdefault(kind, {})
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        done_of_kind = config.steps_before(step + 1)[0 if kind == "sim" else 1]
        if done_of_kind % config.log_every == 1 or config.log_every == 1 or last:
            with self.writer.as_default(step=step):
                for k, v in logs.items():
                    tf.summary.scalar(f"{kind}/{k}", v)
                tf.summary.scalar("learning_rate", learning_rate())
            self.bar.set_postfix({f"{kind}_loss": f"{logs['total']:.4f}"}, refresh=False)
        self.bar.update(1)
        if self.done[kind] > _WARMUP_STEPS:  # the first steps of each kind trace their graphs: not the rate
            self.rate.step(seconds)

    def epoch(self, step: int, valid: dict, saved: str, pause_seconds: float, images: dict | None) -> None:
        """At the end of an epoch (or of the run) after step ``step``: validation losses, what
        the checkpoint said, how long the pause took and preview images (name → array)."""
        import tensorflow as tf

        config = self.config
        self.watch.validation(step + 1, valid["total"])
        # Training losses are means over the steps of this epoch (of this session).
        means = {kind: {k: v / self.counts[kind] for k, v in d.items()} for kind, d in self.sums.items()}
        self.history.append({"step": step + 1, **{f"valid_{k}": v for k, v in valid.items()},
                             **{f"{kind}_{k}": v for kind, d in means.items() for k, v in d.items()},
                             "spikes": len(self.watch.epoch)})
        self.sums, self.counts = {}, {}
        with self.writer.as_default(step=step):
            for k, v in valid.items():
                tf.summary.scalar(f"valid/{k}", v)
            for kind, d in means.items():
                for k, v in d.items():
                    tf.summary.scalar(f"{kind}_epoch/{k}", v)
            for name, image in (images or {}).items():
                tf.summary.image(name, image, step=step, max_outputs=len(image))
        self.rate.pause(pause_seconds)
        losses = "  ".join(f"{kind} {d['total']:.4f}" for kind, d in means.items())
        remaining = config.total_steps - step - 1
        eta = self.rate.eta(remaining, -(-remaining // config.steps_per_epoch), self.after_pauses)
        self.say(f"epoch {(step + 1 + config.steps_per_epoch - 1) // config.steps_per_epoch}/{config.epochs} "
                 f"step {step + 1}: loss {losses}  valid {valid['total']:.4f}  |  {self.rate.rate():.2f} steps/s"
                 f"{f', ETA {eta}' if eta else ''}  |  checkpoint {saved}")
        for line in self.watch.report(config.clip_global_norm):
            self.say(line)

    def end(self, steps: int) -> dict:
        """Close the bar and the summaries; the run's history, time, pauses and spikes."""
        if self.bar is not None:
            self.bar.close()
        self.writer.flush()
        pauses = self.rate.pauses if self.bar is not None else []
        return {"history": getattr(self, "history", []), "seconds": time.perf_counter() - self.started,
                "steps": steps, "pause_seconds": float(np.mean(pauses)) if pauses else float("nan"),
                "spikes": self.watch.all}

    def say(self, line: str) -> None:
        """One line of progress from the chief (through tqdm when a bar is showing)."""
        if not self.chief:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line, flush=True)


class Trainer:
    """Holds the state of one run — data streams, model, optimizers, losses, checkpoint — and
    its step functions; :meth:`run` is the loop."""

    def __init__(self, config: TrainConfig, progress: bool = True, strategy=None, after_pauses: float = 0.0):
        import tensorflow as tf

        if config.deterministic:
            # Process-wide: every op from here on picks a deterministic kernel (or raises).
            tf.config.experimental.enable_op_determinism()
        self.config = config
        self.out = Path(config.out_dir)
        self.strategy = make_strategy(config.strategy) if strategy is None else strategy
        self.chief = _is_chief(self.strategy)
        self.out.mkdir(parents=True, exist_ok=True)
        _check_resume(config, self.out)
        self._load_data(progress)  # first: bad inputs fail before any model is built
        self._build()
        self.checkpoints = CheckpointPolicy(self._checkpoint(), self.out, self.strategy)
        if not self.checkpoints.restore() and self.config.init_from:
            self._initialise_from(self.config.init_from)
        # Work after the last step (the calibration train.py runs), in units of one
        # end-of-epoch pause (validation + checkpoint), so the ETA covers the whole run.
        self.report = Reporter(self.config, self.out, self.chief, progress, self.strategy.num_replicas_in_sync,
                               after_pauses)
        self._step_fns = {kind: self._make_step(kind) for kind in ("sim", "real")}

    def _load_data(self, progress: bool) -> None:
        config = self.config
        sim, valid, real = load_pairs(config.data, config.model, config.conventions, progress,
                                      config.loss.sky_fwhm_arcsec)
        spire_only = [p.name for p in real if p.spire_only]
        if spire_only and not config.loss.reobservation:
            raise ValueError(f"{', '.join(spire_only)}: SPIRE maps without a 450 µm map train only the re-observation "
                             "term, which is off; give --w-reobservation > 0, or a folder with scuba2_450.fits")
        self.sim_stream = TileStream(sim, config.model, config.conventions, seed=config.seed * 2 + 1,
                                     name="simulated fields")
        self.real_stream = (TileStream(real, config.model, config.conventions, seed=config.seed * 2 + 2,
                                       min_good=config.data.real_min_good_fraction, name="real pairs")
                            if real and config.sim_per_real > 0 else None)
        if self.real_stream is None:
            config = self.config = replace(config, data=replace(config.data, real_dirs=()))
        self.valid = TileStream([valid], config.model, config.conventions, seed=10_000 + config.seed,
                                name="validation field").take(config.data.n_valid_tiles)

    def _build(self) -> None:
        import keras
        import tensorflow as tf

        from .losses import CombinedLoss
        from .model import build_discriminator, build_generator

        config = self.config
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = build_generator(config.model, config.conventions)
            self.optimizer = keras.optimizers.Adam(learning_rate_schedule(config), beta_1=config.beta_1,
                                                   global_clipnorm=config.clip_global_norm)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.discriminator = self.d_optimizer = None
            if config.loss.adversarial > 0:
                self.discriminator = build_discriminator(config.model)
                # pix2pix's discriminator optimiser: Adam 2e-4, beta_1 0.5, constant.
                self.d_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
                self.d_optimizer.build(self.discriminator.trainable_variables)
        self.losses = {kind: CombinedLoss.from_configs(config.loss, config.model, config.conventions, real=(kind == "real"))
                       for kind in ("sim", "real")}

    def _checkpoint(self):
        import tensorflow as tf

        # Dropout RNG states are model variables that tf.train.Checkpoint does not reach
        # through the model; save them explicitly so a resumed run draws the same masks.
        rng_states = {f"dropout_rng_{i}": v for i, v in
                      enumerate(v for v in self.model.variables if "seed_generator" in v.path)}
        adversary = ({"discriminator": self.discriminator, "d_optimizer": self.d_optimizer}
                     if self.discriminator is not None else {})
        return tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step, rng=rng_states,
                                   **adversary)

    @property
    def restored(self) -> str | None:
        """The checkpoint this run resumed from, if any."""
        return self.checkpoints.restored

    # -- data ---------------------------------------------------------------------------
    def _distributed(self, stream: TileStream, start_sample: int):
        import tensorflow as tf

        batch = self.config.batch_size

        def dataset_fn(context: tf.distribute.InputContext):
            return stream.dataset(context.get_per_replica_batch_size(batch), start=start_sample,
                                  shard=context.input_pipeline_id, num_shards=context.num_input_pipelines)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def _iterators(self, start: int) -> dict:
        """Distributed batch iterators of each kind, positioned after ``start`` global steps."""
        n_sim, n_real = self.config.steps_before(start)
        iterators = {"sim": self._distributed(self.sim_stream, n_sim * self.config.batch_size)}
        if self.real_stream is not None:
            iterators["real"] = self._distributed(self.real_stream, n_real * self.config.batch_size)
        return iterators

    # -- steps --------------------------------------------------------------------------
    def _make_step(self, kind: str):
        import tensorflow as tf

        from .losses import AdversarialLoss

        loss_fn, model, optimizer = self.losses[kind], self.model, self.optimizer
        batch = self.config.batch_size
        # The adversarial term runs on simulated steps: real pairs have masked (NaN) target
        # pixels, which a discriminator would learn to spot.
        disc, d_optimizer = (self.discriminator, self.d_optimizer) if kind == "sim" else (None, None)
        weight, adversarial = self.config.loss.adversarial, AdversarialLoss()

        def replica_step(inputs, targets):
            with tf.GradientTape() as tape, tf.GradientTape() as d_tape:
                predictions = model(inputs, training=True)
                terms = loss_fn.per_term(targets, predictions, inputs)
                total = loss_fn.total(terms)
                if disc is not None:
                    d_fake = disc(tf.concat([inputs, predictions[..., :1]], -1), training=True)
                    target_map = targets[..., :1]
                    d_real = disc(tf.concat([inputs, tf.where(tf.math.is_finite(target_map), target_map, 0.0)], -1),
                                  training=True)
                    terms["adversarial"] = adversarial.call(1.0, d_fake)
                    terms["discriminator"] = adversarial.call(1.0, d_real) + adversarial.call(0.0, d_fake)
                    total = total + weight * terms["adversarial"]
                    d_loss = tf.nn.compute_average_loss(terms["discriminator"], global_batch_size=batch)
                loss = tf.nn.compute_average_loss(total, global_batch_size=batch)
            grads = tape.gradient(loss, model.trainable_variables)
            # The norm before clipping (the optimizer clips to ``clip_global_norm``), averaged
            # over replicas by the SUM reduction below: what a loss spike does to the weights.
            grad_norm = tf.linalg.global_norm(grads) / self.strategy.num_replicas_in_sync
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            if disc is not None:
                d_grads = d_tape.gradient(d_loss, disc.trainable_variables)
                d_optimizer.apply_gradients(zip(d_grads, disc.trainable_variables))
            logs = {k: tf.nn.compute_average_loss(v, global_batch_size=batch) for k, v in terms.items()}
            logs["total"] = loss
            logs["grad_norm"] = grad_norm
            return logs

        @tf.function
        def step(iterator):
            inputs, targets = next(iterator)
            logs = self.strategy.run(replica_step, args=(inputs, targets))
            return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in logs.items()}

        return step

    def validate(self) -> dict:
        """Loss terms (simulated form) on the held-out validation tiles."""
        inputs, targets = self.valid
        predictions = self.model.predict(inputs, batch_size=self.config.batch_size, verbose=0)
        terms = self.losses["sim"].per_term(targets, predictions, inputs)
        logs = {k: float(np.mean(v)) for k, v in terms.items()}
        logs["total"] = float(np.mean(self.losses["sim"].total(terms)))
        return logs

    # -- loop ---------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> dict:
        """Train until ``config.total_steps`` (or ``max_steps``, for splitting a run); the
        :class:`Reporter` says what happens."""
        config, report = self.config, self.report
        start = int(self.step.numpy())
        stop = config.total_steps if max_steps is None else min(max_steps, config.total_steps)
        if self.chief:
            write_config(config, self.out / "config.json")
        if start > 0:
            report.say(f"resumed from step {start} of {config.total_steps}"
                       + (f" ({Path(self.restored).name})" if self.restored else ""))
        iterators = self._iterators(start)
        report.begin(start)
        for step in range(start, stop):
            kind = "real" if config.is_real_step(step) else "sim"
            began = time.perf_counter()
            logs = {k: float(v) for k, v in self._step_fns[kind](iterators[kind]).items()}
            self.step.assign_add(1)
            report.step(step, kind, logs, time.perf_counter() - began, lambda: float(self.optimizer.learning_rate),
                        last=step + 1 == stop)
            end_of_epoch = (step + 1) % config.steps_per_epoch == 0
            if end_of_epoch or step + 1 == stop:
                began = time.perf_counter()
                valid = self.validate()
                images = self._preview() if end_of_epoch else None
                saved = self.checkpoints.save(step + 1)
                report.epoch(step, valid, saved, time.perf_counter() - began, images)
        return report.end(stop - start)


    def _initialise_from(self, folder: str) -> None:
        """Start from the weights of the model in ``folder`` (a train.py model folder)."""
        import keras

        from .model import pixel_shuffle_layer

        path = Path(folder) / "model.keras"
        if not path.exists():
            raise ValueError(f"{folder}: no model.keras to start from; give a model folder written by train.py")
        pixel_shuffle_layer()
        source = keras.saving.load_model(path, compile=False)
        if self.config.model.catalogue_head and "cells_out" not in {layer.name for layer in source.layers}:
            self._initialise_without_head(folder, source)
            return
        try:
            self.model.set_weights(source.get_weights())
        except ValueError as error:
            raise ValueError(f"{folder}: its architecture differs from this run's ({error}); use the same "
                             "model settings to start from it") from None

    def _initialise_without_head(self, folder: str, source) -> None:
        """Start a network with a catalogue head from one without: the weighted layers of
        ``source`` into this run's, in order, the catalogue head's (``cells_*``, built last)
        left out; they keep their initial weights. (By order, not name: Keras numbers unnamed
        layers by how many the process has built before.)"""
        mine = [layer for layer in self.model.layers if layer.weights and not layer.name.startswith("cells_")]
        theirs = [layer for layer in source.layers if layer.weights]
        shapes = [[[w.shape for w in layer.weights] for layer in layers] for layers in (mine, theirs)]
        if shapes[0] != shapes[1]:
            raise ValueError(f"{folder}: its architecture differs from this run's beyond the catalogue head; start "
                             "from a model of the same settings")
        for layer, other in zip(mine, theirs):
            layer.set_weights(other.get_weights())

    def _preview(self, n: int = 3) -> dict:
        """Input, target and output of the first ``n`` validation tiles, as TensorBoard images."""
        inputs, targets = self.valid[0][:n], self.valid[1][:n]
        outputs = self.model(inputs, training=False).numpy()
        return {"input_spire_250": inputs[..., :1].clip(0, 1), "target_450": np.nan_to_num(targets[..., :1]).clip(0, 1),
                "output_450": outputs[..., :1]}

    def export(self, metrics: dict | None = None) -> Path:
        """Write the ModelArtifact folder ``out_dir/model`` (chief only)."""
        artifact = self.out / "model"
        if self.chief:
            export_artifact(self.model, self.config, artifact, metrics)
        return artifact


#: Steps of each kind (simulated, real) left out of the rate: they trace their graphs.
_WARMUP_STEPS = 3

#: train.py's calibration after the last step (effective beam and error calibration on
#: fields of the training distribution), in end-of-epoch pauses of the default run,
#: measured on the 2-core development machine (15.7 s = 41 pauses of 0.39 s, plus ≈ 7 s to
#: simulate three calibration fields on first use; docs/training.md), so the ETA covers it.
CALIBRATION_PAUSES = 60.0


class SpikeWatch:
    """Loss spikes, said out loud: a training step whose total loss is over ``factor`` × the
    running median of the last ``window`` steps of its kind (simulated or real), or an
    epoch's validation loss over ``factor`` × the median of the earlier epochs'.

    The loop does not skip such steps: their gradients are clipped (``clip_global_norm``),
    and whether the run recovered shows in the next epochs' losses, which the report says.
    """

    def __init__(self, factor: float = 3.0, window: int = 100, min_history: int = 20):
        from collections import deque

        self.factor, self.min_history = float(factor), int(min_history)
        self.history = {"sim": deque(maxlen=window), "real": deque(maxlen=window)}
        self.valid: list[float] = []
        self.epoch: list[dict] = []   # spikes since the last report
        self.all: list[dict] = []     # every spike of the run (this session)

    def _spike(self, record: dict) -> None:
        self.epoch.append(record)
        self.all.append(record)

    def step(self, number: int, kind: str, loss: float, grad_norm: float) -> None:
        past = self.history[kind]
        if len(past) >= self.min_history:
            median = float(np.median(past))
            if not np.isfinite(loss) or (median > 0 and loss > self.factor * median):
                self._spike({"step": number, "kind": kind, "loss": loss, "ratio": loss / median,
                             "grad_norm": grad_norm})
        if np.isfinite(loss):
            past.append(loss)

    def validation(self, number: int, loss: float) -> None:
        if len(self.valid) >= 3:
            median = float(np.median(self.valid))
            if not np.isfinite(loss) or (median > 0 and loss > self.factor * median):
                self._spike({"step": number, "kind": "valid", "loss": loss, "ratio": loss / median})
        if np.isfinite(loss):
            self.valid.append(loss)

    def report(self, clip: float | None) -> list[str]:
        """At most two lines about the spikes since the last report: the training steps'
        (how many, the largest, whether clipping caught them) and the validation's."""
        lines = []
        steps = [s for s in self.epoch if s["kind"] != "valid"]
        if steps:
            worst = max(steps, key=lambda s: s["ratio"] if np.isfinite(s["ratio"]) else np.inf)
            clipped = sum(1 for s in steps if clip and s["grad_norm"] > clip)
            caught = (f"{clipped} of {len(steps)} clipped to gradient norm {clip:g}" if clip else "no clipping")
            lines.append(f"  note: {len(steps)} loss spike(s) this epoch (over {self.factor:g}× the running median), "
                         f"largest {worst['loss']:.4g} = {worst['ratio']:.1f}× at step {worst['step']} ({worst['kind']}, "
                         f"gradient norm {worst['grad_norm']:.3g}); {caught}; training goes on")
        for s in self.epoch:
            if s["kind"] == "valid":
                lines.append(f"  note: validation loss {s['loss']:.4g} at step {s['step']} is {s['ratio']:.1f}× "
                             "the median of the earlier epochs; training goes on")
        self.epoch = []
        return lines


class _SteadyRate:
    """Time per training step over the last steps (not since start-up, which is slow:
    tracing, the first epoch's caches) and per end-of-epoch pause (validation, summaries,
    checkpoint), kept apart so the ETA is right from the first epoch on."""

    def __init__(self, steps_per_epoch: int, window: int = 200):
        from collections import deque

        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.steps = deque(maxlen=window)
        self.pauses = deque(maxlen=20)

    def step(self, seconds: float) -> None:
        self.steps.append(seconds)

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def rate(self) -> float:
        """Steps per second, end-of-epoch pauses included."""
        if len(self.steps) < 2:
            return float("nan")
        per_step = float(np.mean(self.steps))
        per_epoch = float(np.mean(self.pauses)) if self.pauses else 0.0
        return 1.0 / (per_step + per_epoch / self.steps_per_epoch)

    def eta(self, remaining_steps: int, remaining_epochs: int, after_pauses: float = 0.0) -> str:
        """``'1 h 05 min'``-style time left: the steps, the epochs' pauses and
        ``after_pauses`` pauses' worth of work after the last step; '' before the rate settles."""
        if len(self.steps) < 20 or remaining_steps <= 0:
            return ""
        pause = float(np.mean(self.pauses)) if self.pauses else 0.0
        seconds = remaining_steps * float(np.mean(self.steps)) + (remaining_epochs + after_pauses) * pause
        minutes = int(round(seconds / 60))
        return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def export_saved_model(model, path: str | os.PathLike) -> None:
    """A SavedModel whose ``serve`` signature maps normalised tiles (B, H, W, C) to the
    output, loadable with ``tf.saved_model.load`` and no galaxysr code.

    ``model.export`` tracks the model's Keras variables *and* the TF variables its
    endpoint uses, so every weight is written twice; an archive whose endpoint alone
    tracks the variables stores each once (half the size, the same outputs).
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[keras.InputSpec(shape=(None, None, None, model.input_shape[-1]),
                                                          dtype="float32")])
    archive.write_out(str(path), verbose=False)


def export_artifact(model, config: TrainConfig, folder: str | os.PathLike, metrics: dict | None = None) -> Path:
    """Write a ModelArtifact: ``saved_model/`` (loads without galaxysr), ``model.keras``,
    ``config.json`` (the full TrainConfig with no machine path, its provenance — version,
    command, seed, git commit —, flux scaling, bands, pixel scale) and ``metrics.json``; the
    ``calibration.json`` that :func:`galaxysr.evaluate.calibrate_artifact` adds afterwards (an
    earlier one in ``folder`` is removed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    export_saved_model(model, folder / "saved_model")
    with warnings.catch_warnings():  # Keras' own np.array(variable): numpy 2's copy notice, nothing to act on
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        model.save(folder / "model.keras")
    write_config(portable(config), folder / "config.json",
                 {"provenance": provenance(config), "normalisation": asdict(config.model.scaling),
                  "bands": {"inputs": list(config.model.input_bands), "target": config.model.target_band},
                  "pixel_arcsec": config.conventions.pixel_arcsec})
    (folder / "metrics.json").write_text(json.dumps(metrics or {}, indent=2))
    # A folder exported into again holds a new network: an earlier calibration is not its own.
    (folder / "calibration.json").unlink(missing_ok=True)
    return folder


def train(config: TrainConfig, max_steps: int | None = None, progress: bool = True, strategy=None,
          after_pauses: float = 0.0) -> dict:
    """Train (resuming from ``out_dir`` if a checkpoint is there) and export at the end.

    ``strategy`` overrides ``config.strategy`` with a ready `tf.distribute` strategy.
    ``after_pauses``: the work that follows training, in end-of-epoch pauses (validation +
    checkpoint; :data:`CALIBRATION_PAUSES` for train.py's calibration), for the ETA.
    Returns a summary with the validation history, wall time and, when training reached
    ``total_steps``, the artifact path.
    """
    trainer = Trainer(config, progress=progress, strategy=strategy, after_pauses=after_pauses)
    summary = trainer.run(max_steps=max_steps)
    summary["final_step"] = int(trainer.step.numpy())
    summary["chief"] = trainer.chief
    if summary["final_step"] >= config.total_steps:
        final = summary["history"][-1] if summary["history"] else {}
        summary["artifact"] = str(trainer.export({"validation": final, "train_seconds": summary["seconds"],
                                                  "loss_spikes": summary["spikes"]}))
    return summary
