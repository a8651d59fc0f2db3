"""The sky-model output: a non-negative sky drawn through the fixed 7.9″ beam, its sharpness
term, its FITS extension and the catalogue drawn from it."""

import numpy as np
import pytest
import tensorflow as tf
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.modeling import fitting, models
from astropy.table import Table

from galaxysr.catalogue import extract_sources, sky_components
from galaxysr.instruments import BANDS, FWHM_PER_SIGMA
from galaxysr.losses import SkyModelLoss
from galaxysr.maps import Map, read_map, tan_wcs, write_map
from galaxysr.conventions import InputConventions
from galaxysr.model import ModelConfig, galaxysr_layers
from galaxysr.simulate import render_catalogue

CONFIG = ModelConfig()
F = CONFIG.sky_oversample
PIXEL = InputConventions().pixel_arcsec
BEAM = BANDS["scuba2_450"]
SIGMA_SKY = BEAM.sigma_pixels(InputConventions().sky_pixel_arcsec(F) * u.arcsec)


def _render(sky):
    """The model's fixed beam layer applied to a (fH, fW) sky in mJy per sky pixel."""
    return galaxysr_layers().BeamRender(SIGMA_SKY, F)(sky[None, :, :, None].astype("float32")).numpy()[0, ..., 0]


def test_a_point_source_in_the_sky_model_renders_to_the_beam_with_peak_equal_to_its_flux():
    sky = np.zeros((64 * F, 64 * F))
    sky[61, 70] = 37.0  # one sky pixel: a point source of 37 mJy at sky pixel (70, 61)
    image = _render(sky)
    yy, xx = np.mgrid[:64, :64]
    x0, y0 = (70 - (F - 1) / 2) / F, (61 - (F - 1) / 2) / F  # its position on the map grid
    fit = fitting.LevMarLSQFitter()(models.Gaussian2D(30, x0 + 0.3, y0 - 0.2, 1.5, 1.5), xx, yy, image)
    fwhm = FWHM_PER_SIGMA * np.sqrt(fit.x_stddev.value * fit.y_stddev.value) * PIXEL
    assert fit.amplitude.value == pytest.approx(37.0, rel=0.01)
    assert fwhm == pytest.approx(BEAM.fwhm.to_value(u.arcsec), rel=0.01)
    assert (fit.x_mean.value, fit.y_mean.value) == pytest.approx((x0, y0), abs=0.01)
    # Flux is conserved: the map integrates to the source's flux over the beam area.
    assert image.sum() / BEAM.beam_area_pixels(PIXEL * u.arcsec) == pytest.approx(37.0, rel=0.01)


