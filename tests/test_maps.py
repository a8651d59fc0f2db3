import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from galaxysr.errors import OutputExistsError
from galaxysr.instruments import BANDS
from galaxysr.maps import (Field, Map, MapError, cutout, read_field, read_map, reproject_map,
                           tan_wcs, write_field, write_map)
from galaxysr.simulate import render_sources


def _map(shape=(50, 60), band="spire_250", noise=True):
    rng = np.random.default_rng(1)
    wcs = tan_wcs(SkyCoord(34.5 * u.deg, -5.1 * u.deg), BANDS[band].pixel, shape)
    data = rng.normal(size=shape).astype(np.float32)
    return Map(data, wcs, BANDS[band], u.mJy / u.beam,
               noise=np.full(shape, 0.5, np.float32) if noise else None)


def test_fits_round_trip_keeps_data_wcs_unit_and_noise(tmp_path):
    m = _map()
    write_map(m, tmp_path / "m.fits")
    back = read_map(tmp_path / "m.fits")
    assert back.band.name == "spire_250" and back.unit == u.mJy / u.beam
    np.testing.assert_array_equal(back.data, m.data)
    np.testing.assert_array_equal(back.noise, m.noise)
    pixels = np.array([[0, 0], [59, 49], [12.3, 40.7]])
    before = m.wcs.pixel_to_world(pixels[:, 0], pixels[:, 1])
    after = back.wcs.pixel_to_world(pixels[:, 0], pixels[:, 1])
    assert np.all(before.separation(after) < 1e-6 * u.arcsec)
    header = fits.getheader(tmp_path / "m.fits")
    assert np.isclose(header["BMAJ"] * 3600, 18.1)


def test_refuses_to_overwrite(tmp_path):
    write_map(_map(), tmp_path / "m.fits")
    with pytest.raises(OutputExistsError, match=r"already exists.*\(overwrite=True\)"):
        write_map(_map(), tmp_path / "m.fits")
    write_map(_map(), tmp_path / "m.fits", overwrite=True)


def test_unit_conversions_go_through_the_beam():
    m = _map(noise=False)
    jy = m.to("Jy/beam")
    np.testing.assert_allclose(jy.data, m.data / 1000, rtol=1e-6)
    mjysr = m.to("MJy/sr")
    # 1 mJy/beam over the SPIRE 250 beam (469.35 arcsec²) in MJy/sr:
    factor = 1e-3 * 1e-6 / (469.35 * u.arcsec**2).to_value(u.sr)
    np.testing.assert_allclose(mjysr.data, m.data * factor, rtol=1e-6)
    np.testing.assert_allclose(mjysr.to("mJy/beam").data, m.data, rtol=1e-5)


def test_hermes_smap_layout_in_jy_per_beam(tmp_path):
    m = _map(noise=False)
    header = m.wcs.to_header()
    header["BUNIT"] = "Jy/beam"
    primary = fits.PrimaryHDU()
    primary.header["WAVELN"] = 250
    hdul = fits.HDUList([primary, fits.ImageHDU(m.data / 1000, header, name="image"),
                         fits.ImageHDU(np.full(m.shape, 0.002, np.float32), header, name="error"),
                         fits.ImageHDU(np.ones(m.shape), header, name="exposure")])
    hdul.writeto(tmp_path / "smap_PSW.fits")
    back = read_map(tmp_path / "smap_PSW.fits", band="spire_250").to("mJy/beam")
    np.testing.assert_allclose(back.data, m.data, rtol=1e-5)
    np.testing.assert_allclose(back.noise, 2.0, rtol=1e-5)


def test_degenerate_cube_is_squeezed(write_fits):
    path = write_fits(shape=(1, 32, 32), extra={"WAVELNTH": 250})
    assert read_map(path).shape == (32, 32)


@pytest.mark.parametrize("case, match", [
    ("cube", "cube with 3 planes"),
    ("nowcs", "no celestial WCS"),
    ("nobunit", "no BUNIT"),
    ("badunit", "not a brightness unit"),
    ("allnan", "every pixel is NaN"),
    ("wrongband", "header says spire_350"),
    ("wrongpixels", "native spire_350 pixels"),
    ("nolambda", "does not say which band"),
])
def test_bad_input_names_file_and_problem(write_fits, case, match):
    kwargs, band = {}, "spire_250"
    if case == "cube":
        kwargs = dict(shape=(3, 32, 32))
    elif case == "nowcs":
        kwargs = dict(wcs=False)
    elif case == "nobunit":
        kwargs = dict(bunit=None)
    elif case == "badunit":
        kwargs = dict(bunit="pW")
    elif case == "allnan":
        kwargs = dict(data=np.full((16, 16), np.nan, np.float32), shape=(16, 16))
    elif case == "wrongband":
        kwargs = dict(extra={"WAVELNTH": 350})
    elif case == "wrongpixels":
        kwargs = dict(pixel=8.33)
    elif case == "nolambda":
        band = None
    path = write_fits(name=f"{case}.fits", **kwargs)
    with pytest.raises(MapError, match=match) as info:
        read_map(path, band=band)
    assert f"{case}.fits" in str(info.value)


