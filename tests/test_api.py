"""The Python front door and the command line's clean failures (issue: a front door for
Python users)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

import galaxysr
from galaxysr.cli import main
from galaxysr.instruments import SPIRE_BANDS
from galaxysr.maps import read_map, write_map

REPO = Path(__file__).resolve().parents[1]




def test_import_is_light_and_names_the_front_door():
    code = ("import sys, galaxysr; assert 'tensorflow' not in sys.modules; "
            "from galaxysr import super_resolve, extract_sources, simulate_field, load_model; "
            "assert 'tensorflow' not in sys.modules; print(sorted(galaxysr.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ("super_resolve", "extract_sources", "simulate_field", "load_model"):
        assert name in out.stdout


def test_every_input_kind_gives_the_cli_output(tiny_model, field_files, tmp_path):
    folder, field = field_files
    out = tmp_path / "cli.fits"
    assert main(["predict", str(folder / "cosmos_250.fits"), str(out), "--model", str(tiny_model),
                 "--no-progress"]) == 0
    cli = read_map(out)
    paths = [folder / f"cosmos_{b[-3:]}.fits" for b in SPIRE_BANDS]
    noise = {b: field[b].noise for b in SPIRE_BANDS}  # what the files carry as ERROR extensions
    kinds = {
        "path (siblings found)": ((paths[0], None, None), None),
        "HDUList": (tuple(fits.open(p) for p in paths), None),
        "image HDU + noise": (tuple(fits.open(p)[0] for p in paths), noise),
        "(Quantity, WCS) + noise": (tuple((field[b].data * u.mJy / u.beam, field[b].wcs) for b in SPIRE_BANDS),
                                    noise),
        "CCDData": (tuple(CCDData(field[b].data, unit="mJy/beam", wcs=field[b].wcs,
                                  uncertainty=StdDevUncertainty(field[b].noise)) for b in SPIRE_BANDS), None),
    }
    for kind, ((a, b, c), given_noise) in kinds.items():
        result = galaxysr.super_resolve(a, b, c, model=tiny_model, noise=given_noise)
        assert result.unit.to_string() == cli.unit.to_string(), kind
        assert result.wcs.wcs.compare(cli.wcs.wcs, tolerance=1e-9), kind
        np.testing.assert_allclose(result.data, cli.data, rtol=1e-5, atol=1e-5, err_msg=kind)
        np.testing.assert_allclose(result.error, cli.error, rtol=1e-5, atol=1e-5, err_msg=kind)
    # The returned Map converts and writes itself.
    hdu = result.to_hdu()
    assert hdu.header["BUNIT"] == "mJy/beam" and hdu.data.shape == result.shape
    nd = result.to_nddata()
    assert nd.unit == result.unit and nd.uncertainty.array.shape == result.shape
    written = write_map(result, tmp_path / "api.fits")
    assert read_map(written).error is not None


def test_an_array_without_a_unit_or_wcs_is_refused_with_the_reason(field_files):
    _, field = field_files
    m = field["spire_250"]
    with pytest.raises(galaxysr.MapError, match="unit"):
        galaxysr.as_map((m.data, m.wcs), "spire_250")
    with pytest.raises(galaxysr.MapError, match="header or an astropy WCS"):
        galaxysr.as_map((m.data, None), "spire_250")
    with pytest.raises(galaxysr.MapError, match="cannot make a map from a list"):
        galaxysr.as_map([1, 2], "spire_250")


def test_not_a_fits_file_is_one_line_and_exit_2(tmp_path):
    junk = tmp_path / "notes_250.fits"
    junk.write_text("these are not the pixels you are looking for\n" * 40)
    run = subprocess.run([sys.executable, str(REPO / "predict.py"), str(junk), str(tmp_path / "o.fits")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert "notes_250.fits" in run.stderr and "not a readable FITS file" in run.stderr


def test_a_model_config_with_unknown_keys_is_refused_naming_the_key(tiny_model, tmp_path):
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(tiny_model, bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["train"]["model"]["tile_size"] = 64
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(galaxysr.MapError, match="tile_size"):
        galaxysr.load_model(bad)


def test_messages_name_only_options_that_exist(field_files, tmp_path, capsys):
    folder, _ = field_files
    out = tmp_path / "o.fits"
    out.write_bytes(b"")
    assert main(["predict", str(folder / "cosmos_250.fits"), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err
    help_text = subprocess.run([sys.executable, "-m", "galaxysr.cli", "predict", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--overwrite" in help_text


def test_written_files_follow_the_umask(tiny_model, field_files, tmp_path):
    folder, _ = field_files
    old = os.umask(0o022)
    try:
        out = tmp_path / "u.fits"
        assert main(["predict", str(folder / "cosmos_250.fits"), str(out), "--model", str(tiny_model),
                     "--no-progress"]) == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o644


def test_the_documented_python_example_runs(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "python_api.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "wrote" in run.stdout and (tmp_path / "field_450.fits").exists() and (tmp_path / "field_450.ecsv").exists()


def test_a_super_resolved_map_cuts_out_with_every_plane(tiny_model, field_files):
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D

    from galaxysr.maps import FLAG_EDGE, cutout

    folder, _ = field_files
    out = galaxysr.super_resolve(str(folder / "cosmos_250.fits"), model=tiny_model)
    assert out.flags is not None and out.sky_model is not None
    f = out.sky_oversample
    # A cut-out hanging over the map's lower-left corner: on-map pixels of every plane are
    # copied exactly, off-map ones are NaN and flagged, and the sky model stays aligned.
    corner = SkyCoord(*out.wcs.pixel_to_world_values(3, 4), unit="deg")
    cut = cutout(out, corner, (20, 16))
    where = Cutout2D(out.data, corner, (20, 16), wcs=out.wcs, mode="partial")
    (ys, xs), (yo, xo) = where.slices_cutout, where.slices_original
    assert cut.shape == (20, 16) and cut.sky_model.shape == (20 * f, 16 * f)
    assert ys.start > 0 and xs.start > 0 and yo.start == xo.start == 0     # it does hang over
    on = np.isfinite(cut.data)
    assert on.sum() == (ys.stop - ys.start) * (xs.stop - xs.start)
    for plane in ("data", "noise", "flags"):
        np.testing.assert_array_equal(getattr(cut, plane)[ys, xs], getattr(out, plane)[yo, xo])
    assert np.all(cut.flags[~on] & FLAG_EDGE)
    np.testing.assert_array_equal(cut.sky_model[f * ys.start:, f * xs.start:],
                                  out.sky_model[:f * yo.stop, :f * xo.stop])
    assert np.isnan(cut.sky_model[:f * ys.start]).all()


def _occupied(tmp_path, folder):
    """For each command: its arguments with an output that already exists, made otherwise."""
    predict_out = tmp_path / "p.fits"
    predict_out.write_bytes(b"")
    mosaic = tmp_path / "survey" / "cosmos_450.fits"
    mosaic.parent.mkdir()
    mosaic.write_bytes(b"")
    sim = tmp_path / "sim"
    sim.mkdir()
    (sim / "notes.txt").write_text("mine")
    listed = tmp_path / "c.ecsv"
    listed.write_text("keep me")
    return {"predict": (["predict", str(folder / "cosmos_250.fits"), str(predict_out)], predict_out),
            "survey": (["survey", str(folder / "cosmos_250.fits"), "--out", str(mosaic.parent)], mosaic),
            "simulate": (["simulate", "--out", str(sim), "--area", "0.001"], sim),
            "catalogue": (["predict", str(folder / "cosmos_250.fits"), str(tmp_path / "new.fits"), "--catalogue",
                           str(listed)], listed)}


@pytest.mark.parametrize("command", ["predict", "survey", "simulate", "catalogue"])
def test_every_command_refuses_an_existing_output_by_type_and_names_the_flag(field_files, tmp_path, capsys,
                                                                              command):
    folder, _ = field_files
    args, existing = _occupied(tmp_path, folder)[command]
    assert main([*args, "--no-progress"] if command != "simulate" else args) == 2
    err = capsys.readouterr().err
    assert f"{existing}:" in err and err.rstrip().endswith("(--overwrite)") and "overwrite=True" not in err


def test_the_library_raises_output_exists_error_wherever_an_output_exists(field_files, tmp_path):
    from galaxysr.catalogue import write_catalogue, write_priors
    from galaxysr.errors import OutputExistsError
    from galaxysr.maps import write_field
    from galaxysr.simulate import write_mock_real
    from galaxysr.survey import up_to_date

    folder, field = field_files
    taken = tmp_path / "taken.fits"
    taken.write_bytes(b"")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "field").mkdir()
    (tmp_path / "field" / "truth.ecsv").write_text("")
    (tmp_path / "survey").mkdir()
    (tmp_path / "survey" / "cosmos_450.fits").write_bytes(b"")
    table = galaxysr.extract_sources(field["scuba2_450"])
    from galaxysr.inference import input_maps, load_artifact, super_resolve_maps

    artifact = load_artifact()
    maps = input_maps(artifact, folder / "cosmos_250.fits")
    attempts = [lambda: super_resolve_maps(maps, artifact, out_path=taken), lambda: write_map(field["spire_250"], taken),
                lambda: write_catalogue(table, taken), lambda: write_priors(table, taken),
                lambda: write_mock_real(tmp_path / "full"),
                lambda: write_field(type(field)({}, field.truth), tmp_path / "field"),
                lambda: up_to_date(folder / "cosmos_250.fits", tmp_path / "survey")]
    for attempt in attempts:
        with pytest.raises(OutputExistsError, match=r"\(overwrite=True\)$"):
            attempt()
    assert taken.read_bytes() == b""
