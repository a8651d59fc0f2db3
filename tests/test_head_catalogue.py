"""The catalogue head's catalogue through prediction (issue 26): cells carried by the tiling engine
and the FITS file, decoded by ``extract_sources(method="head")`` with forced fluxes and p_real."""

from dataclasses import replace

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galaxysr.catalogue import HEAD_COLUMNS, extract_sources
from galaxysr.cells import CELL_CHANNELS, CELL_LAYOUT, presence_calibration, presence_cards
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.instruments import FWHM_PER_SIGMA, SPIRE_BANDS, get_band
from galaxysr.maps import MJY_PER_BEAM, Map, read_map, write_map
from galaxysr.model import ModelConfig, build_generator
from galaxysr.simulate import SimulationConfig, simulate_field
from galaxysr.training import TrainConfig, export_artifact
from test_catalogue_head import PIXEL, _perfect_cells, _planes

NOISE = 0.3  # mJy/beam


def _drawn(truth, wcs, shape, seed: int = 0) -> np.ndarray:
    """The truth's S450 drawn through the 7.9″ beam (peak = flux) on ``wcs``, plus white noise."""
    sigma = get_band("scuba2_450").fwhm.to_value(u.arcsec) / FWHM_PER_SIGMA / PIXEL
    x, y = wcs.world_to_pixel(SkyCoord(truth["ra"], truth["dec"], unit="deg"))
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    sky = sum(f * np.exp(-0.5 * ((xx - a) ** 2 + (yy - b) ** 2) / sigma**2)
              for a, b, f in zip(x, y, truth["flux_scuba2_450"]))
    return (sky + np.random.default_rng(seed).normal(0, NOISE, shape)).astype(np.float32)


def _head_map(seed: int, presence: dict | None = None) -> tuple:
    planes, truth, wcs = _planes(seed)
    shape = planes.shape[:2]
    m = Map(_drawn(truth, wcs, shape, seed), wcs, get_band("scuba2_450"), MJY_PER_BEAM,
            noise=np.full(shape, NOISE, np.float32), cells=_perfect_cells(planes), cell_pixels=2,
            meta=presence_cards(presence))
    return m, truth


def _matched(cat, truth):
    idx, sep, _ = SkyCoord(truth["ra"], truth["dec"], unit="deg").match_to_catalog_sky(
        SkyCoord(cat["ra"], cat["dec"]))
    return idx, sep.arcsec


def test_the_head_catalogue_finds_every_source_at_its_place_with_forced_fluxes_and_its_posteriors():
    m, truth = _head_map(4)
    cat = extract_sources(m, method="head")
    assert len(cat) == len(truth)
    idx, sep = _matched(cat, truth)
    assert len(set(idx)) == len(truth) and sep.max() < 0.1
    rows = cat[idx]
    s450 = np.asarray(truth["flux_scuba2_450"])
    flux, err = rows["flux"].quantity.to_value(u.mJy), rows["flux_err"].quantity.to_value(u.mJy)
    assert np.all(np.abs(flux - s450) < 4 * err) and np.all(err < 3 * NOISE)  # the fit at the head's place
    # The head's own posteriors: its S450 is the deboosted flux, the SPIRE bands have their own columns.
    np.testing.assert_allclose(rows["flux_deboosted"].quantity.to_value(u.mJy), s450, rtol=0.01)
    assert np.all(rows["flux_deboosted_lo"] < rows["flux_deboosted"]) and np.all(rows["flux_deboosted_hi"] > rows["flux_deboosted"])
    for band in ("spire_250", "spire_350", "spire_500"):
        np.testing.assert_allclose(rows[f"flux_{band}"].quantity.to_value(u.mJy), truth[f"flux_{band}"], rtol=0.01)
        assert rows[f"flux_{band}_err"].unit == u.mJy
    assert set(HEAD_COLUMNS) <= set(cat.colnames) and cat["pos_err"].unit == u.arcsec
    assert "uncalibrated" in cat.meta["p_real"]
    np.testing.assert_allclose(cat["p_real"], cat["p"])  # no calibration: p_real is the head's p
    assert np.all(np.diff(cat["flux"]) <= 0)  # brightest first, as every galaxysr catalogue


