"""Uncertainties an astronomer can trust: noise-aware inference, the ERROR plane, gap filling,
the calibrated catalogue and the XID+ prior list. Measured with the shipped model on fields of
the held-out sky (never drawn in training)."""

import time
from dataclasses import replace

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from galaxysr.catalogue import extract_sources, write_priors
from galaxysr.cli import main
from galaxysr.evaluate import EvalConfig, error_statistics, inner_region, match
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.instruments import SPIRE_BANDS
from galaxysr.maps import write_map
from galaxysr.simulate import column_mjy, held_out_simulation, simulate_field

SHIPPED = load_artifact()


def _field(noise_scale=1.0, seed=2201, area=0.12):
    config = held_out_simulation(seed, area)
    return simulate_field(replace(config, noise_scale=config.noise_scale * noise_scale), bands=SPIRE_BANDS,
                          truth=None)


@pytest.fixture(scope="module")
def field():
    return _field()


@pytest.fixture(scope="module")
def network(field):
    return super_resolve_maps(field.maps, SHIPPED, progress=False)


def _matched(field, catalogue, out_map):
    from astropy.coordinates import SkyCoord

    truth = field.truth[inner_region(field.truth, out_map, EvalConfig().edge_arcsec)]
    cat = catalogue[inner_region(catalogue, out_map, EvalConfig().edge_arcsec)]
    s_true = column_mjy(truth, "flux_scuba2_450")
    i_det, i_ref = match(SkyCoord(cat["ra"], cat["dec"], unit="deg"), np.asarray(cat["flux"]),
                         SkyCoord(truth["ra"], truth["dec"], unit="deg"), s_true, 7.9 * u.arcsec)
    return Table({"flux": np.asarray(cat["flux"])[i_det], "flux_err": np.asarray(cat["flux_err"])[i_det],
                  "flux_true": s_true[i_ref], "flux_deboosted_lo": np.asarray(cat["flux_deboosted_lo"])[i_det],
                  "flux_deboosted_hi": np.asarray(cat["flux_deboosted_hi"])[i_det]})


def test_the_catalogue_errors_match_the_scatter_of_fluxes_about_the_truth(field, network):
    """Issues 12/13 and 26: z = (S_out − S_true)/σ of the catalogue a user gets has unit robust
    scatter above 5 mJy (within 20 %) and the truth inside ±1σ for 55–80 % per bin. Met since 0.5:
    the catalogue head's errors are calibrated on the calibration fields (the 0.4 model's PSF
    catalogue held the truth inside ±1σ for 89 % of the sources above 15 mJy)."""
    assert network.error is not None and np.isfinite(network.error[np.isfinite(network.data)]).all()
    sources = _matched(field, extract_sources(network), network)
    bright = np.asarray(sources["flux_true"]) >= 5
    assert bright.sum() >= 40
    z = (np.asarray(sources["flux"]) - np.asarray(sources["flux_true"])) / np.asarray(sources["flux_err"])
    robust = 1.4826 * np.median(np.abs(z[bright] - np.median(z[bright])))
    assert 0.8 <= robust <= 1.2, robust   # the reported errors are the scatter, within 20 %
    stats = error_statistics(sources, bins=(5, 15, 100))
    for coverage, n in zip(stats["coverage_68"], stats["n"]):
        if n >= 15:
            assert 0.55 <= coverage <= 0.8, stats


def test_the_head_errors_are_calibrated_on_the_error_plane_users_get(field, network):
    """The catalogue head's forced errors are read off the map's ERROR plane; calibrated on the
    plane before its own calibration (0.5), they came out too small above 15 mJy (here z robust
    std 1.25, truth inside ±1σ for 44 % of the sources, per bin of measured flux)."""
    sources = _matched(field, extract_sources(network), network)
    flux, true, err = (np.asarray(sources[k]) for k in ("flux", "flux_true", "flux_err"))
    z = (flux - true) / err
    for lo, hi, widest in ((5, 15, 1.2), (15, 100, 1.15)):
        sel = (flux >= lo) & (flux < hi)
        assert sel.sum() >= 50
        robust = 1.4826 * np.median(np.abs(z[sel] - np.median(z[sel])))
        assert 0.7 <= robust <= widest and np.mean(np.abs(z[sel]) < 1) >= 0.5, (lo, robust, np.mean(np.abs(z[sel]) < 1))


def test_deeper_input_gives_more_detections_at_fixed_snr(field, network):
    noisy = _field(noise_scale=2.0)
    assert np.all(noisy.truth["ra"] == field.truth["ra"])             # the same sky, noisier maps
    twice = super_resolve_maps(noisy.maps, SHIPPED, progress=False)
    assert np.nanmedian(twice.error) > np.nanmedian(network.error)
    assert len(extract_sources(twice)) < len(extract_sources(network))


