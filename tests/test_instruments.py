from pathlib import Path

import numpy as np
from astropy import units as u

from galaxysr.instruments import BANDS, band_from_wavelength, get_band


def test_table_matches_the_published_beams_and_pixels():
    expected = {"spire_250": (18.1, 6.0), "spire_350": (24.9, 8.33), "spire_500": (36.6, 12.0),
                "scuba2_450": (7.9, 1.0)}
    for name, (fwhm, pixel) in expected.items():
        assert BANDS[name].fwhm == fwhm * u.arcsec
        assert BANDS[name].pixel == pixel * u.arcsec


def test_gaussian_beam_area_is_2_pi_sigma_squared():
    band = get_band("spire_250")
    sigma = 18.1 / (2 * np.sqrt(2 * np.log(2)))
    assert np.isclose(band.beam_area.to_value(u.arcsec**2), 2 * np.pi * sigma**2)
    assert np.isclose(band.beam_area_pixels(2 * u.arcsec), 2 * np.pi * sigma**2 / 4)
    kernel = band.kernel(6 * u.arcsec)
    assert np.isclose(kernel.array.sum(), 1.0, atol=1e-3)


def test_band_lookup_by_wavelength():
    assert band_from_wavelength(0.00025 * u.m).name == "spire_250"
    assert band_from_wavelength(450 * u.um).name == "scuba2_450"


def test_no_instrument_number_outside_the_table():
    # No numeric literal equal to a beam FWHM, native pixel scale or confusion noise may
    # appear in the package outside instruments.py (prose in docstrings is fine).
    import ast

    facts = {18.1, 24.9, 36.6, 7.9, 8.33, 5.8, 6.3, 6.8, 469.35, 831.27, 1804.31}
    package = Path(__file__).parents[1] / "galaxysr"
    offenders = []
    paths = sorted(package.rglob("*.py"))          # every module, maps/ and evaluate/ included
    assert any(p.parent.name == "evaluate" for p in paths) and any(p.parent.name == "maps" for p in paths)
    for path in paths:
        if path.name == "instruments.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value in facts:
                offenders.append(f"{path.relative_to(package)}:{node.lineno}: {node.value}")
    assert not offenders, offenders
