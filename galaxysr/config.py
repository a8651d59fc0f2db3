"""Seeds, default paths and the loss settings: what the command line needs before any
heavy import (TensorFlow is imported only once a model is built or loaded).

Seeds of simulated fields: training fields count up from ``DataConfig.first_seed``;
validation, calibration and evaluation seeds are far from them and never trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["VALIDATION_SEED", "CALIBRATION_SEEDS", "EVALUATION_SEEDS", "SIM_DIR", "EVAL_FIELD_DIR", "RUN_DIR",
           "REPORT_DIR", "LossConfig", "refuse_unknown_keys"]

def refuse_unknown_keys(cls, data: dict, what: str) -> None:
    """Raise ValueError naming the keys of ``data`` that are not fields of the dataclass
    ``cls`` (a config.json from another version, or a typo), e.g. "unknown model setting(s) x"."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(sorted(unknown))}")


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
class LossConfig:
    """Weights and settings of the combined loss (physical units in the names).

    The L1 term is in normalised units (~0.01–0.05 per pixel); the flux terms in mJy/beam
    and mJy. The weights bring them to comparable sizes at the start of training.
    ``uncertainty`` weighs the error head's likelihood (only for models with that head).
    ``sky_model`` weighs the supervision of a sky-model network's sky at a resolution finer
    than the product: the predicted and the true sky each drawn through a Gaussian of
    ``sky_fwhm_arcsec``, compared by a Huber error of knee ``sky_huber_mjy`` (simulated data:
    the truth is known). ``adversarial`` weighs a conditional PatchGAN term (pix2pix;
    simulated steps only; 0 = no discriminator). Source and sky errors on sources brighter
    than ``bright_mjy`` count relatively rather than in mJy (0: in mJy throughout), so the
    few bright (up to a few Jy) sources of a sky do not outweigh the rest. See
    :mod:`galaxysr.losses` for the terms.
    """

    l1: float = 1.0
    mean_flux: float = 0.02
    median_flux: float = 0.02
    aperture_flux: float = 0.01
    peak_flux: float = 0.02
    uncertainty: float = 0.02
    sky_model: float = 10.0
    adversarial: float = 0.0
    aperture_radius_fwhm: float = 1.0
    peak_radius_fwhm: float = 0.5
    detect_threshold_mjy: float = 2.0
    max_sources: int = 48
    sky_fwhm_arcsec: float = 3.0
    sky_huber_mjy: float = 10.0
    bright_mjy: float = 100.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LossConfig":
        """From :meth:`to_dict`'s output; runs written before the peak, uncertainty and sky
        terms existed had them at weight 0."""
        refuse_unknown_keys(cls, data, "loss setting(s)")
        return cls(**{"peak_flux": 0.0, "uncertainty": 0.0, "sky_model": 0.0, "bright_mjy": 0.0, **data})
