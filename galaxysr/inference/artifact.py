"""A trained model on disk (a ModelArtifact folder: SavedModel and/or ``.keras`` plus
``config.json``): loading it, the shipped one, and recording what calibration measured."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from pathlib import Path

import numpy as np

from ..maps import MapError
from ..model import ModelConfig

__all__ = ["SHIPPED_MODEL", "ModelArtifact", "load_artifact", "load_model", "record_calibration"]

#: The model shipped with the package.
SHIPPED_MODEL = files("galaxysr") / "data" / "model"
@dataclass
class ModelArtifact:
    """A trained model folder: SavedModel and/or ``.keras`` plus ``config.json``."""

    path: Path
    config: ModelConfig
    meta: dict
    model_file: Path

    @property
    def name(self) -> str:
        """Which model this is: ``shipped`` for the model shipped with galaxysr, else the
        folder it was loaded from (as given)."""
        try:
            if self.path.resolve() == Path(str(SHIPPED_MODEL)).resolve():
                return "shipped"
        except OSError:
            pass
        return str(self.path)

    @cached_property
    def sha256(self) -> str:
        """Hash of the model's weights files (first 16 hex digits)."""
        digest = hashlib.sha256()
        paths = sorted(self.model_file.rglob("*")) if self.model_file.is_dir() else [self.model_file]
        for path in paths:
            if path.is_file():
                digest.update(path.relative_to(self.model_file.parent).as_posix().encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    @cached_property
    def predict_fn(self):
        """Callable: normalised tiles (B, H, W, C) float32 → (B, H, W, 1), or (B, H, W, 2)
        (map, error scale) for models with an uncertainty head."""
        import tensorflow as tf

        if self.model_file.is_dir():
            loaded = tf.saved_model.load(str(self.model_file))
            self._keep = loaded  # the concrete function needs its object alive
            return lambda x: loaded.serve(tf.constant(x)).numpy()
        import keras

        from ..model import pixel_shuffle_layer

        pixel_shuffle_layer()  # registers the layer before loading
        model = keras.saving.load_model(self.model_file, compile=False)
        return lambda x: model(x, training=False).numpy()


def load_artifact(path: str | os.PathLike | None = None) -> ModelArtifact:
    """Load a model: an artifact folder, a SavedModel folder or a ``.keras`` file.

    ``config.json`` (written by ``train.py``) is looked for in the folder and beside the
    file; it records the bands, pixel scale and flux scaling that give the numbers meaning.
    ``None`` loads the shipped model.
    """
    path = Path(SHIPPED_MODEL if path is None else path)
    if not path.exists():
        raise MapError(f"{path}: no such model; give a model folder written by train.py "
                       "(runs/NAME/model), its saved_model/ folder or its model.keras")
    if path.is_dir() and (path / "saved_model").is_dir():
        folder, model_file = path, path / "saved_model"
    elif path.is_dir() and (path / "saved_model.pb").exists():
        folder, model_file = path.parent, path
    elif path.is_dir() and (path / "model.keras").exists():
        folder, model_file = path, path / "model.keras"
    elif path.suffix == ".keras":
        folder, model_file = path.parent, path
    else:
        raise MapError(f"{path}: not a galaxysr model (no saved_model/, saved_model.pb or model.keras)")
    config_path = next((p for p in (folder / "config.json", path / "config.json") if p.exists()), None)
    if config_path is None:
        raise MapError(f"{path}: no config.json beside the model; it records the bands, pixel scale "
                       "and flux scaling — copy it from the train.py run folder (runs/NAME/model)")
    try:
        meta = json.loads(config_path.read_text())
        config = ModelConfig.from_dict(meta["train"]["model"])
    except json.JSONDecodeError as error:
        raise MapError(f"{config_path}: not valid JSON ({error}); restore it from the train.py run folder") from None
    except KeyError as error:
        raise MapError(f"{config_path}: no {error} entry; it is not a galaxysr model configuration") from None
    except (TypeError, ValueError) as error:
        raise MapError(f"{config_path}: {error}; it was written by another galaxysr version or edited — "
                       "restore it from the train.py run folder") from None
    return ModelArtifact(path=folder, config=config, meta=meta, model_file=model_file)


def load_model(model=None) -> ModelArtifact:
    """A trained model: ``None`` (the shipped one), a model folder written by ``train.py``,
    its ``saved_model/`` folder or ``model.keras``, or an already loaded ModelArtifact."""
    return model if isinstance(model, ModelArtifact) else load_artifact(model)


def record_calibration(artifact: ModelArtifact, beam: dict | None = None, errors: dict | None = None) -> ModelArtifact:
    """Store measured calibrations in the artifact's ``config.json`` and reload it.

    ``beam`` (see :func:`galaxysr.evaluate.measure_effective_beam`): its FWHM becomes
    ``ModelConfig.effective_fwhm_arcsec`` (written to every output header and used as the
    catalogue's PSF). ``errors`` (see :func:`galaxysr.evaluate.calibrate_errors`): its
    nodes and factors become ``ModelConfig.error_calibration``. The whole measurements are
    kept under ``effective_beam`` and ``error_calibration``. Neither given: both are
    removed, so that a model is re-calibrated from its raw outputs, not on top of an earlier
    calibration.
    """
    path = artifact.path / "config.json"
    meta = json.loads(path.read_text())
    if beam is None and errors is None:  # forget earlier calibrations: measure afresh
        meta["train"]["model"].update(effective_fwhm_arcsec=None, error_calibration=None)
        meta.pop("effective_beam", None)
        meta.pop("error_calibration", None)
    if beam is not None:
        fwhm = float(beam["fwhm_arcsec"])
        if not np.isfinite(fwhm) or fwhm <= 0:
            raise ValueError(f"{artifact.path}: the measured beam FWHM is {fwhm}; not recording it")
        meta["train"]["model"]["effective_fwhm_arcsec"] = round(fwhm, 3)
        meta["effective_beam"] = beam
    if errors is not None:
        meta["train"]["model"]["error_calibration"] = [list(errors["flux_mjy"]), list(errors["factor"])]
        meta["error_calibration"] = errors
    path.write_text(json.dumps(meta, indent=2))
    return load_artifact(artifact.path)


