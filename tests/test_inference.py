from dataclasses import replace

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.modeling import fitting, models
from astropy.table import Table

from galaxysr.cli import main
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.instruments import BANDS, SPIRE_BANDS
from galaxysr.maps import read_map
from galaxysr.model import ModelConfig, build_generator
from galaxysr.simulate import SimulationConfig, simulate_field
from galaxysr.training import TrainConfig, export_artifact


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    config = TrainConfig(model=ModelConfig(tile=64, depth=4, base_filters=4))
    model = build_generator(config.model)
    return load_artifact(export_artifact(model, config, tmp_path_factory.mktemp("art") / "model"))


def _run(args):
    return main(["predict", *map(str, args), "--no-progress"])


def test_prediction_keeps_wcs_units_and_provenance(tiny_artifact, field_files, tmp_path):
    folder, field = field_files
    out = tmp_path / "out.fits"
    assert _run([folder / "cosmos_250.fits", out, "--model", tiny_artifact.path]) == 0
    result = read_map(out)
    assert result.band.name == "scuba2_450" and result.unit == u.mJy / u.beam
    assert result.pixel_scale.to_value(u.arcsec) == pytest.approx(2.0)
    m250 = field["spire_250"]
    centre_in = m250.wcs.pixel_to_world((m250.shape[1] - 1) / 2, (m250.shape[0] - 1) / 2)
    centre_out = result.wcs.pixel_to_world((result.shape[1] - 1) / 2, (result.shape[0] - 1) / 2)
    assert centre_in.separation(centre_out) < 0.01 * u.arcsec
    header = fits.getheader(out)
    assert header["GSRHASH"] == tiny_artifact.sha256 and header["IN250"] == "cosmos_250.fits"
    assert header["BMAJ"] * 3600 == pytest.approx(BANDS["scuba2_450"].fwhm.to_value(u.arcsec))
    assert np.isfinite(result.data).mean() > 0.99
    assert not list(tmp_path.glob("*.part"))


def test_jy_per_beam_smap_input_gives_the_same_map(tiny_artifact, field_files, tmp_path):
    folder, field = field_files
    for band in SPIRE_BANDS:
        m = field[band]
        header = m.wcs.to_header()
        header["BUNIT"] = "Jy/beam"
        primary = fits.PrimaryHDU()
        primary.header["WAVELN"] = int(band[-3:])
        fits.HDUList([primary, fits.ImageHDU(m.data / 1000, header, name="image"),
                      fits.ImageHDU(m.noise / 1000, header, name="error")]).writeto(tmp_path / f"smap_{band[-3:]}.fits")
    a = super_resolve_maps({b: read_map(folder / f"cosmos_{b[-3:]}.fits", band=b) for b in SPIRE_BANDS},
                      tiny_artifact, progress=False)
    b = super_resolve_maps({b: read_map(tmp_path / f"smap_{b[-3:]}.fits", band=b) for b in SPIRE_BANDS},
                      tiny_artifact, progress=False)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-4)


def test_nan_holes_stay_nan_and_do_not_spread(tiny_artifact, field_files):
    folder, field = field_files
    maps = {b: field[b] for b in SPIRE_BANDS}
    m = maps["spire_250"]
    holed = m.data.copy()
    holed[30:40, 30:40] = np.nan
    maps["spire_250"] = replace(m, data=holed)
    out = super_resolve_maps(maps, tiny_artifact, progress=False)
    hole_centre = m.wcs.pixel_to_world(34.5, 34.5)
    x, y = (int(round(float(v))) for v in out.wcs.world_to_pixel(hole_centre))
    assert np.isnan(out.data[y, x])
    # Beyond the hole (5 native pixels = 30") plus one 250 µm beam, everything is finite.
    yy, xx = np.mgrid[: out.shape[0], : out.shape[1]]
    far = np.maximum(abs(xx - x), abs(yy - y)) * 2.0 > 30 + BANDS["spire_250"].fwhm.to_value(u.arcsec)
    assert np.isfinite(out.data[far]).all()


