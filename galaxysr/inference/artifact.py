"""A trained model on disk (a ModelArtifact folder: SavedModel and/or ``.keras`` plus
``config.json``): loading it, the shipped one, and recording what calibration measured."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..config import ConfigRecord
from ..maps import FluxCurve, MapError
from ..conventions import InputConventions
from ..model import ModelConfig

__all__ = ["SHIPPED_MODEL", "CALIBRATION_FILE", "Calibration", "ModelArtifact", "load_artifact", "load_model",
           "read_calibration", "write_calibration", "record_calibration"]

#: What calibration measured, beside config.json in a model folder (galaxysr ≥ 0.4).
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration(ConfigRecord):
    """What :func:`galaxysr.evaluate.calibrate_artifact` measured after training, on fields of
    the training distribution: the model folder's ``calibration.json``.

    Attributes
    ----------
    effective_beam : dict or None
        :func:`galaxysr.evaluate.measure_effective_beam`'s record: ``fwhm_arcsec`` (arcsec) and
        ``peak_ratio`` of the stacked bright isolated sources, their number ``n``, the ``fields``.
    errors : dict or None
        :func:`galaxysr.evaluate.calibrate_errors`' record: ``flux_mjy`` (mJy/beam) and ``factor``
        nodes by which the error head's output is scaled, ``n_sources`` …
    flux_scale : dict or None
        :func:`galaxysr.evaluate.measure_flux_scale`'s record: the uncalibrated PSF catalogue's
        median S_out/S_true above 9 mJy on these fields (``network_ratio``, which predicts what
        the held-out sky shows to 0.03), and ``curves``, the flux calibration per reading
        (:meth:`flux_curves`) that super-resolved maps carry and their catalogues apply.
        Records made before the curves (0.3.0's model; 0.4 runs calibrated earlier) have none: nothing is applied.
    presence : dict or None
        A catalogue-head network's :func:`galaxysr.cells.presence_calibration`: how often a
        detection of each head score is real on these fields (the catalogue's ``p_real``).
    reobservation : dict or None
        :func:`galaxysr.evaluate.measure_reobservation`'s record: ``curves`` per SPIRE band, the flux
        curves of the refined (forced) SPIRE fluxes (:meth:`forced_curves`), and ``confusion_mjy``
        per band, the 1σ confusion (mJy/beam) of the sources the model's catalogue does not list,
        what is left in the SPIRE maps beyond their noise once the catalogue, refined, is
        re-observed (:mod:`galaxysr.reobserve`): the χ² of residuals on other skies is read
        against it.
    """

    effective_beam: dict | None = None
    errors: dict | None = None
    flux_scale: dict | None = None
    presence: dict | None = None
    reobservation: dict | None = None

    WHAT: ClassVar[str] = "calibration entr(ies)"

    @property
    def fwhm_arcsec(self) -> float | None:
        """The measured output beam FWHM (arcsec, to 0.001″), or None."""
        return None if self.effective_beam is None else round(float(self.effective_beam["fwhm_arcsec"]), 3)

    def flux_curves(self) -> dict:
        """Reading → :class:`galaxysr.maps.FluxCurve` of the catalogue's flux calibration (empty
        when none was measured)."""
        curves = (self.flux_scale or {}).get("curves", {})
        return {reading: FluxCurve.from_dict(record) for reading, record in curves.items() if "nodes_mjy" in record}

    def forced_curves(self) -> dict:
        """SPIRE band → the :class:`galaxysr.maps.FluxCurve` of the refined (forced) SPIRE fluxes
        (``predict --refine``), measured on the calibration fields (empty when not measured)."""
        curves = (self.reobservation or {}).get("curves") or {}
        return {band: FluxCurve.from_dict(record) for band, record in curves.items() if "nodes_mjy" in record}

    def confusion_mjy(self) -> dict:
        """SPIRE band → the confusion (mJy/beam) of the sources the catalogue does not list, as
        measured on the calibration fields (empty when not measured)."""
        return {band: float(v) for band, v in ((self.reobservation or {}).get("confusion_mjy") or {}).items()}

    def error_factor(self, flux_mjy: np.ndarray) -> np.ndarray | float:
        """The error head's calibration factor at predicted fluxes ``flux_mjy`` (interpolated in
        log flux between the nodes; 1 when uncalibrated)."""
        if self.errors is None:
            return 1.0
        nodes, factors = (np.asarray(self.errors[k], float) for k in ("flux_mjy", "factor"))
        return np.interp(np.log(np.clip(flux_mjy, nodes[0], nodes[-1])), np.log(nodes), factors)


def read_calibration(folder: Path, meta: dict) -> Calibration:
    """A model folder's :class:`Calibration`: its ``calibration.json``, or — for models calibrated
    before 0.4 — the entries of its config.json (``meta``)."""
    path = Path(folder) / CALIBRATION_FILE
    if path.exists():
        return Calibration.from_dict(json.loads(path.read_text()))
    model = meta.get("train", {}).get("model", {})
    beam = meta.get("effective_beam")
    if beam is None and model.get("effective_fwhm_arcsec") is not None:
        beam = {"fwhm_arcsec": model["effective_fwhm_arcsec"]}
    errors = meta.get("error_calibration")
    if model.get("error_calibration") is not None:  # the nodes prediction used
        nodes, factors = model["error_calibration"]
        errors = {**(errors or {}), "flux_mjy": list(nodes), "factor": list(factors)}
    return Calibration(effective_beam=beam, errors=errors)


def write_calibration(folder: Path, calibration: Calibration) -> Path:
    """Write ``calibration`` as the model folder's ``calibration.json``, and drop the entries a
    model calibrated before 0.4 kept in its config.json (one record, one place)."""
    path = Path(folder) / CALIBRATION_FILE
    path.write_text(json.dumps(calibration.to_dict(), indent=2))
    config_path = Path(folder) / "config.json"
    meta = json.loads(config_path.read_text())
    legacy = [meta.pop(k, None) for k in ("effective_beam", "error_calibration")]
    legacy += [meta["train"]["model"].pop(k, None) for k in ("effective_fwhm_arcsec", "error_calibration")]
    if any(v is not None for v in legacy):
        config_path.write_text(json.dumps(meta, indent=2))
    return path


#: The model shipped with the package.
SHIPPED_MODEL = files("galaxysr") / "data" / "model"


@dataclass
class ModelArtifact:
    """A trained model folder: SavedModel and/or ``.keras`` plus ``config.json`` (and, once
    calibrated, ``calibration.json``)."""

    path: Path
    config: ModelConfig
    conventions: InputConventions
    meta: dict
    model_file: Path
    calibration: Calibration = field(default_factory=Calibration)

    @property
    def beam_fwhm_arcsec(self) -> float:
        """FWHM of the beam the output map is drawn at (arcsec): the target band's for a
        sky-model network; the measured one (if recorded) for a legacy map network."""
        if not self.config.has_sky and self.calibration.fwhm_arcsec is not None:
            return self.calibration.fwhm_arcsec
        return self.config.beam_fwhm_arcsec

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
        train = InputConventions.split_from(meta["train"])
        config = ModelConfig.from_dict(train["model"])
        conventions = InputConventions.from_dict(train["conventions"]) if "conventions" in train else \
            InputConventions()
    except json.JSONDecodeError as error:
        raise MapError(f"{config_path}: not valid JSON ({error}); restore it from the train.py run folder") from None
    except KeyError as error:
        raise MapError(f"{config_path}: no {error} entry; it is not a galaxysr model configuration") from None
    except (TypeError, ValueError) as error:
        raise MapError(f"{config_path}: {error}; it was written by another galaxysr version or edited — "
                       "restore it from the train.py run folder") from None
    try:
        calibration = read_calibration(folder, meta)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise MapError(f"{folder / CALIBRATION_FILE}: {error}; rerun `galaxysr calibrate {folder}`") from None
    return ModelArtifact(path=folder, config=config, conventions=conventions, meta=meta, model_file=model_file,
                         calibration=calibration)


def load_model(model=None) -> ModelArtifact:
    """A trained model: ``None`` (the shipped one), a model folder written by ``train.py``,
    its ``saved_model/`` folder or ``model.keras``, or an already loaded ModelArtifact."""
    return model if isinstance(model, ModelArtifact) else load_artifact(model)


def record_calibration(artifact: ModelArtifact, beam: dict | None = None, errors: dict | None = None,
                       flux_scale: dict | None = None, presence: dict | None = None,
                       reobservation: dict | None = None) -> ModelArtifact:
    """Record measured calibrations in the artifact's ``calibration.json`` and reload it.

    ``beam`` (see :func:`galaxysr.evaluate.measure_effective_beam`): the stacked output beam
    (a legacy map network's output header and PSF). ``errors`` (see
    :func:`galaxysr.evaluate.calibrate_errors`): the error head's factors. ``flux_scale`` (see
    :func:`galaxysr.evaluate.measure_flux_scale`): the catalogue's flux scale. ``presence`` (see
    :func:`galaxysr.cells.presence_calibration`): the catalogue head's p_real. ``reobservation`` (see
    :func:`galaxysr.evaluate.measure_reobservation`): the unlisted sources' confusion. None given:
    all are forgotten, so that a model is re-calibrated from its raw outputs, not on top of an
    earlier calibration.
    """
    if beam is not None:
        fwhm = float(beam["fwhm_arcsec"])
        if not np.isfinite(fwhm) or fwhm <= 0:
            raise ValueError(f"{artifact.path}: the measured beam FWHM is {fwhm}; not recording it")
    old = artifact.calibration
    given = {"effective_beam": beam, "errors": errors, "flux_scale": flux_scale, "presence": presence,
             "reobservation": reobservation}
    calibration = Calibration() if all(v is None for v in given.values()) else \
        Calibration(**{k: getattr(old, k) if v is None else v for k, v in given.items()})
    write_calibration(artifact.path, calibration)
    return load_artifact(artifact.path)