def test_p_real_is_the_models_calibration_and_p_min_selects_on_it():
    score = np.r_[np.linspace(0.05, 1, 200), np.linspace(0.05, 1, 200)]
    real = np.r_[np.ones(200, bool), np.linspace(0.05, 1, 200) < 0.6]  # high scores: more often real
    record = presence_calibration(score, real)
    assert np.all(np.diff(record["p_real"]) >= 0) and record["n"] == 400
    m, truth = _head_map(5, record)
    cat = extract_sources(m, method="head")
    # Calibrated from the peak cell's p, which for a sure cell is the neighbourhood's p to 1e-3.
    np.testing.assert_allclose(cat["p_real"], np.interp(np.asarray(cat["p"]), record["nodes"], record["p_real"]),
                               atol=1e-3)
    assert "calibrated" in cat.meta["p_real"] and "uncalibrated" not in cat.meta["p_real"]
    top = float(np.max(cat["p_real"]))
    none = extract_sources(m, method="head", p_min=top + 0.01)
    assert len(none) == 0 and set(HEAD_COLUMNS) <= set(none.colnames)
    with pytest.raises(ValueError, match="at least 20 detections"):
        presence_calibration(score[:10], real[:10])


def test_a_map_without_cells_refuses_the_head_method_and_says_what_to_do():
    m, _ = _head_map(6)
    with pytest.raises(ValueError, match="--catalogue-head"):
        extract_sources(replace(m, cells=None), method="head")
    with pytest.raises(Exception, match="cells shape"):
        replace(m, cells=m.cells[:-1])


def test_cells_and_their_grid_round_trip_through_fits(tmp_path):
    m, truth = _head_map(7, presence_calibration(np.linspace(0, 1, 40), np.arange(40) % 3 > 0))
    m = replace(m, data=m.data[:-1, :-1], noise=m.noise[:-1, :-1])  # an odd map: its last cells are half full
    m.wcs.pixel_shape = m.data.shape[::-1]
    write_map(m, tmp_path / "m.fits")
    back = read_map(tmp_path / "m.fits")
    np.testing.assert_array_equal(back.cells, m.cells)
    assert back.cell_pixels == 2
    header = fits.getheader(tmp_path / "m.fits", "CELLS")
    assert [header[f"PLANE{k}"] for k in range(1, CELL_CHANNELS + 1)] == list(CELL_LAYOUT)
    # Cell (i, j) is centred on map pixels 2i + 0.5, 2j + 0.5.
    cell_grid = WCS(header).celestial
    for i, j in ((0, 0), (5, 11)):
        a = cell_grid.pixel_to_world(j, i)
        b = m.wcs.pixel_to_world(2 * j + 0.5, 2 * i + 0.5)
        assert a.separation(b).arcsec < 1e-6
    assert len(extract_sources(back, method="head")) == len(extract_sources(m, method="head"))


def _copy(folder, to):
    import shutil

    shutil.copytree(folder, to)
    return to


@pytest.fixture(scope="module")
def head_artifact(tmp_path_factory):
    config = TrainConfig(model=ModelConfig(tile=64, depth=4, base_filters=4, catalogue_head=True))
    return load_artifact(export_artifact(build_generator(config.model), config,
                                         tmp_path_factory.mktemp("head") / "model"))