@pytest.mark.parametrize("period_sky_px", [2, 4])
def test_a_checkerboard_in_the_sky_model_does_not_reach_the_map(period_sky_px):
    n = 64 * F
    yy, xx = np.mgrid[:n, :n]
    pattern = np.where(((xx // (period_sky_px // 2)) + (yy // (period_sky_px // 2))) % 2 == 0, 1.0, -1.0)
    amplitude, level = 10.0, 20.0
    image = _render(level + amplitude * pattern)
    flat = _render(np.full((n, n), level))
    inner = (slice(12, -12), slice(12, -12))  # away from the tile edges
    assert np.max(np.abs(image - flat)[inner]) < 1e-4 * amplitude


def _narrow_truth(sources, shape, fwhm_arcsec=3.0):
    """The truth drawn through the narrow kernel at the map's pixel centres (mJy)."""
    wcs = tan_wcs(SkyCoord(150 * u.deg, 2 * u.deg), PIXEL * u.arcsec, shape)
    fine = tan_wcs(SkyCoord(150 * u.deg, 2 * u.deg), PIXEL / F * u.arcsec, (shape[0] * F, shape[1] * F))
    ra, dec = fine.pixel_to_world_values(*(np.array(v, float) for v in zip(*[(x, y) for x, y, _ in sources])))
    table = Table({"ra": ra * u.deg, "dec": dec * u.deg, "flux_scuba2_450": [f for *_, f in sources] * u.mJy})
    return render_catalogue(table, BEAM, wcs, shape, fwhm=fwhm_arcsec * u.arcsec)


def _packed(sky):
    return tf.nn.space_to_depth(tf.constant(sky[None, :, :, None], tf.float32), F)


def test_sky_term_is_zero_for_the_true_sky_and_grows_as_the_sky_spreads():
    shape = (32, 32)
    sources = [(20, 30, 25.0), (41, 12, 6.0)]  # sky-grid pixels and mJy
    truth = tf.constant(_narrow_truth(sources, shape)[None, :, :, None], tf.float32)
    sharp = np.zeros((shape[0] * F, shape[1] * F))
    for x, y, f in sources:
        sharp[y, x] = f
    from scipy.ndimage import gaussian_filter

    loss = SkyModelLoss(PIXEL, F, 3.0, 10.0)
    values = [float(loss(truth, _packed(gaussian_filter(sharp, s) if s else sharp))) for s in (0, 1.0, 2.0, 3.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert values[1] < values[2] < values[3] and values[1] > 1e-4
    # Its gradient reaches the sky model.
    sky = tf.Variable(_packed(gaussian_filter(sharp, 2.0)))
    with tf.GradientTape() as tape:
        value = loss(truth, sky)
    assert np.abs(tape.gradient(value, sky).numpy()).max() > 0


def test_sky_term_keeps_the_flux_of_a_source_whose_position_is_in_doubt():
    """The sky model that minimises the term over two equally likely positions holds the
    whole flux (squared error below the knee), not nothing (as an L1 error would)."""
    shape = (32, 32)
    truths = [_narrow_truth([(31, 31, 6.0)], shape), _narrow_truth([(35, 31, 6.0)], shape)]
    loss = SkyModelLoss(PIXEL, F, 3.0, 10.0)

    def expected(scale):
        sky = np.zeros((shape[0] * F, shape[1] * F))
        sky[31, 31] = sky[31, 35] = 3.0 * scale  # half the flux at each position
        return np.mean([float(loss(tf.constant(t[None, :, :, None], tf.float32), _packed(sky))) for t in truths])

    scales = np.linspace(0.0, 1.6, 17)
    assert scales[np.argmin([expected(s) for s in scales])] == pytest.approx(1.0, abs=0.1)


def test_the_sky_model_extension_round_trips_with_its_wcs(tmp_path):
    wcs = tan_wcs(SkyCoord(150.1 * u.deg, 2.2 * u.deg), PIXEL * u.arcsec, (20, 30))
    sky = np.random.default_rng(0).random((40, 60)).astype(np.float32)
    m = Map(np.zeros((20, 30), np.float32), wcs, BEAM, sky_model=sky, sky_oversample=2)
    back = read_map(write_map(m, tmp_path / "m.fits"))
    np.testing.assert_array_equal(back.sky_model, sky)
    assert back.sky_oversample == 2
    # Sky pixel (2i + ½, 2j + ½) is the centre of map pixel (i, j).
    here = back.wcs.pixel_to_world(7, 11)
    there = back.sky_wcs.pixel_to_world(2 * 7 + 0.5, 2 * 11 + 0.5)
    assert here.separation(there).arcsec < 1e-6
    from astropy.io import fits

    assert fits.getheader(tmp_path / "m.fits", "SKYMODEL")["BUNIT"] == "mJy pix-1"


def test_sky_components_group_pieces_of_one_source_and_keep_neighbours_apart():
    sky = np.zeros((80, 80))
    sky[30, 30], sky[30, 31], sky[31, 30] = 6.0, 3.0, 1.0   # one source split over three sky pixels
    sky[30, 33] = 2.0                                      # a piece 3″ away: the same source
    sky[30, 52] = 8.0                                      # a neighbour 21″ away
    x, y, flux, n = sky_components(sky, group_px=4.0, radius_px=4.0)
    order = np.argsort(x)
    x, y, flux, n = x[order], y[order], flux[order], n[order]
    assert flux == pytest.approx([12.0, 8.0])
    assert n.tolist() == [2, 1]
    assert x[0] == pytest.approx((6 * 30 + 3 * 31 + 1 * 30 + 2 * 33) / 12)
    assert y[0] == pytest.approx((6 * 30 + 3 * 30 + 1 * 31 + 2 * 30) / 12)


def test_catalogue_from_the_sky_model_measures_flux_and_position():
    wcs = tan_wcs(SkyCoord(150 * u.deg, 2 * u.deg), PIXEL * u.arcsec, (64, 64))
    sky = np.zeros((128, 128))
    sky[40, 50], sky[40, 51] = 15.0, 5.0     # 20 mJy near map pixel (25.25, 19.75)
    sky[90, 100] = 9.0
    image = _render(sky)
    m = Map(image.astype(np.float32), wcs, BEAM, noise=np.full(image.shape, 0.5, np.float32), sky_model=sky,
            sky_oversample=2)
    table = extract_sources(m, snr=4, min_flux_mjy=2.0, method="sky")
    assert table.meta["method"] == "sky" and len(table) == 2
    assert table["flux"][0] == pytest.approx(20.0, rel=1e-6) and table["flux"][1] == pytest.approx(9.0, rel=1e-6)
    x_true = ((15 * 50 + 5 * 51) / 20 - 0.5) / 2
    assert (table["x"][0], table["y"][0]) == pytest.approx((x_true, (40 - 0.5) / 2), abs=1e-6)
    psf = extract_sources(m, snr=4, min_flux_mjy=2.0, method="psf")
    assert psf["flux"][0] == pytest.approx(20.0, rel=0.03)  # the map agrees: it is the sky drawn at 7.9″
    with pytest.raises(ValueError, match="no sky model"):
        extract_sources(Map(image.astype(np.float32), wcs, BEAM), method="sky")


def test_the_sky_model_head_has_no_ceiling():
    """0.2's sigmoid saturated at 500 mJy/beam; the sky-model path (activation, beam,
    scaling and its inverse at prediction) carries a 5 Jy source through unchanged."""
    from galaxysr.model import FluxScaling, galaxysr_layers

    scaling = FluxScaling()
    custom = galaxysr_layers()
    activation = custom.SkyActivation(scaling.softening_mjy, scaling.norm)
    assert float(activation(np.array([[40.0]], np.float32))[0, 0]) > 1e6  # mJy per sky pixel
    sky = np.zeros((128, 128), np.float32)
    sky[64, 64] = 5000.0
    drawn = _render(sky)
    assert np.allclose(drawn, 100 * _render(sky / 100), rtol=1e-4, atol=1e-3)  # linear: 5 Jy as 50 mJy
    assert drawn.max() > 0.97 * 5000.0  # a 1″ sky pixel sits ≤ 0.7″ from a 2″ map-pixel centre
    y = custom.AsinhScale(scaling.softening_mjy, scaling.ceiling_mjy)(drawn[None, ..., None])
    assert float(np.max(scaling.inverse(np.asarray(y)))) == pytest.approx(drawn.max(), rel=1e-3)
