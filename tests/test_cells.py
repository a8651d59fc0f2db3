"""The per-cell source encoding of the catalogue head (galaxysr.cells)."""

import numpy as np
import pytest
import tensorflow as tf
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy import units as u

from galaxysr.cells import augment_planes, cell_targets, cells_to_sources, source_planes
from galaxysr.maps import tan_wcs

BANDS = ("spire_250", "spire_350", "scuba2_450", "spire_500")
N, PIXEL, CELL = 64, 2.0, 2


def _grid():
    return tan_wcs(SkyCoord(150.0, 2.0, unit="deg"), PIXEL * u.arcsec, (N, N)), (N, N)


def _truth(wcs, pixels_yx, s450):
    """Sources at pixel coordinates (y, x) with S450 and SED-like other bands."""
    pixels_yx = np.asarray(pixels_yx, float)
    sky = wcs.pixel_to_world(pixels_yx[:, 1], pixels_yx[:, 0])
    s450 = np.asarray(s450, float)
    return Table({"ra": sky.ra.deg, "dec": sky.dec.deg, "flux_spire_250": 1.3 * s450,
                  "flux_spire_350": 1.1 * s450, "flux_scuba2_450": s450, "flux_spire_500": 0.6 * s450})


def _separated(rng, n):
    """n pixel positions at least 6 pixels (12″) apart, away from the edges."""
    out = []
    while len(out) < n:
        p = rng.uniform(3, N - 4, 2)
        if all(np.hypot(*(p - q)) >= 6 for q in out):
            out.append(p)
    return np.array(out)


def test_a_catalogue_encoded_into_cells_decodes_back_to_itself():
    wcs, shape = _grid()
    rng = np.random.default_rng(3)
    positions, s450 = _separated(rng, 12), rng.uniform(3, 80, 12)
    truth = _truth(wcs, positions, s450)
    cells = cell_targets(source_planes(truth, wcs, shape, BANDS), CELL, BANDS)
    assert cells.shape == (N // CELL, N // CELL, 3 + len(BANDS)) and cells[..., 0].sum() == 12
    back = cells_to_sources(cells, wcs, CELL, BANDS)
    match = SkyCoord(truth["ra"], truth["dec"], unit="deg").match_to_catalog_sky(SkyCoord(back["ra"], back["dec"]))
    assert len(set(match[0])) == 12 and match[1].arcsec.max() < 0.1
    for band in BANDS:
        np.testing.assert_allclose(u.Quantity(back[f"flux_{band}"]).to_value(u.mJy)[match[0]], truth[f"flux_{band}"], rtol=0.01)


def test_two_sources_in_one_cell_are_one_blend_flux_summed_centre_flux_weighted():
    wcs, shape = _grid()
    truth = _truth(wcs, [(20.3, 30.1), (20.9, 30.8)], [30.0, 10.0])  # both in cell (10, 15)
    cells = cell_targets(source_planes(truth, wcs, shape, BANDS), CELL, BANDS)
    assert cells[..., 0].sum() == 1 and cells[10, 15, 0] == 1
    np.testing.assert_allclose(10 ** cells[10, 15, 3:], 40.0 * np.array([1.3, 1.1, 1.0, 0.6]), rtol=1e-9)
    centre = (np.array([20.3, 30.1]) * 30 + np.array([20.9, 30.8]) * 10) / 40  # flux-weighted, pixels
    np.testing.assert_allclose(cells[10, 15, 1:3] * CELL + np.array([10, 15]) * CELL + 0.5, centre, atol=1e-9)


def test_faint_blends_are_absent_and_carry_no_targets():
    wcs, shape = _grid()
    cells = cell_targets(source_planes(_truth(wcs, [(10, 10), (40, 40)], [1.5, 5.0]), wcs, shape, BANDS), CELL, BANDS)
    assert cells[..., 0].sum() == 1 and cells[5, 5, 0] == 0 and np.isnan(cells[5, 5, 3:]).all()


@pytest.mark.parametrize("k, flip", [(1, False), (2, False), (3, False), (0, True), (1, True), (3, True)])
def test_rotating_or_flipping_a_tile_and_its_truth_gives_the_same_catalogue_rotated(k, flip):
    """The planes turned as TileStream turns a tile (tf.image.rot90, then tf.reverse on x) decode to
    the truth turned the same way; and turning the planes equals encoding the turned truth."""
    wcs, shape = _grid()
    rng = np.random.default_rng(k + 10 * flip)
    positions, s450 = _separated(rng, 8), rng.uniform(3, 50, 8)
    planes = source_planes(_truth(wcs, positions, s450), wcs, shape, BANDS)
    turned = augment_planes(planes, k, flip)
    image = tf.image.rot90(tf.constant(planes[..., 2:]), k)  # the fluxes move as TileStream moves them
    image = tf.reverse(image, [1]) if flip else image
    np.testing.assert_array_equal(turned[..., 2:], image.numpy())
    y, x = positions[:, 0], positions[:, 1]
    for _ in range(k):
        y, x = N - 1 - x, y
    if flip:
        x = N - 1 - x
    expected = _truth(wcs, np.stack([y, x], axis=-1), s450)
    np.testing.assert_allclose(turned, source_planes(expected, wcs, shape, BANDS), atol=1e-6)
    back = cells_to_sources(cell_targets(turned, CELL, BANDS), wcs, CELL, BANDS)
    match = SkyCoord(expected["ra"], expected["dec"], unit="deg").match_to_catalog_sky(SkyCoord(back["ra"], back["dec"]))
    assert len(set(match[0])) == 8 and match[1].arcsec.max() < 0.1


def test_the_encoding_refuses_a_grid_that_is_not_whole_cells_or_a_missing_target_band():
    wcs, shape = _grid()
    truth = _truth(wcs, [(10, 10)], [5.0])
    with pytest.raises(ValueError, match="not a whole number of 3×3 cells"):
        cell_targets(source_planes(truth, wcs, shape, BANDS), 3, BANDS)
    with pytest.raises(ValueError, match="target band scuba2_450 must be one of"):
        source_planes(truth, wcs, shape, ("spire_250",))


def test_cells_without_data_do_not_hide_the_sources_of_the_cells_with_data():
    """A real map's cells are NaN off its coverage; the decoder must still find every source on it
    (a NaN in the neighbourhood sums once spread down whole columns and emptied the catalogue)."""
    from galaxysr.cells import CELL_CHANNELS, decode_cells

    raw = np.zeros((40, 40, CELL_CHANNELS), np.float32)
    raw[..., 0] = -10.0
    raw[..., 5:9] = 1.0
    raw[[10, 25, 30], [12, 20, 33], 0] = 6.0  # three sure sources
    raw[:2, :] = np.nan                          # rows without data (a scan's ragged edge)
    raw[:, :3] = np.nan
    wcs = tan_wcs(SkyCoord(150.0, 2.0, unit="deg"), 2 * u.arcsec, (80, 80))
    assert len(decode_cells(raw, wcs, 2.0, threshold=0.5)) == 3