def test_knocked_out_pixels_leave_the_coverage_and_the_catalogue(field, network):
    rng = np.random.default_rng(5)
    holed = {}
    for band in SPIRE_BANDS:
        m = field[band]
        data = m.data.copy()
        data[rng.random(data.shape) < 0.05] = np.nan
        holed[band] = replace(m, data=data)
    out = super_resolve_maps(holed, SHIPPED, progress=False)
    assert np.isfinite(out.data).mean() >= 0.95 * np.isfinite(network.data).mean()
    assert out.meta["FILL250"][0] > 0
    full, gappy = extract_sources(network), extract_sources(out)
    from astropy.coordinates import SkyCoord

    bright = full[full["flux"] > 8 * u.mJy]
    i, j = match(SkyCoord(gappy["ra"], gappy["dec"]), np.asarray(gappy["flux"]), SkyCoord(bright["ra"], bright["dec"]),
                 np.asarray(bright["flux"]), 3 * u.arcsec)
    assert len(j) >= 0.9 * len(bright)
    delta = np.abs(np.asarray(gappy["flux"])[i] - np.asarray(bright["flux"])[j])
    sigma = np.hypot(np.asarray(gappy["flux_err"])[i], np.asarray(bright["flux_err"])[j])
    assert np.mean(delta <= 2 * sigma) >= 0.9   # the same catalogue within the errors


@pytest.mark.parametrize("method", ["head", "psf"])
def test_catalogue_columns_units_and_provenance(network, tmp_path, method):
    table = extract_sources(network, command="galaxysr predict test", method=method)
    for name in ("ra", "dec"):
        assert table[name].unit == u.deg
    for name in ("flux", "flux_err", "flux_deboosted", "flux_deboosted_lo", "flux_deboosted_hi"):
        assert table[name].unit == u.mJy, name
    assert all(table[name].description for name in table.colnames), "every column says what it is"
    assert len(table) >= 10 and (table["flux"] >= 2 * u.mJy).all()
    if method == "psf":  # chosen by their significance
        assert (table["det_snr"] >= 4 - 1e-6).all()
    else:                # chosen by the calibrated probability that they are real (the default 0.7)
        assert (table["p_real"] >= 0.7).all() and table["pos_err"].unit == u.arcsec
        for band in ("250", "350", "500"):
            assert table[f"flux_spire_{band}"].unit == u.mJy and table[f"flux_spire_{band}_err"].unit == u.mJy
    np.testing.assert_allclose(table["snr"], table["flux"] / table["flux_err"])
    assert (table["flux_deboosted_lo"] <= table["flux_deboosted"]).all()
    assert table.meta["GSRHASH"] == SHIPPED.sha256 and "pixel_convention" in table.meta
    assert table.meta["command"] == "galaxysr predict test" and table["flags"].dtype == np.uint8
    table.write(tmp_path / "c.ecsv")
    back = Table.read(tmp_path / "c.ecsv")
    assert back["flux"].unit == u.mJy and back["x"].description.startswith("column of the source")


def test_priors_file_round_trips_with_columns_and_units(network, tmp_path):
    table = extract_sources(network)
    write_priors(table, tmp_path / "xid.fits")
    back = Table.read(tmp_path / "xid.fits")
    assert len(back) == len(table)
    assert back["RA"].unit == u.deg and back["S450"].unit == u.mJy and back["flux_upper_250"].unit == u.mJy
    np.testing.assert_allclose(back["RA"], table["ra"])
    assert (back["flux_upper_350"] > back["S450"]).all() and (back["flux_lower_500"] > 0).all()
    with pytest.raises(FileExistsError):
        write_priors(table, tmp_path / "xid.fits")


def test_existing_catalogue_or_priors_is_refused_before_any_work(field, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for band in SPIRE_BANDS:
        write_map(field[band], folder / f"f_{band[-3:]}.fits")
    for flag in ("--catalogue", "--priors"):
        existing = tmp_path / f"exists{flag}.dat"
        existing.write_text("keep me")
        out = tmp_path / f"out{flag}.fits"
        t = time.perf_counter()
        assert main(["predict", str(folder / "f_250.fits"), str(out), flag, str(existing), "--no-progress"]) == 2
        assert time.perf_counter() - t < 5 and not out.exists() and existing.read_text() == "keep me"
        assert "--overwrite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def head_honesty(field, network):
    from galaxysr.evaluate.runs import head_readings, head_summary

    truth = field.truth[inner_region(field.truth, network, EvalConfig().edge_arcsec)]
    truth = truth[column_mjy(truth, "flux_scuba2_450") >= 2]
    return head_summary([head_readings(network, truth, EvalConfig())])


def test_the_catalogue_heads_positional_errors_are_honest(head_honesty):
    """Issue 26: on a held-out field the median offset / pos_err of the real detections is a 2-D
    Gaussian's 1.18 to within 0.1 (pos_err calibrated on the training distribution)."""
    assert head_honesty["n_real"] >= 200
    assert abs(head_honesty["offset_over_pos_err_median"] - head_honesty["gaussian_median"]) <= 0.1, head_honesty


@pytest.mark.xfail(strict=True, reason="issue 26 target not yet met: p_real, calibrated on the training distribution, "
                                       "is too low on the held-out sky — its detections are real more often than it "
                                       "says, by up to 0.14 in a decile (docs/evaluation.md)")
def test_p_real_is_calibrated_on_a_held_out_field(head_honesty):
    deciles = [d for d in head_honesty["reliability"] if d["n"] >= 20]
    assert len(deciles) >= 8
    assert head_honesty["max_abs_difference"] <= 0.05, head_honesty["reliability"]
