"""Input conventions: archive maps (extended-source MJy/sr, Planck zero level, NaN edges) are
brought to point-source mJy/beam with zero background, the same way in training and
prediction; what was done is recorded."""

from dataclasses import replace
from importlib.resources import files

import numpy as np
import pytest
from astropy import units as u

from galaxysr.conventions import condition, k_ptoe
from galaxysr.instruments import BANDS, SPIRE_BANDS
from galaxysr.maps import read_map
from galaxysr.simulate import SimulationConfig, simulate_field

A1689 = files("galaxysr") / "data" / "real" / "A1689_1342201247"


def _archive(band: str) -> str:
    tag = {"spire_250": "psw", "spire_350": "pmw", "spire_500": "plw"}[band]
    return str(next(p for p in A1689.iterdir() if f"hspire{tag}" in p.name))


def test_k_ptoe_is_the_spire_handbooks():
    # SPIRE Handbook: K_PtoE = 90.646, 51.181, 23.580 MJy/sr per Jy/beam (1/Ω_pip).
    got = [k_ptoe(BANDS[b]) for b in SPIRE_BANDS]
    np.testing.assert_allclose(got, [90.646, 51.181, 23.580], rtol=2e-5)


@pytest.fixture(scope="module")
def field():
    return simulate_field(SimulationConfig(area_deg2=0.1, seed=5), bands=SPIRE_BANDS)


def _with(m, added):
    return replace(m, data=(m.data + added).astype(np.float32))


@pytest.mark.parametrize("method", ["filter", "median"])
def test_a_constant_offset_leaves_the_conditioned_map_unchanged(field, method):
    m = field["spire_250"]
    base = condition(m, method).map.data
    shifted = condition(_with(m, 25.0), method)
    np.testing.assert_allclose(shifted.map.data, base, atol=1e-3)
    assert shifted.removed_mjy == pytest.approx(condition(m, method).removed_mjy + 25.0, abs=1e-3)


def test_the_filter_removes_a_gradient_that_the_median_leaves(field):
    m = field["spire_350"]
    ny, nx = m.shape
    gradient = 10.0 * (2 * np.arange(nx)[None, :] / (nx - 1) - 1) * np.ones((ny, 1))
    for method, limit in (("filter", 0.05), ("median", None)):
        diff = condition(_with(m, gradient), method).map.data - condition(m, method).map.data
        if limit is None:
            assert np.abs(diff).max() > 5.0  # a constant cannot follow a ±10 mJy/beam gradient
        else:
            assert np.abs(diff).max() < limit


def test_archive_maps_are_extended_calibrated_and_carry_the_planck_zero_level():
    m = read_map(_archive("spire_250"))
    assert m.unit == u.MJy / u.sr
    c = condition(m, "filter")
    assert c.calibration == "extended" and c.k_ptoe == pytest.approx(90.646, rel=1e-4)
    # META_7 of this scan: 2.28 MJy/sr offset ≈ 25 mJy/beam; the filter takes it (and the field's
    # own mean) out: the map is left with a median near zero.
    assert c.removed_mjy == pytest.approx(2.28 / 90.646 * 1e3, abs=6.0)
    data = c.map.data[np.isfinite(c.map.data)]
    assert abs(np.median(data)) < 1.0
    header = c.header()
    assert header["CAL250"][0] == "extended" and "BKG250" in header
    none = condition(m, "none")
    assert none.background is None and np.nanmedian(none.map.data) > 15.0  # switched off: the pedestal stays