def test_non_celestial_wcs_is_refused(tmp_path):
    header = fits.Header({"CTYPE1": "FREQ", "CTYPE2": "TIME", "CRVAL1": 1, "CRVAL2": 1,
                          "CDELT1": 1, "CDELT2": 1, "CRPIX1": 1, "CRPIX2": 1, "BUNIT": "Jy/beam"})
    fits.PrimaryHDU(np.ones((8, 8), np.float32), header).writeto(tmp_path / "spec.fits")
    with pytest.raises(MapError, match="no celestial WCS"):
        read_map(tmp_path / "spec.fits", band="spire_250")


def test_missing_bunit_with_default_warns(write_fits):
    path = write_fits(bunit=None, extra={"WAVELNTH": 250})
    with pytest.warns(UserWarning, match="assuming"):
        m = read_map(path, default_unit="Jy/beam")
    assert m.unit == u.Jy / u.beam


def test_reprojection_keeps_a_point_source_peak_and_position():
    band = BANDS["spire_250"]
    shape = (80, 80)
    wcs = tan_wcs(SkyCoord(10 * u.deg, 20 * u.deg), band.pixel, shape)
    image = render_sources(np.array([40.3]), np.array([38.6]), np.array([50.0]), shape,
                           band.sigma_pixels())
    m = Map(image.astype(np.float32), wcs, band)
    fine = tan_wcs(SkyCoord(10 * u.deg, 20 * u.deg), 2 * u.arcsec, (240, 240))
    out = reproject_map(m, fine, (240, 240))
    from astropy.modeling import fitting, models

    px, py = fine.world_to_pixel(wcs.pixel_to_world(40.3, 38.6))
    yy, xx = np.mgrid[:240, :240]
    fit = fitting.LevMarLSQFitter()(models.Gaussian2D(40, 120, 117, 4, 4), xx, yy, out.data)
    assert abs(fit.x_mean.value - px) < 0.25 and abs(fit.y_mean.value - py) < 0.25  # < 0.5"
    assert fit.amplitude.value == pytest.approx(50.0, rel=0.03)
    assert np.isnan(reproject_map(m, tan_wcs(SkyCoord(12 * u.deg, 20 * u.deg), 2 * u.arcsec,
                                                 (10, 10)), (10, 10)).data).all()


def test_cutout_is_centred_and_pads_with_nan():
    m = _map()
    centre = m.wcs.pixel_to_world(2, 2)
    cut = cutout(m, centre, (10, 10))
    assert cut.shape == (10, 10)
    assert np.isnan(cut.data).any() and np.isfinite(cut.data).any()


def test_field_round_trip(tmp_path):
    from astropy.table import Table

    m = _map(band="scuba2_450")
    truth = Table({"ra": [34.5] * u.deg, "dec": [-5.1] * u.deg, "flux_scuba2_450": [3.0] * u.mJy})
    write_field(Field({"scuba2_450": m}, truth), tmp_path / "f")
    assert (tmp_path / "f" / "scuba2_450_rms.fits").exists()
    back = read_field(tmp_path / "f")
    np.testing.assert_allclose(back["scuba2_450"].noise, 0.5)
    assert back.truth["flux_scuba2_450"][0] == 3.0
    with pytest.raises(MapError, match="no spire_250 map"):
        back["spire_250"]


@pytest.mark.parametrize("centre", [(150.0, 2.0), (0.01, -30.0), (45.0, 89.9)],
                         ids=["cosmos", "ra0", "pole"])
def test_resampling_agrees_with_reproject(centre):
    from reproject import reproject_interp

    band = BANDS["spire_250"]
    wcs_in = tan_wcs(SkyCoord(*centre, unit="deg"), band.pixel, (120, 120))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(5, 115, 40), rng.uniform(5, 115, 40)
    image = render_sources(x, y, rng.uniform(5, 50, 40), (120, 120), band.sigma_pixels())
    m = Map(image.astype(np.float32), wcs_in, band)
    # A rotated, offset 2" grid, partly off the input map.
    wcs_out = tan_wcs(SkyCoord(centre[0] + 0.02 / np.cos(np.deg2rad(min(abs(centre[1]), 89))), centre[1] + 0.01,
                               unit="deg"), 2 * u.arcsec, (300, 360))
    angle = np.deg2rad(20)
    wcs_out.wcs.pc = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    ours = reproject_map(m, wcs_out, (300, 360)).data
    theirs, footprint = reproject_interp((image, wcs_in), wcs_out, shape_out=(300, 360), order="bicubic")
    both = np.isfinite(ours) & (footprint > 0)
    assert both.sum() > 0.3 * ours.size
    # Equal away from the input's edge (where edge handling differs by design).
    from scipy.ndimage import binary_erosion

    interior = binary_erosion(both, iterations=12)
    np.testing.assert_allclose(ours[interior], theirs[interior], atol=1e-3 * image.max())