def test_map_smaller_than_a_tile_is_padded(tiny_artifact):
    field = simulate_field(SimulationConfig(area_deg2=0.0009, seed=3), bands=SPIRE_BANDS)  # 1.8′ < one tile
    out = super_resolve_maps({b: field[b] for b in SPIRE_BANDS}, tiny_artifact, progress=False)
    assert out.shape[0] < tiny_artifact.config.tile and np.isfinite(out.data).mean() > 0.95


@pytest.mark.parametrize("ra, dec", [(0.005, 1.0), (120.0, 89.8)], ids=["ra0", "pole"])
def test_maps_across_ra_zero_and_near_the_pole(tiny_artifact, ra, dec):
    field = simulate_field(SimulationConfig(area_deg2=0.005, seed=4, ra_deg=ra, dec_deg=dec), bands=SPIRE_BANDS)
    out = super_resolve_maps({b: field[b] for b in SPIRE_BANDS}, tiny_artifact, progress=False)
    assert np.isfinite(out.data).mean() > 0.95
    centre = out.wcs.pixel_to_world((out.shape[1] - 1) / 2, (out.shape[0] - 1) / 2)
    assert centre.separation(SkyCoord(ra * u.deg, dec * u.deg)) < 1 * u.arcsec


def test_bad_inputs_fail_clearly_and_write_nothing(tiny_artifact, field_files, tmp_path, capsys):
    folder, field = field_files
    out = tmp_path / "out.fits"
    model = ["--model", tiny_artifact.path]
    # A 350 µm map passed as the 250 µm map.
    assert _run([folder / "cosmos_350.fits", out, *model, "--spire350", folder / "cosmos_350.fits",
                 "--spire500", folder / "cosmos_500.fits"]) == 2
    assert "header says spire_350" in capsys.readouterr().err
    # Missing 500 µm file: the message names the file looked for.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    for band in ("250", "350"):
        (lonely / f"x_{band}.fits").write_bytes((folder / f"cosmos_{band}.fits").read_bytes())
    assert _run([lonely / "x_250.fits", out, *model]) == 2
    assert "x_500.fits" in capsys.readouterr().err
    # Unknown units and all-NaN maps.
    for name, change in (("units", lambda h, d: h.__setitem__("BUNIT", "counts")),
                         ("nan", lambda h, d: d.__setitem__(Ellipsis, np.nan))):
        bad = tmp_path / name
        bad.mkdir()
        for band in ("250", "350", "500"):
            with fits.open(folder / f"cosmos_{band}.fits") as hdul:
                header, data = hdul[0].header.copy(), hdul[0].data.copy()
            if band == "250":
                change(header, data)
            fits.PrimaryHDU(data, header).writeto(bad / f"y_{band}.fits")
        assert _run([bad / "y_250.fits", out, *model]) == 2
        assert ("BUNIT 'counts'" if name == "units" else "every pixel is NaN") in capsys.readouterr().err
    # No WCS.
    nowcs = tmp_path / "nowcs"
    nowcs.mkdir()
    for band in ("250", "350", "500"):
        fits.PrimaryHDU(np.ones((20, 20), np.float32), fits.Header({"BUNIT": "mJy/beam", "WAVELNTH": int(band)})
                        ).writeto(nowcs / f"z_{band}.fits")
    assert _run([nowcs / "z_250.fits", out, *model]) == 2
    assert "no celestial WCS" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    # An existing output is not replaced without --overwrite.
    out.write_text("precious")
    assert _run([folder / "cosmos_250.fits", out, *model]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "precious"
    assert _run([folder / "cosmos_250.fits", out, *model, "--overwrite"]) == 0


def test_a_model_needing_only_250_does_not_look_for_other_bands(field_files, tmp_path):
    folder, _ = field_files
    config = TrainConfig(model=ModelConfig(tile=64, depth=4, base_filters=4, input_bands=("spire_250",)))
    artifact = export_artifact(build_generator(config.model), config, tmp_path / "m250")
    lonely = tmp_path / "only250"
    lonely.mkdir()
    (lonely / "a_250.fits").write_bytes((folder / "cosmos_250.fits").read_bytes())
    assert _run([lonely / "a_250.fits", tmp_path / "o.fits", "--model", artifact / "model.keras"]) == 0


# --- with the shipped model -------------------------------------------------------------

def _with_injected_source(field, flux450, position):
    """SPIRE maps of ``field`` plus one galaxy of 450 µm flux ``flux450`` at ``position``."""
    from galaxysr.simulate import render_catalogue
    from galaxysr.sky import SkyModel, band_fluxes, dust_temperature

    z, log_l = np.array([2.0]), np.array([12.0])
    sky = SkyModel()
    fluxes = band_fluxes(log_l, z, dust_temperature(z, log_l, sky), sky)
    scale = flux450 / fluxes["scuba2_450"][0]
    truth = Table({"ra": [position.ra.deg] * u.deg, "dec": [position.dec.deg] * u.deg,
                   **{f"flux_{b}": [fluxes[b][0] * scale] * u.mJy for b in SPIRE_BANDS}})
    out = {}
    for band in SPIRE_BANDS:
        m = field[band]
        out[band] = replace(m, data=(m.data + render_catalogue(truth, m.band, m.wcs, m.shape)).astype(np.float32))
    return out


def test_shipped_model_places_a_point_source_with_a_scuba2_like_beam():
    artifact = load_artifact()
    field = simulate_field(SimulationConfig(area_deg2=0.02, seed=501))
    m = field["spire_250"]
    position = m.wcs.pixel_to_world(m.shape[1] / 2 + 0.3, m.shape[0] / 2 - 0.4)
    base = super_resolve_maps({b: field[b] for b in SPIRE_BANDS}, artifact, progress=False)
    injected = super_resolve_maps(_with_injected_source(field, 30.0, position), artifact, progress=False)
    response = injected.data - base.data  # the network's response to the injected galaxy
    x0, y0 = (float(v) for v in injected.wcs.world_to_pixel(position))
    yy, xx = np.mgrid[: response.shape[0], : response.shape[1]]
    near = (abs(xx - x0) < 15) & (abs(yy - y0) < 15)
    guess = models.Gaussian2D(np.nanmax(response[near]), x0, y0, 2, 2)
    fit = fitting.LevMarLSQFitter()(guess, xx[near], yy[near], np.nan_to_num(response[near]))
    pixel = artifact.conventions.pixel_arcsec
    offset = np.hypot(fit.x_mean.value - x0, fit.y_mean.value - y0) * pixel
    fwhm = 2.3548 * np.sqrt(abs(fit.x_stddev.value * fit.y_stddev.value)) * pixel
    assert offset <= 2.0, offset
    assert 0.7 * 7.9 <= fwhm <= 1.5 * 7.9, fwhm


def test_the_blend_does_not_depend_on_how_much_tiles_overlap():
    """Tiles are blended without seams: a quarter, an eighth or three quarters of overlap give
    the same map. (The network always runs at its training tile size: a sky-model network's
    blank-sky level depends on how much sky a tile holds, +1 mJy/beam in one 512-pixel tile.)"""
    artifact = load_artifact()
    field = simulate_field(SimulationConfig(area_deg2=0.06, seed=502), bands=SPIRE_BANDS)
    maps = {b: field[b] for b in SPIRE_BANDS}
    quarter = super_resolve_maps(maps, artifact, progress=False)
    assert quarter.shape[0] > 3 * artifact.config.tile  # several rows and columns of tiles
    for overlap in (artifact.config.tile // 8, 3 * artifact.config.tile // 4):
        other = super_resolve_maps(maps, artifact, progress=False, overlap=overlap)
        diff = np.abs(other.data - quarter.data)
        assert np.nanmedian(diff) < 0.05 and np.nanpercentile(diff, 99) < 0.01 * np.nanmax(quarter.data)


def test_catalogue_option_writes_sources_from_the_output(tiny_artifact, field_files, tmp_path):
    folder, _ = field_files
    out, cat = tmp_path / "o.fits", tmp_path / "o.ecsv"
    assert _run([folder / "cosmos_250.fits", out, "--model", tiny_artifact.path, "--catalogue", cat,
                 "--snr", "3"]) == 0
    table = Table.read(cat)
    assert {"ra", "dec", "flux", "flux_err", "snr"} <= set(table.colnames)
    assert table.meta["band"] == "scuba2_450"


def test_calibration_record_round_trips_and_old_models_read_theirs_from_config(tiny_model, tmp_path):
    import json
    import shutil

    from galaxysr.inference import Calibration, load_artifact, record_calibration

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    artifact = load_artifact(folder)
    assert artifact.calibration == Calibration() and artifact.calibration.error_factor(5.0) == 1.0
    beam = {"fwhm_arcsec": 9.4567, "peak_ratio": 0.61, "n": 12, "fields": ["f1"]}
    errors = {"flux_mjy": [4.0, 12.0, 40.0], "factor": [1.2, 1.0, 0.7], "n_sources": 99}
    scale = {"network_ratio": 0.9, "n_matched": 50,
             "curves": {"error": {"nodes_mjy": [6.0, 20.0], "factors": [1.0, 1.2], "n_pairs": 99},
                        "scatter": {"n_pairs": 3, "not_fitted": "too few"}}}
    presence = {"score": "p_peak", "nodes": [0.5, 1.0], "p_real": [0.3, 0.9], "n": 40, "n_real": 20}
    artifact = record_calibration(record_calibration(record_calibration(artifact, beam=beam), errors=errors),
                                  flux_scale=scale)
    assert artifact.calibration == Calibration(effective_beam=beam, errors=errors, flux_scale=scale)  # kept
    assert json.loads((folder / "calibration.json").read_text()) == {"effective_beam": beam, "errors": errors,
                                                                     "flux_scale": scale, "presence": None,
                                                                     "reobservation": None}
    artifact = record_calibration(artifact, presence=presence)
    assert artifact.calibration == Calibration(effective_beam=beam, errors=errors, flux_scale=scale,
                                               presence=presence)
    assert artifact.calibration.fwhm_arcsec == 9.457
    assert set(artifact.calibration.flux_curves()) == {"error"}  # the unfitted reading applies nothing
    assert artifact.calibration.flux_curves()["error"](20.0) == pytest.approx(1.2)
    assert artifact.calibration.error_factor(12.0) == pytest.approx(1.0)
    assert artifact.calibration.error_factor(100.0) == pytest.approx(0.7)  # clipped to the last node
    assert record_calibration(artifact).calibration == Calibration()  # forgotten: measured afresh
    # A model calibrated before 0.4 kept its calibration in config.json.
    (folder / "calibration.json").unlink()
    meta = json.loads((folder / "config.json").read_text())
    meta["train"]["model"].update(effective_fwhm_arcsec=9.457, error_calibration=[errors["flux_mjy"],
                                                                                   errors["factor"]])
    meta.update(effective_beam=beam, error_calibration=errors)
    (folder / "config.json").write_text(json.dumps(meta))
    old = load_artifact(folder)
    assert old.calibration.effective_beam == beam and old.calibration.errors == errors
    record_calibration(old, beam=beam)  # rewritten into calibration.json, out of config.json
    meta = json.loads((folder / "config.json").read_text())
    assert "effective_beam" not in meta and "error_calibration" not in meta["train"]["model"]
    assert load_artifact(folder).calibration.errors == errors


def test_the_shipped_model_carries_its_calibration_and_its_maps_the_flux_curves():
    from galaxysr.inference import CALIBRATION_FILE, load_artifact

    artifact = load_artifact()
    assert (artifact.path / CALIBRATION_FILE).exists()
    # The per-pixel map's measured beam, within what the health check lets pass; the primary map
    # (the catalogue drawn) is at the target beam.
    from galaxysr.evaluate.health import HEALTH_BOUNDS

    assert 7.9 < artifact.calibration.fwhm_arcsec <= HEALTH_BOUNDS.max_fwhm_arcsec
    assert artifact.calibration.errors["flux_mjy"] and artifact.beam_fwhm_arcsec == pytest.approx(7.9)
    curves = artifact.calibration.flux_curves()
    assert set(curves) == {"error", "scatter", "head", "head_error"}
    # Raw fluxes fitted on the per-pixel map are low above 10 mJy (0.87–0.90 of the truth on the
    # calibration fields): lifted, for the PSF catalogue and for the head's.
    assert curves["error"](20.0) > 1.0 and curves["scatter"](20.0) > 1.0 and curves["head"](20.0) > 1.0