def test_the_engine_carries_every_tiles_cells_onto_one_grid(head_artifact, tmp_path):
    """A stand-in network whose cells read its 250 µm input at each cell's first pixel, as a real
    head's cells (one value per 2 × 2 pixels) do: the blended cells must equal the map's input there
    over the whole map — tiles that started off a cell border would disagree and blur them."""
    config = head_artifact.config
    cells = config.output_channels["cells"]
    width = max(c.stop for c in config.output_channels.values())

    def network(x):
        out = np.zeros((*x.shape[:3], width), np.float32)
        out[..., 0] = x[..., 0]
        first = x[:, ::2, ::2, 0].repeat(2, 1).repeat(2, 2)
        out[..., cells.start] = first
        return out

    artifact = replace(head_artifact)
    artifact.__dict__["predict_fn"] = network
    field = simulate_field(SimulationConfig(area_deg2=0.0041, seed=12), bands=SPIRE_BANDS)
    maps = {b: field[b] for b in SPIRE_BANDS}
    result = super_resolve_maps(maps, artifact, progress=False, draw=False)
    # An odd side: the last tile flush with the map's end would start off a cell border.
    assert result.shape[0] % 2 and result.shape[0] > config.tile and result.cells.shape == (*(-(-n // 2) for n in result.shape),
                                                                       CELL_CHANNELS)
    expected = config.scaling.forward(result.data[::2, ::2])
    ok = np.isfinite(expected)
    np.testing.assert_allclose(result.cells[..., 0][ok], expected[ok], rtol=1e-4, atol=1e-5)
    streamed = super_resolve_maps(maps, artifact, progress=False, out_path=tmp_path / "s.fits", draw=False)
    np.testing.assert_array_equal(read_map(streamed).cells, result.cells)
    with pytest.raises(ValueError, match="multiple of 2"):
        super_resolve_maps(maps, artifact, progress=False, overlap=17, draw=False)


def test_the_presence_calibration_learns_how_often_a_score_is_real_on_fields_with_truth():
    """measure_presence on maps whose head states every true source surely and adds unsure false
    ones: p_real is ≈ 1 at the sure score and ≈ 0 at the unsure one. The network's positions (its
    head's and its map's alike) and its log-fluxes scatter 3× more than its σ's say: the
    calibration's σ scales read ≈ 3."""
    from galaxysr.evaluate import EvalConfig, measure_presence

    maps = []
    for seed in range(21, 31):
        m, truth = _head_map(seed)
        cells = m.cells.copy()
        held = cells[..., 0] > 0
        jitter = np.random.default_rng(seed + 100)
        cells[..., 3:5], cells[..., 9:13] = np.log(0.1), np.log(0.02)  # stated: 0.1 cells, 0.02 dex
        cells[held, 1:3] += jitter.normal(0, 0.3, (held.sum(), 2))      # true scatter: 0.3 cells
        cells[held, 5:9] += jitter.normal(0, 0.06, (held.sum(), 4))     # and 0.06 dex
        # The map holds the sources where the network places them (its positions refine on it).
        iy, ix = np.nonzero(held)
        ra, dec = m.wcs.pixel_to_world_values(2 * ix + 0.5 + 2 * cells[iy, ix, 2], 2 * iy + 0.5 + 2 * cells[iy, ix, 1])
        placed = Table({"ra": ra, "dec": dec, "flux_scuba2_450": 10 ** m.cells[iy, ix, 7]})
        m = replace(m, data=_drawn(placed, m.wcs, m.shape, seed))
        empty = np.argwhere(cells[..., 0] < 0)
        rng = np.random.default_rng(seed)
        for i, j in empty[rng.choice(len(empty), 12, replace=False)]:
            if (cells[max(i - 3, 0):i + 4, max(j - 3, 0):j + 4, 0] > 0).any():
                continue  # not beside a true source
            cells[i, j, 0], cells[i, j, 5:9] = 0.0, 0.5  # p = 0.5, 3 mJy: a false detection
        maps.append((replace(m, cells=cells), truth))
    record = measure_presence(maps, EvalConfig(edge_arcsec=0.0))
    assert record["score"] == "p_peak" and record["n"] > record["n_real"] >= 100
    p_real = dict(zip(record["nodes"], record["p_real"]))
    assert p_real[1.0] > 0.95 and p_real[0.5] < 0.1
    assert record["pos_err_scale"] == pytest.approx(3.0, rel=0.25)
    assert record["flux_sigma_scale"] == pytest.approx([3.0] * 4, rel=0.25)  # 120 pairs: ±0.45 (1σ)
    # The map of a model so calibrated quotes σ's three times wider.
    m, _ = _head_map(21)
    m.cells[..., 3:5], m.cells[..., 9:13] = np.log(0.1), np.log(0.02)
    plain = extract_sources(m, method="head")
    scaled = extract_sources(replace(m, meta=presence_cards(record)), method="head")
    np.testing.assert_allclose(scaled["pos_err"], plain["pos_err"] * record["pos_err_scale"], rtol=1e-6)
    assert np.all(scaled["flux_spire_250_err"] > 2 * plain["flux_spire_250_err"])


def test_predict_writes_the_head_catalogue_and_the_cells(head_artifact, field_files, tmp_path):
    from astropy.table import Table

    from galaxysr.cli import main

    folder, _ = field_files
    out, cat = tmp_path / "o.fits", tmp_path / "o.ecsv"
    assert main(["predict", str(folder / "cosmos_250.fits"), str(out), "--model", str(head_artifact.path),
                 "--catalogue", str(cat), "--catalogue-method", "head", "--p-min", "0", "--min-flux=-1e9",
                 "--no-progress"]) == 0
    assert fits.getheader(out, "CELLS")["CELLPIX"] == 2
    table = Table.read(cat)
    assert len(table) > 0 and set(HEAD_COLUMNS) <= set(table.colnames) and table.meta["method"] == "head"
    assert table.meta["p_min"] == 0 and np.all(np.isfinite(table["flux"]))
    assert "uncalibrated" in table.meta["p_real"]
    # A calibrated model's maps carry its presence calibration, and their catalogues apply it.
    from galaxysr.inference import record_calibration

    record = {"score": "p_peak", "nodes": [0.0, 1.0], "p_real": [0.25, 0.25], "n": 40, "n_real": 10}
    calibrated = record_calibration(load_artifact(_copy(head_artifact.path, tmp_path / "m")), presence=record)
    assert main(["predict", str(folder / "cosmos_250.fits"), str(tmp_path / "c.fits"), "--model",
                 str(calibrated.path), "--catalogue", str(tmp_path / "c.ecsv"), "--catalogue-method", "head",
                 "--p-min", "0", "--min-flux=-1e9", "--no-progress"]) == 0
    again = Table.read(tmp_path / "c.ecsv")
    assert "p_peak" in again.meta["p_real"] and np.allclose(again["p_real"], 0.25) and len(again) == len(table)


def test_a_sure_cell_is_drawn_as_the_beam_with_peak_equal_to_its_flux_and_the_mean_map_is_kept(tmp_path):
    from astropy.modeling import fitting, models

    from galaxysr.cells import source_planes
    from galaxysr.inference import draw_head_map
    from test_cells import _truth

    planes, _, wcs = _planes(3)
    truth = _truth(wcs, [(30.3, 33.7)], [20.0])
    planes = source_planes(truth, wcs, planes.shape[:2], ("spire_250", "spire_350", "scuba2_450", "spire_500"))
    cells = _perfect_cells(planes, confidence=30.0)  # p = 1
    shape = planes.shape[:2]
    sigma_wide = 10.0 / 2.3548 / PIXEL  # the per-pixel map draws it 10″ wide, peak 0.62 of the flux
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    wide = 20.0 * 0.624 * np.exp(-0.5 * ((xx - 33.7) ** 2 + (yy - 30.3) ** 2) / sigma_wide**2)
    m = Map(wide.astype(np.float32), wcs, get_band("scuba2_450"), MJY_PER_BEAM, noise=np.full(shape, NOISE, np.float32),
            cells=cells, cell_pixels=2)
    drawn = draw_head_map(m, 10.0 * u.arcsec)
    fit = fitting.LevMarLSQFitter()(models.Gaussian2D(20, 33.7, 30.3, 2, 2), xx, yy, drawn.data)
    fwhm = 2.3548 * np.sqrt(fit.x_stddev.value * fit.y_stddev.value) * PIXEL
    assert fwhm == pytest.approx(7.9, abs=0.05) and abs(fit.x_mean.value - 33.7) < 0.02
    # Its peak is the flux fitted on the per-pixel map at the head's place (a 10″ source fitted with
    # the 7.9″ beam reads its peak-weighted flux: what the model's flux curve corrects), times p_real = 1.
    from galaxysr.catalogue import forced_photometry

    forced, _ = forced_photometry(m, np.array([33.7]), np.array([30.3]))
    assert fit.amplitude.value == pytest.approx(forced[0], rel=0.01)
    np.testing.assert_array_equal(drawn.mean, m.data)
    write_map(drawn, tmp_path / "d.fits")
    back = read_map(tmp_path / "d.fits")
    np.testing.assert_array_equal(back.mean, m.data)
    assert back.mean_fwhm.to_value(u.arcsec) == pytest.approx(10.0)
    assert fits.getheader(tmp_path / "d.fits")["GSRDRAWN"] == 1
    # Catalogues are measured on the per-pixel map, drawn or not.
    a, b = extract_sources(back, method="head"), extract_sources(m, method="head")
    np.testing.assert_allclose(a["flux"], b["flux"], rtol=1e-5)
    np.testing.assert_allclose(extract_sources(back)["flux"], extract_sources(m)["flux"], rtol=1e-5)


def test_the_head_summary_reads_reliability_per_decile_and_positional_honesty():
    from astropy.table import Table

    from galaxysr.evaluate.report import head_table
    from galaxysr.evaluate.runs import head_summary

    rng = np.random.default_rng(4)
    p = rng.uniform(0, 1, 4000)
    real = rng.uniform(0, 1, 4000) < p  # calibrated by construction
    pos_err = np.full(4000, 1.0)
    offset = np.where(real, np.hypot(*rng.normal(0, 1.0, (2, 4000))), np.nan)  # honest: σ = pos_err per axis
    summary = head_summary([Table({"p_real": p[:2000], "real": real[:2000], "offset": offset[:2000],
                                   "pos_err": pos_err[:2000]}),
                            Table({"p_real": p[2000:], "real": real[2000:], "offset": offset[2000:],
                                   "pos_err": pos_err[2000:]})])
    assert len(summary["reliability"]) == 10 and summary["n_detections"] == 4000
    assert summary["max_abs_difference"] < 0.06
    assert summary["offset_over_pos_err_median"] == pytest.approx(1.18, abs=0.05)
    overconfident = head_summary([Table({"p_real": p, "real": rng.uniform(0, 1, 4000) < 0.5 * p,
                                         "offset": offset, "pos_err": 0.3 * pos_err})])
    assert overconfident["max_abs_difference"] > 0.3 and overconfident["offset_over_pos_err_median"] > 3
    table = head_table(summary)
    assert table.count("✓") >= 9 and "1.18" in table


def test_a_drawn_map_keeps_its_decoded_detections_and_decodes_again_under_another_calibration():
    """predict --catalogue reads the detections the map was drawn from (no second fit): the same
    catalogue as a fresh decode; a map given another presence calibration is decoded again."""
    from galaxysr.catalogue import head_sources
    from galaxysr.inference import draw_head_map
    from galaxysr.maps import cutout

    m, truth = _head_map(6)
    drawn = draw_head_map(m)
    assert drawn.decoded is not None and len(drawn.decoded) >= len(truth)
    kept = extract_sources(drawn, method="head", p_min=0.0)
    fresh = extract_sources(replace(drawn, decoded=None), method="head", p_min=0.0)
    for column in ("ra", "dec", "flux", "flux_err", "p_real", "flags"):
        np.testing.assert_array_equal(kept[column], fresh[column])
    score = np.r_[np.linspace(0.05, 1, 200), np.linspace(0.05, 1, 200)]
    record = presence_calibration(score, np.r_[np.ones(200, bool), np.linspace(0.05, 1, 200) < 0.6])
    recalibrated = replace(drawn, meta=drawn.meta | presence_cards(record))
    again = head_sources(recalibrated, p_min=0.0)
    assert again.meta["presence"] != drawn.decoded.meta["presence"]
    np.testing.assert_allclose(again["p_real"], np.interp(np.asarray(again["p"]), record["nodes"], record["p_real"]),
                               atol=1e-3)
    assert cutout(drawn, drawn.wcs.pixel_to_world(32, 32), 20 * u.arcsec).decoded is None

