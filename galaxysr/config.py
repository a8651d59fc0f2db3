"""Seeds, default paths and the loss settings: what the command line needs before any
heavy import (TensorFlow is imported only once a model is built or loaded).

Seeds of simulated fields: training fields count up from ``DataConfig.first_seed``;
validation, calibration and evaluation seeds are far from them and never trained on.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

__all__ = ["VALIDATION_SEED", "CALIBRATION_SEEDS", "EVALUATION_SEEDS", "SIM_DIR", "EVAL_FIELD_DIR", "RUN_DIR",
           "REPORT_DIR", "BACKGROUND_METHODS", "UPSAMPLING_METHODS", "STRATEGIES", "CATALOGUE_METHODS", "HEAD_P_MIN", "SKIES",
           "ConfigRecord", "LossConfig", "option", "refuse_unknown_keys"]

#: The choices of settings that the command line offers too, defined once (here, so that
#: building the command line imports nothing heavy).
#: How the SPIRE maps' background is removed (:mod:`galaxysr.conventions`).
BACKGROUND_METHODS = ("filter", "median", "none")
#: The decoder's upsampling (:class:`galaxysr.model.ModelConfig`).
UPSAMPLING_METHODS = ("transpose", "subpixel", "subpixel_head")
#: tf.distribute strategies (:func:`galaxysr.training.make_strategy`).
STRATEGIES = ("mirrored", "multiworker", "default")
#: Catalogue extraction methods (:func:`galaxysr.catalogue.extract_sources`).
CATALOGUE_METHODS = ("psf", "sky", "head")
#: Catalogue method ``"head"``: the default least p_real (calibrated probability of being real) kept.
#: Measured on the held-out sky (seed-0 model): at 0.7 the catalogue is ≥ 95 % pure in every bin
#: from 5 mJy (88 % at 3–5 mJy) and finds 97.8 % above 15 mJy and 58 % at 5–10 mJy; at 0.5 it finds
#: 98.5 % and 61 % at 94 % and 82 % purity (docs/inference.md). Lower it for completeness.
HEAD_P_MIN = 0.7
#: Evaluation skies (:func:`galaxysr.evaluate.sky_simulation`): the held-out recipe (headline),
#: the training distribution at evaluation seeds, and the reference sky of earlier versions.
SKIES = ("held_out", "training", "reference")


def option(default=dataclasses.MISSING, *, flag: str, help: str, **argparse_options) -> dataclasses.Field:
    """A configuration field that the command line sets with ``flag``: the field's default is
    the flag's, ``help`` is its help (``{name}`` fields of the config's defaults are filled in),
    and the command line (:func:`galaxysr.cli.add_config_options`) takes its type from the type
    hint. ``argparse_options`` go to ``add_argument`` (``choices``, ``nargs``, ``metavar``), and
    two more are understood: ``negate=True`` (a ``--no-…`` flag that sets a True default False)
    and ``zero_is_none=True`` (a numeric flag whose 0 means None, "off")."""
    return dataclasses.field(default=default, metadata={"cli": {"flag": flag, "help": help, **argparse_options}})


def refuse_unknown_keys(cls, data: dict, what: str) -> None:
    """Raise ValueError naming the keys of ``data`` that are not fields of the dataclass
    ``cls`` (a config.json from another version, or a typo), e.g. "unknown model setting(s) x"."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(sorted(unknown))}")


def _from_json(hint, value):
    """``value`` as read from JSON, made the type ``hint`` says: nested configs from their
    dicts, tuples from lists (recursively for a bare ``tuple``); anything else as it is."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return hint.from_dict(value)
    if (origin is tuple or hint is tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if not args:
            return tuple(_from_json(tuple, v) if isinstance(v, list) else v for v in value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v) for v in value)
        return tuple(_from_json(a, v) for a, v in zip(args, value))
    return value


class ConfigRecord:
    """``to_dict`` / ``from_dict`` for the frozen configuration dataclasses written next to every
    model and field (config.json, simulation.json).

    ``from_dict`` refuses keys that are not fields (a file from another version, or a typo), fills
    fields the file lacks from :attr:`LEGACY` (what a config written before the field existed
    meant; others take the current default) and converts values by the fields' type hints
    (nested configs, tuples). Subclasses set :attr:`WHAT` for the error message and may override
    :meth:`_upgrade` to rewrite an old file's keys first.
    """

    #: Values of fields missing from a saved config: what files written before them meant.
    LEGACY: ClassVar[dict] = {}
    #: What the fields are called in errors ("unknown model setting(s) x").
    WHAT: ClassVar[str] = "setting(s)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def _upgrade(cls, data: dict) -> dict:
        """Rewrite a saved config's keys before they are checked (default: none)."""
        return data

    @classmethod
    def from_dict(cls, data: dict):
        """From :meth:`to_dict`'s output (as JSON gives it back), or an older version's."""
        data = cls._upgrade(dict(data))
        refuse_unknown_keys(cls, data, cls.WHAT)
        data = {**cls.LEGACY, **data}
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _from_json(hints[f.name], data[f.name]) for f in fields(cls) if f.name in data})


