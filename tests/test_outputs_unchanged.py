"""The shipped model's outputs on a small field are what they were when
tests/data/outputs_reference.npz was made (issue 28: refactors change no output).

On the CPU model the reference was made on, every plane must be bit-identical; elsewhere the
floating point differs (oneDNN picks other kernels), so the planes are compared as 16 × 16
pixel block sums to 1e-4 and the catalogue to 0.01″ and 0.1 %."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_outputs_reference import KEYWORDS, PLANES, REFERENCE, cpu_signature, run_predict, summarise  # noqa: E402


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return summarise(*run_predict(tmp_path_factory.mktemp("unchanged")))


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as saved:
        return {k: saved[k] for k in saved.files}


@pytest.mark.parametrize("plane", PLANES)
def test_every_plane_and_its_header_are_unchanged(outputs, reference, plane):
    assert list(outputs[f"{plane}_header"]) == list(reference[f"{plane}_header"]), KEYWORDS
    if str(outputs["cpu"]) == str(reference["cpu"]):
        assert str(outputs[f"{plane}_sha256"]) == str(reference[f"{plane}_sha256"]), f"{plane} changed"
    scale = np.abs(reference[f"{plane}_blocks"]).max()
    np.testing.assert_allclose(outputs[f"{plane}_blocks"], reference[f"{plane}_blocks"], rtol=1e-4,
                               atol=1e-4 * scale)


def test_the_catalogue_is_unchanged(outputs, reference):
    assert len(outputs["catalogue_flux"]) == len(reference["catalogue_flux"])
    cosdec = np.cos(np.deg2rad(reference["catalogue_dec"]))
    np.testing.assert_allclose((outputs["catalogue_ra"] - reference["catalogue_ra"]) * cosdec * 3600, 0, atol=0.01)
    np.testing.assert_allclose((outputs["catalogue_dec"] - reference["catalogue_dec"]) * 3600, 0, atol=0.01)
    for column in ("flux", "flux_err"):
        np.testing.assert_allclose(outputs[f"catalogue_{column}"], reference[f"catalogue_{column}"], rtol=1e-3)
