"""The health check after training: good calibration records pass, spread ones are flagged."""

import json

import pytest

from galaxysr.evaluate.health import HEALTH_BOUNDS, health_lines, health_verdict, record_health

#: The shipped 0.3.0 model's calibration (a good run) and the newcomer's spread run of the same
#: command (issue "robust training": 15.62″, peak/true 0.369, catalogue 0.54–0.60 complete).
GOOD = ({"fwhm_arcsec": 9.98, "peak_ratio": 0.658},
        {"completeness_above_15mjy": 0.95, "median_flux_ratio_above_9mjy": 0.96})
SPREAD = ({"fwhm_arcsec": 15.62, "peak_ratio": 0.369},
          {"completeness_above_15mjy": 0.57, "median_flux_ratio_above_9mjy": 0.83})


def test_a_good_run_passes():
    verdict = health_verdict(*GOOD)
    assert verdict["ok"] and len(verdict["checks"]) == 4
    assert health_lines(verdict)[0].startswith("health check passed")


def test_a_spread_run_is_flagged_with_what_a_good_run_gives_and_what_to_do():
    verdict = health_verdict(*SPREAD)
    assert not verdict["ok"]
    # Its catalogue fluxes (0.83) are those of a good run (seed 1: 0.83): the flux scale does not
    # tell the modes apart, the beam, the peaks and the completeness do.
    assert {c["name"] for c in verdict["checks"] if not c["ok"]} == {
        "output beam FWHM (arcsec)", "peak/true of bright isolated sources", "catalogue completeness above 15 mJy"}
    text = "\n".join(health_lines(verdict, seed=0))
    assert "15.6" in text and f"≤ {HEALTH_BOUNDS.max_fwhm_arcsec:g}" in text and "--seed 1" in text


@pytest.mark.parametrize("change, failing", [({"fwhm_arcsec": 12.5}, "output beam FWHM (arcsec)"),
                                             ({"peak_ratio": 0.45}, "peak/true of bright isolated sources"),
                                             ({"fwhm_arcsec": float("nan")}, "output beam FWHM (arcsec)")])
def test_each_beam_bound_alone_fails_the_check(change, failing):
    verdict = health_verdict({**GOOD[0], **change}, GOOD[1])
    assert [c["name"] for c in verdict["checks"] if not c["ok"]] == [failing]


def test_the_verdict_is_recorded_in_metrics_json(tmp_path):
    class Artifact:
        path = tmp_path

    (tmp_path / "metrics.json").write_text(json.dumps({"validation": {"step": 1}}))
    record_health(Artifact, health_verdict(*SPREAD))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["validation"] == {"step": 1} and metrics["health"]["ok"] is False


@pytest.mark.parametrize("flux, ok", [(0.70, False), (0.83, True), (0.94, True), (1.30, False)])
def test_the_flux_check_flags_a_broken_scale_and_passes_the_good_runs(flux, ok):
    verdict = health_verdict(GOOD[0], {**GOOD[1], "median_flux_ratio_above_9mjy": flux})
    assert verdict["ok"] is ok


def test_a_run_whose_errors_could_not_be_calibrated_fails_and_says_why():
    """A broken run (lr 100×: too few sources found to calibrate its errors) must still get a
    verdict, not only a note that its errors are uncalibrated."""
    verdict = health_verdict(*GOOD)
    verdict.update(ok=False, error_calibration="not calibrated: too few matched sources to calibrate the errors")
    text = "\n".join(health_lines(verdict, seed=0))
    assert text.startswith("WARNING") and "error map not calibrated: too few matched sources" in text
    assert "--seed 1" in text
