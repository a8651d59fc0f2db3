"""A quiet and honest first hour, archive maps as users download them, reruns, and the
conventions of a published package (issue: real archive maps, a quiet first hour…)."""

import os
import subprocess
import sys
from importlib import metadata
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import galaxysr
from galaxysr.cli import main
from galaxysr.instruments import SPIRE_BANDS

REPO = Path(__file__).resolve().parents[1]
A1689 = files("galaxysr") / "data" / "real" / "A1689_1342201247"
TAGS = {"spire_250": "psw", "spire_350": "pmw", "spire_500": "plw"}


def _archive(band):
    return str(next(p for p in A1689.iterdir() if f"hspire{TAGS[band]}" in p.name))




# -- package conventions ---------------------------------------------------------------------

def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"galaxysr {galaxysr.__version__}"


def test_the_license_ships_with_the_distribution():
    dist = metadata.distribution("galaxysr")
    names = [Path(str(f)).name for f in (dist.files or [])]
    licences = dist.metadata.get_all("License-File") or []
    assert "LICENSE" in names or "LICENSE" in licences
    assert "BSD" in (REPO / "LICENSE").read_text() and (REPO / "CITATION.cff").exists()


def test_help_texts_have_no_markup_or_doubled_defaults(capsys):
    for command in ([], ["predict"], ["train"], ["survey"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and "(default: None)" not in text
        assert "(default: guessed from the 250 name) (default" not in text


def test_a_mistyped_input_path_is_named_without_a_misleading_flag(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope_250.fits"), str(tmp_path / "o.fits")]) == 2
    err = capsys.readouterr().err
    assert "nope_250.fits: no such file" in err and "--spire350" not in err


# -- quiet by default ------------------------------------------------------------------------

def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GALAXYSR_VERBOSE")}
    env["PYTHONWARNINGS"] = "default"
    return env


def test_predict_and_the_python_api_leave_stderr_empty(tiny_model, field_files, tmp_path):
    folder, _ = field_files
    out = subprocess.run([sys.executable, str(REPO / "predict.py"), str(folder / "cosmos_250.fits"),
                          str(tmp_path / "o.fits"), "--model", str(tiny_model), "--no-progress"],
                         capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    code = (f"from galaxysr import super_resolve, write_map\n"
            f"m = super_resolve({str(folder / 'cosmos_250.fits')!r}, model={str(tiny_model)!r})\n"
            f"write_map(m, {str(tmp_path / 'api.fits')!r})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(),
                         cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_training_leaves_stderr_empty_and_says_how_to_use_its_model(tmp_path):
    args = ["--epochs", "1", "--steps-per-epoch", "2", "--n-sim-fields", "1", "--sim-area", "0.02",
            "--tile", "64", "--depth", "4", "--base-filters", "4", "--sim-per-real", "0", "--no-calibration",
            "--no-progress", "--sim-dir", str(tmp_path / "sim"), "--out", str(tmp_path / "run")]
    out = subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                         env=_clean_env(), cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    model = tmp_path / "run" / "model"
    assert f"--model {model}" in out.stdout


def test_verbose_shows_tensorflows_own_output(tiny_model, field_files, tmp_path):
    folder, _ = field_files
    out = subprocess.run([sys.executable, str(REPO / "predict.py"), str(folder / "cosmos_250.fits"),
                          str(tmp_path / "o.fits"), "--model", str(tiny_model), "--no-progress", "--verbose"],
                         capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert out.returncode == 0 and out.stderr != ""


# -- reruns ------------------------------------------------------------------------------------

def test_predict_rerun_is_up_to_date_and_a_changed_one_is_refused(tiny_model, field_files, tmp_path, capsys):
    folder, _ = field_files
    out, cat = tmp_path / "o.fits", tmp_path / "o.ecsv"
    args = ["predict", str(folder / "cosmos_250.fits"), str(out), "--model", str(tiny_model), "--no-progress"]
    assert main(args) == 0
    stamp = out.stat().st_mtime_ns
    assert main(args) == 0 and "up to date" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == stamp
    # A catalogue asked for later is made from the existing map, which is left alone.
    assert main([*args, "--catalogue", str(cat), "--snr", "3"]) == 0 and cat.exists()
    assert out.stat().st_mtime_ns == stamp
    assert main([*args, "--catalogue", str(cat), "--snr", "3"]) == 0 and "up to date" in capsys.readouterr().out
    # Other options: refused, unless --overwrite.
    assert main([*args, "--background", "median"]) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--background", "median", "--overwrite"]) == 0 and out.stat().st_mtime_ns != stamp
    # --overwrite remakes even an up-to-date output (the explicit ask).
    stamp = out.stat().st_mtime_ns
    assert main([*args, "--background", "median", "--overwrite"]) == 0 and out.stat().st_mtime_ns != stamp


def test_simulate_rerun_is_up_to_date(tmp_path, capsys):
    args = ["simulate", "--area", "0.005", "--seed", "3", "--out", str(tmp_path / "f")]
    assert main(args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "f").iterdir()}
    assert len([n for n in stamps if n.endswith(".fits")]) == 5  # four maps and the 450 rms map
    assert main(args) == 0 and "up to date" in capsys.readouterr().out
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "f").iterdir()}
    assert main([*args[:4], "4", *args[5:]]) == 2  # another seed into the same folder


# -- archive maps -------------------------------------------------------------------------------

def test_hdulist_and_path_inputs_give_the_same_map(tiny_model):
    paths = [_archive(b) for b in SPIRE_BANDS]
    from_paths = galaxysr.super_resolve(*paths, model=tiny_model)
    hduls = [fits.open(p) for p in paths]
    from_hduls = galaxysr.super_resolve(*hduls, model=tiny_model)
    np.testing.assert_allclose(from_hduls.data, from_paths.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_hduls.error, from_paths.error, rtol=1e-5, atol=1e-5)
    assert from_paths.meta["CAL250"][0] == "extended"


def test_a_single_hdu_without_the_other_bands_says_how_to_pass_them(tiny_model):
    with fits.open(_archive("spire_250")) as hdul:
        with pytest.raises(galaxysr.MapError, match="spire350="):
            galaxysr.super_resolve(hdul["image"], model=tiny_model)


def test_tensorflow_chatter_is_recognised_in_both_timestamp_forms_and_nothing_else():
    from galaxysr.console import is_noise

    assert is_noise("I0000 00:00:1796229989.130734    1847 port.cc:153] oneDNN custom operations are on.")
    assert is_noise("I1202 16:44:29.123456    1847 cudart_stub.cc:31] Could not find cuda drivers")
    assert is_noise("E0000 00:00:1796229993.254048    1847 cuda_platform.cc:52] failed call to cuInit: (303)")
    assert not is_noise("E0000 00:00:1796229993.254048    1847 some_op.cc:52] out of memory allocating tensor")
    assert not is_noise("Traceback (most recent call last):")
    assert not is_noise("galaxysr: warning: spire_250.fits: 12 NaN pixels filled")


def test_survey_leaves_stderr_empty(tiny_model, field_files, tmp_path):
    folder, _ = field_files
    out = subprocess.run([sys.executable, "-c", "import sys; from galaxysr.cli import main; sys.exit(main())", "survey", str(folder / "cosmos_250.fits"), "--out",
                          str(tmp_path / "survey"), "--model", str(tiny_model), "--workers", "1", "--no-progress"],
                         capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert (tmp_path / "survey" / "cosmos_450.fits").exists()
