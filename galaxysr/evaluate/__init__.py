"""Science evaluation: the catalogue drawn from a super-resolved map, against the truth.

On held-out simulated fields (seeds never used in training; skies never drawn in training)
the network's output and the classical baselines (:mod:`galaxysr.baselines`) are extracted
with the same code (:mod:`galaxysr.catalogue`), matched one-to-one to the truth 450 µm
catalogue, and scored as in Lauritsen et al. (2021): completeness and purity against flux,
S_out/S_true, position offsets and the output beam. On a real pair the reference is the
catalogue extracted from the SCUBA-2 450 µm map itself.

``metrics``: scoring (pure functions of catalogues and maps; per-bin results as astropy
tables with units). ``runs``: the evaluation fields and runs, and the calibrations of a
trained model (beam, errors). ``health``: the check after training that a run
landed in the good mode. ``report``: Markdown tables, figures and metrics.json.
"""

from .health import HEALTH_BOUNDS, HealthBounds, catalogue_health, health_lines, health_verdict, record_health
from .metrics import (ERROR_BINS_MJY, FLUX_CURVE_BINS_MJY, TARGETS, EvalConfig, binned_fraction, binned_table,
                      calibrate_errors, error_statistics, fit_flux_curve, inner_region, isolated_bright, isolated_source_stats, jsonable, match,
                      paired_offsets, pool_fields, robust_std, score, score_fields)
from .report import (NOT_BASELINES, SKY_TITLES, baseline_comparison, paired_offset_table, passes, per_bin_table,
                     sky_comparison_table, summary_table, update_readme, write_report)
from .runs import (SKIES, calibrate_artifact, measure_flux_scale, measure_head_flux_curve, measure_presence, measure_reobservation, colour_response, evaluate_real,
                   evaluate_simulated, evaluation_fields, matched_sources, measure_effective_beam, method_maps, repeat_statistics, sky_simulation,
                   source_errors)

__all__ = ["measure_presence", "HEALTH_BOUNDS", "HealthBounds", "catalogue_health", "health_lines", "health_verdict", "record_health",
           "ERROR_BINS_MJY", "FLUX_CURVE_BINS_MJY", "TARGETS", "EvalConfig", "binned_fraction", "binned_table",
           "calibrate_errors", "error_statistics", "fit_flux_curve", "inner_region", "isolated_bright", "isolated_source_stats", "jsonable", "match",
           "paired_offsets", "pool_fields", "robust_std", "score", "score_fields", "NOT_BASELINES", "SKY_TITLES", "baseline_comparison",
           "paired_offset_table", "passes", "per_bin_table", "sky_comparison_table", "summary_table",
           "update_readme", "write_report",
           "SKIES", "calibrate_artifact", "measure_flux_scale", "measure_head_flux_curve", "measure_reobservation", "colour_response", "evaluate_real",
           "evaluate_simulated", "evaluation_fields", "matched_sources", "measure_effective_beam", "method_maps", "repeat_statistics",
           "sky_simulation", "source_errors"]
