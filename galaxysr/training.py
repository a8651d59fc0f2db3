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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from . import __version__
from .datasets import DataConfig, TileStream, load_pairs
from .losses import CombinedLoss, LossConfig
from .model import ModelConfig

ARTIFACT_FILES = ("saved_model", "model.keras", "config.json", "metrics.json")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; written as ``config.json`` beside the model.

    Attributes
    ----------
    epochs, steps_per_epoch : int
        Training length; an epoch ends with validation, summaries and a checkpoint.
    batch_size : int
        Global batch (split over replicas).
    sim_per_real : int
        Simulated steps per real step (1 = strict alternation as in Lauritsen et al.;
        0 = simulated data only).
    learning_rate, final_lr_fraction, beta_1 : float
        Adam with cosine decay from ``learning_rate`` to ``final_lr_fraction`` of it.
    seed : int
        Seeds weights, dropout and the data streams.
    out_dir : str
        Run folder: ``checkpoints/``, ``logs/`` (TensorBoard), ``model/`` (the artifact).
    strategy : str
        ``mirrored`` (all local devices), ``multiworker`` (TF_CONFIG), or ``default``.
    log_every : int
        Steps between TensorBoard scalar summaries.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 200
    steps_per_epoch: int = 60
    batch_size: int = 8
    sim_per_real: int = 1
    learning_rate: float = 1e-3
    final_lr_fraction: float = 0.05
    beta_1: float = 0.5
    seed: int = 0
    out_dir: str = "runs/default"
    strategy: str = "mirrored"
    log_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["model"] = ModelConfig.from_dict(data["model"])
        data["loss"] = LossConfig(**data["loss"])
        data["data"] = DataConfig(**{**data["data"], "real_dirs": tuple(data["data"]["real_dirs"])})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

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
    """A `tf.distribute` strategy by name (TF's own; no home-made scheduling)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable "
                             "(cluster addresses and this worker's index); see docs/training.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}; choose mirrored, multiworker or default")


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                    and "chief" not in resolver.cluster_spec().as_dict())


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


def write_config(config: TrainConfig, path: Path, extra: dict | None = None) -> None:
    payload = {"galaxysr_version": __version__, "train": config.to_dict(), **(extra or {})}
    path.write_text(json.dumps(payload, indent=2))


class Trainer:
    """Holds model, optimizer, data and step functions of one run."""

    def __init__(self, config: TrainConfig, progress: bool = True, strategy=None):
        import keras
        import tensorflow as tf

        self.config, self.progress = config, progress
        self.out = Path(config.out_dir)
        self.strategy = make_strategy(config.strategy) if strategy is None else strategy
        self.chief = _is_chief(self.strategy)
        self.out.mkdir(parents=True, exist_ok=True)
        _check_resume(config, self.out)

        # Data first: bad inputs fail before any model is built.
        sim, valid, real = load_pairs(config.data, config.model, progress)
        self.sim_stream = TileStream(sim, config.model, seed=config.seed * 2 + 1, name="simulated fields")
        self.real_stream = (TileStream(real, config.model, seed=config.seed * 2 + 2,
                                       min_good=config.data.real_min_good_fraction, name="real pairs")
                            if real and config.sim_per_real > 0 else None)
        if self.real_stream is None:
            config = self.config = replace(config, data=replace(config.data, real_dirs=()))
        self.valid = TileStream([valid], config.model, seed=10_000 + config.seed,
                                name="validation field").take(config.data.n_valid_tiles)

        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            from .model import build_generator

            self.model = build_generator(config.model)
            schedule = keras.optimizers.schedules.CosineDecay(
                config.learning_rate, decay_steps=max(config.total_steps, 1), alpha=config.final_lr_fraction)
            self.optimizer = keras.optimizers.Adam(schedule, beta_1=config.beta_1)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.losses = {kind: CombinedLoss.from_configs(config.loss, config.model.scaling,
                                                       config.model.pixel_arcsec, config.model.target_band,
                                                       real=(kind == "real"))
                       for kind in ("sim", "real")}
        # Dropout RNG states are model variables that tf.train.Checkpoint does not reach
        # through the model; save them explicitly so a resumed run draws the same masks.
        rng_states = {f"dropout_rng_{i}": v for i, v in
                      enumerate(v for v in self.model.variables if "seed_generator" in v.path)}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              rng=rng_states)
        ckpt_dir = self.out / "checkpoints" if self.chief else self.out / f"checkpoints_worker_tmp_{os.getpid()}"
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(ckpt_dir), max_to_keep=3)
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        self.writer = tf.summary.create_file_writer(str(self.out / "logs")) if self.chief else \
            tf.summary.create_noop_writer()
        self._step_fns = {kind: self._make_step(kind) for kind in ("sim", "real")}

    # -- data ---------------------------------------------------------------------------
    def _distributed(self, stream: TileStream, start_sample: int):
        import tensorflow as tf

        batch = self.config.batch_size

        def dataset_fn(context: tf.distribute.InputContext):
            return stream.dataset(context.get_per_replica_batch_size(batch), start=start_sample,
                                  shard=context.input_pipeline_id, num_shards=context.num_input_pipelines)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    # -- steps --------------------------------------------------------------------------
    def _make_step(self, kind: str):
        import tensorflow as tf

        loss_fn, model, optimizer = self.losses[kind], self.model, self.optimizer
        batch = self.config.batch_size

        def replica_step(inputs, targets):
            with tf.GradientTape() as tape:
                predictions = model(inputs, training=True)
                terms = loss_fn.per_term(targets, predictions)
                loss = tf.nn.compute_average_loss(loss_fn.total(terms), global_batch_size=batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            logs = {k: tf.nn.compute_average_loss(v, global_batch_size=batch) for k, v in terms.items()}
            logs["total"] = loss
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
        terms = self.losses["sim"].per_term(targets, predictions)
        logs = {k: float(np.mean(v)) for k, v in terms.items()}
        logs["total"] = float(np.mean(self.losses["sim"].total(terms)))
        return logs

    # -- loop ---------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> dict:
        """Train until ``config.total_steps`` (or ``max_steps``, for splitting a run)."""
        import tensorflow as tf
        from tqdm import tqdm

        config = self.config
        start = int(self.step.numpy())
        stop = config.total_steps if max_steps is None else min(max_steps, config.total_steps)
        if self.chief:
            write_config(config, self.out / "config.json")
        n_sim, n_real = config.steps_before(start)
        iterators = {"sim": self._distributed(self.sim_stream, n_sim * config.batch_size)}
        if self.real_stream is not None:
            iterators["real"] = self._distributed(self.real_stream, n_real * config.batch_size)
        bar = tqdm(total=config.total_steps, initial=start, unit="step", disable=not self.progress,
                   desc=f"training ({self.strategy.num_replicas_in_sync} replica(s))", dynamic_ncols=True)
        history, sums, counts = [], {}, {}
        started = time.perf_counter()
        for step in range(start, stop):
            kind = "real" if config.is_real_step(step) else "sim"
            logs = {k: float(v) for k, v in self._step_fns[kind](iterators[kind]).items()}
            self.step.assign_add(1)
            counts[kind] = counts.get(kind, 0) + 1
            for k, v in logs.items():
                sums.setdefault(kind, {})[k] = sums.get(kind, {}).get(k, 0.0) + v
            if step % config.log_every == 0 or step + 1 == stop:
                with self.writer.as_default(step=step):
                    for k, v in logs.items():
                        tf.summary.scalar(f"{kind}/{k}", v)
                    tf.summary.scalar("learning_rate", float(self.optimizer.learning_rate))
                bar.set_postfix({f"{kind}_loss": f"{logs['total']:.4f}"}, refresh=False)
            bar.update(1)
            end_of_epoch = (step + 1) % config.steps_per_epoch == 0
            if end_of_epoch or step + 1 == stop:
                valid = self.validate()
                # Training losses are means over the steps of this epoch (of this session).
                history.append({"step": step + 1, **{f"valid_{k}": v for k, v in valid.items()},
                                **{f"{kind}_{k}": v / counts[kind] for kind, d in sums.items()
                                   for k, v in d.items()}})
                sums, counts = {}, {}
                with self.writer.as_default(step=step):
                    for k, v in valid.items():
                        tf.summary.scalar(f"valid/{k}", v)
                    if end_of_epoch:
                        self._image_summary(step)
                self.manager.save(checkpoint_number=step + 1)
        bar.close()
        self.writer.flush()
        elapsed = time.perf_counter() - started
        return {"history": history, "seconds": elapsed, "steps": stop - start}

    def _image_summary(self, step: int, n: int = 3) -> None:
        import tensorflow as tf

        inputs, targets = self.valid[0][:n], self.valid[1][:n]
        outputs = self.model(inputs, training=False).numpy()
        tf.summary.image("input_spire_250", inputs[..., :1].clip(0, 1), step=step, max_outputs=n)
        tf.summary.image("target_450", np.nan_to_num(targets).clip(0, 1), step=step, max_outputs=n)
        tf.summary.image("output_450", outputs, step=step, max_outputs=n)

    def export(self, metrics: dict | None = None) -> Path:
        """Write the ModelArtifact folder ``out_dir/model`` (chief only)."""
        artifact = self.out / "model"
        if self.chief:
            export_artifact(self.model, self.config, artifact, metrics)
        return artifact


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
    ``config.json`` (the full TrainConfig, flux scaling, bands, pixel scale) and
    ``metrics.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    export_saved_model(model, folder / "saved_model")
    model.save(folder / "model.keras")
    write_config(config, folder / "config.json",
                 {"normalisation": asdict(config.model.scaling),
                  "bands": {"inputs": list(config.model.input_bands), "target": config.model.target_band},
                  "pixel_arcsec": config.model.pixel_arcsec})
    (folder / "metrics.json").write_text(json.dumps(metrics or {}, indent=2))
    return folder


def train(config: TrainConfig, max_steps: int | None = None, progress: bool = True, strategy=None) -> dict:
    """Train (resuming from ``out_dir`` if a checkpoint is there) and export at the end.

    ``strategy`` overrides ``config.strategy`` with a ready `tf.distribute` strategy.
    Returns a summary with the validation history, wall time and, when training reached
    ``total_steps``, the artifact path.
    """
    trainer = Trainer(config, progress=progress, strategy=strategy)
    summary = trainer.run(max_steps=max_steps)
    summary["final_step"] = int(trainer.step.numpy())
    if summary["final_step"] >= config.total_steps:
        final = summary["history"][-1] if summary["history"] else {}
        summary["artifact"] = str(trainer.export({"validation": final, "train_seconds": summary["seconds"]}))
    return summary