#: Seed of the held-out validation field (training distribution).
VALIDATION_SEED = 1001
#: Fields of the training distribution on which a trained model's output beam is measured
#: and its errors calibrated (never trained on). The output beam widens with the depth of the
#: SPIRE input, so these seeds are chosen for SPIRE noise spanning the prior: 2.64×, 1.10×,
#: 1.37× and 0.54× HerMES-deep (geometric mean 1.2×). Seeds 1001–1003 alone all drew
#: 2.5–2.8× and measured a beam (10.8″) far wider than maps of typical depth show.
CALIBRATION_SEEDS = (1001, 1004, 1009, 1012)
#: Seeds of the evaluation fields (every sky).
EVALUATION_SEEDS = (2001, 2002)

#: Where simulated training fields are cached (relative to the working directory).
SIM_DIR = "data/sim"
#: Where evaluation fields are cached.
EVAL_FIELD_DIR = "data/sim/eval"
#: Default training run folder.
RUN_DIR = "runs/default"
#: Default evaluation report folder.
REPORT_DIR = "reports/evaluation"


@dataclass(frozen=True)
class LossConfig(ConfigRecord):
    """Weights and settings of the combined loss (physical units in the names).

    The L1 term is in normalised units (~0.01–0.05 per pixel); the flux terms in mJy/beam
    and mJy. The weights bring them to comparable sizes at the start of training.
    ``uncertainty`` weighs the error head's likelihood (only for models with that head).
    ``sky_model`` weighs the supervision of a sky-model network's sky at a resolution finer
    than the product: the predicted and the true sky each drawn through a Gaussian of
    ``sky_fwhm_arcsec``, compared by a Huber error of knee ``sky_huber_mjy`` (simulated data:
    the truth is known). ``adversarial`` weighs a conditional PatchGAN term (pix2pix;
    simulated steps only; 0 = no discriminator). ``presence``, ``cell_position`` and
    ``cell_flux`` weigh the catalogue head's terms (:class:`galaxysr.losses.CatalogueLoss`;
    models with that head, simulated steps only). ``reobservation`` weighs the catalogue head's
    SPIRE fluxes drawn back through the SPIRE beams against the input maps
    (:class:`galaxysr.losses.ReobservationLoss`, σ² = noise² + ``reobservation_confusion_mjy``²;
    every step, and the only supervised term of a real step without a 450 µm map; 0 = off, the
    default until a run with it measures better). Source and sky errors on sources brighter
    than ``bright_mjy`` count relatively rather than in mJy (0: in mJy throughout), so the
    few bright (up to a few Jy) sources of a sky do not outweigh the rest. See
    :mod:`galaxysr.losses` for the terms.
    """

    l1: float = option(1.0, flag="--w-l1", help="weight of the l1 loss term")
    mean_flux: float = option(0.02, flag="--w-mean", help="weight of the mean loss term")
    median_flux: float = option(0.02, flag="--w-median", help="weight of the median loss term")
    aperture_flux: float = option(0.01, flag="--w-aperture", help="weight of the aperture loss term")
    peak_flux: float = option(0.02, flag="--w-peak", help="weight of the peak loss term")
    uncertainty: float = option(0.02, flag="--w-uncertainty", help="weight of the uncertainty loss term")
    sky_model: float = option(10.0, flag="--w-sky", help="weight of the sky loss term")
    adversarial: float = option(0.0, flag="--w-adversarial", help="weight of the adversarial loss term")
    presence: float = option(0.05, flag="--w-presence", help="weight of the catalogue head's presence term")
    cell_position: float = option(0.03, flag="--w-cell-position",
                                  help="weight of the catalogue head's position likelihood")
    cell_flux: float = option(0.05, flag="--w-cell-flux", help="weight of the catalogue head's flux likelihood")
    reobservation: float = option(0.0, flag="--w-reobservation",
                                  help="weight of the re-observation term: the catalogue head's SPIRE fluxes drawn "
                                       "through the SPIRE beams against the input maps (every step, real SPIRE maps "
                                       "without a 450 µm map included; 0: off)")
    reobservation_confusion_mjy: float = 2.0
    cell_focal_gamma: float = 2.0
    cell_nll_beta: float = 0.5
    aperture_radius_fwhm: float = 1.0
    peak_radius_fwhm: float = 0.5
    detect_threshold_mjy: float = 2.0
    max_sources: int = 48
    sky_fwhm_arcsec: float = 3.0
    sky_huber_mjy: float = 10.0
    bright_mjy: float = 100.0

    #: Runs written before the peak, uncertainty and sky terms existed had them at weight 0.
    LEGACY: ClassVar[dict] = {"peak_flux": 0.0, "uncertainty": 0.0, "sky_model": 0.0, "bright_mjy": 0.0}
    # (The catalogue head's weights need no legacy value: a model without the head skips them.)
    WHAT: ClassVar[str] = "loss setting(s)"
