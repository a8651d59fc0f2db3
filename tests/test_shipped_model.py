"""The shipped model read the way users read it, on a held-out sky it was never trained on:
injected sources of known flux, a plain peak finder, a 2 Jy source (issues 19 and 21).

Tolerances are the issue targets where the shipped model meets them; where it does not yet,
a strict xfail states the target (it fails loudly the day the model meets it, so the marker
goes)."""

from dataclasses import replace

import pytest

from galaxysr.evaluate.injection import InjectionConfig, bright_recovery, inject, injection_catalogue, \
    injection_colours, recovery_stats, _white_noise_field
from galaxysr.evaluate.metrics import plain_peaks, split_sources
from galaxysr.evaluate.runs import sky_simulation
from galaxysr.inference import load_artifact, super_resolve_maps
from galaxysr.simulate import simulate_field


@pytest.fixture(scope="module")
def artifact():
    return load_artifact()


@pytest.fixture(scope="module")
def held_out():
    return simulate_field(sky_simulation("held_out", 2101, 0.06))


@pytest.fixture(scope="module")
def noise_injection(artifact, held_out):
    """Injection into white-noise maps at 1× HerMES-deep: the decoder's own beam."""
    config = InjectionConfig(fluxes_mjy=(10.0, 20.0, 40.0))
    colours = injection_colours(held_out.truth, config.fluxes_mjy)
    maps = {b: m for b, m in _white_noise_field(held_out, 1.0).items() if b in artifact.config.input_bands}
    base = super_resolve_maps(maps, artifact, progress=False)
    sources = injection_catalogue(base, colours, config)
    injected = super_resolve_maps(inject(maps, sources), artifact, progress=False)
    diff = replace(injected, data=injected.data - base.data, noise=None, sky_model=None)
    return recovery_stats(diff, sources)


def test_the_shipped_model_draws_a_sky_model_with_no_ceiling(artifact):
    assert artifact.config.has_sky and artifact.config.beam_fwhm_arcsec == pytest.approx(7.9)


@pytest.mark.parametrize("flux", [
    pytest.param("10", marks=pytest.mark.xfail(strict=True, reason=(
        "the drawn map's response to an isolated 10 mJy source in a white-noise map sits 1.3″ from the truth: it is "
        "the catalogue's position, noise and all, where a per-pixel map's response (injected minus base, the noise "
        "cancelling) read 0.95″ with 0.4 and reads 0.89″ on 0.5's MEAN plane; 20 and 40 mJy: 0.6″, 0.3″ "
        "(docs/evaluation.md)"))),
    "20", "40"])
def test_injected_sources_are_placed_to_within_an_arcsecond(noise_injection, flux):
    s = noise_injection[flux]
    assert s["n"] >= 5 and s["median_offset_arcsec"] <= 1.0, s


@pytest.mark.parametrize("flux", [
    "20",
    pytest.param("40", marks=pytest.mark.xfail(strict=True, reason=(
        "isolated 40 mJy sources in white-noise maps read 1.16-1.19 of their flux: the head's flux curve lifts the "
        "per-pixel map's fitted fluxes by ≈ 1.2, the deficit of a confused sky, which a source alone in blank sky "
        "does not have (docs/evaluation.md)")))])
def test_bright_injected_sources_keep_their_integrated_flux(noise_injection, flux):
    assert 0.85 <= noise_injection[flux]["integrated_ratio"] <= 1.15, noise_injection[flux]


def test_injected_sources_are_drawn_as_the_beam(noise_injection):
    """Issue 26: the primary map is the catalogue drawn through the 7.9″ beam — injected sources
    of 20 and 40 mJy in white-noise maps are 7.9–8.3″ wide (0.4's per-pixel map: 9.4 and 8.8″)."""
    for flux in ("20", "40"):
        assert 7.9 - 0.2 <= noise_injection[flux]["fwhm_arcsec"] <= 8.3, (flux, noise_injection[flux])


@pytest.mark.xfail(strict=True, reason="issue 19/26 target not yet met: injected sources in white-noise maps are "
                                       "drawn 7.9-8.2″ wide, but with peaks 0.80/1.09/1.19 of the flux at 10/20/40 "
                                       "mJy (want 0.95-1.05; docs/evaluation/report.md)")
def test_injected_sources_are_drawn_at_the_beam_with_peak_and_flux_right(noise_injection):
    for flux in ("10", "20", "40"):
        s = noise_injection[flux]
        assert 7.9 <= s["fwhm_arcsec"] <= 8.3, (flux, s)
        assert 0.95 <= s["peak_ratio"] <= 1.05 and 0.95 <= s["integrated_ratio"] <= 1.05, (flux, s)


def test_a_plain_peak_finder_does_not_split_bright_sources(artifact, held_out):
    out = super_resolve_maps({b: held_out[b] for b in artifact.config.input_bands}, artifact, progress=False)
    split = split_sources(plain_peaks(out), held_out.truth, min_flux=20.0, radius_arcsec=8.0)
    assert split["n_sources"] >= 5
    assert split["n_split"] == 0, split


@pytest.fixture(scope="module")
def bright(artifact, held_out):
    maps = {b: held_out[b] for b in artifact.config.input_bands}
    return bright_recovery(artifact, maps, held_out.truth, InjectionConfig(bright_250_mjy=(500.0, 2000.0)))


def test_a_2_jy_source_at_250_um_is_not_clipped(bright):
    """No saturation: the response to a 2 Jy source is as large, relative to its flux, as to
    a 500 mJy one (to 20 %), and the output goes above 0.2's 500 mJy/beam ceiling (0.3.0's model
    gave 0.40 against 0.63 on this field)."""
    faint, strong = bright["500"], bright["2000"]
    assert strong["n"] >= 1 and strong["s450_mjy"] > 500
    assert strong["peak_ratio"] >= 0.8 * faint["peak_ratio"], bright
    assert strong["integrated_ratio"] >= 0.8 * faint["integrated_ratio"], bright
    assert bright["max_output_mjy"] > 500


def test_a_2_jy_source_at_250_um_keeps_its_450_um_flux(bright):
    """Issue 21's target, met on this field since 0.5 (0.4's model: about half of the flux); on the
    evaluation's held-out sky the 2 Jy sources read 0.79 of it (docs/evaluation/report.md)."""
    assert abs(bright["2000"]["integrated_ratio"] - 1) <= 0.15, bright


def _archive_maps():
    from importlib.resources import files

    from galaxysr.maps import read_map

    folder = files("galaxysr") / "data" / "real" / "A1689_1342201247"
    tags = {"spire_250": "psw", "spire_350": "pmw", "spire_500": "plw"}
    return {b: read_map(str(next(p for p in folder.iterdir() if f"hspire{t}" in p.name)), band=b)
            for b, t in tags.items()}


def test_the_archive_scan_and_its_mean_zero_jy_per_beam_copy_give_the_same_output(artifact):
    from astropy import units as u
    import numpy as np

    from galaxysr.conventions import k_ptoe
    from galaxysr.maps import reproject_map

    archive = _archive_maps()
    copy = {}
    for band, m in archive.items():
        k = k_ptoe(m.band)  # MJy/sr per Jy/beam
        jy = m.data / k
        copy[band] = replace(m, data=(jy - np.nanmean(jy)).astype(np.float32), unit=u.Jy / u.beam,
                             noise=None if m.noise is None else m.noise / k, meta={}, source=f"{band} copy")
    a = super_resolve_maps(archive, artifact, progress=False)
    c = super_resolve_maps(copy, artifact, progress=False)
    assert np.nanmedian(np.abs(a.data - c.data)) <= 0.2
    footprint = np.isfinite(reproject_map(archive["spire_250"], a.wcs, a.shape).data)
    assert np.isfinite(a.data)[footprint].mean() >= 0.95
    assert a.meta["CAL250"][0] == "extended" and 15 < a.meta["BKG250"][0] < 35  # META_7: 2.28 MJy/sr ≈ 25


@pytest.mark.parametrize("kind", ["offset", "gradient"])
def test_a_background_on_the_inputs_does_not_change_the_output(artifact, held_out, kind):
    import numpy as np

    maps = {b: held_out[b] for b in artifact.config.input_bands}
    base = super_resolve_maps(maps, artifact, progress=False)

    def add(m):
        extra = 25.0 if kind == "offset" else np.linspace(-10, 10, m.shape[1])[None, :] * np.ones((m.shape[0], 1))
        return replace(m, data=(m.data + extra).astype(np.float32))

    out = super_resolve_maps({b: add(m) for b, m in maps.items()}, artifact, progress=False)
    bright = np.nanpercentile(base.data, 99.9)
    limit = 0.02 if kind == "offset" else 0.05  # issue targets, of the bright-pixel flux
    assert np.nanpercentile(np.abs(out.data - base.data), 99) <= limit * bright


def test_the_shipped_model_is_the_readme_command_of_this_version(artifact):
    """Issue "robust training": the shipped model records what made it — this version, the
    README's command, the seed and the git commit — and no path of the machine it was trained
    on; its health check passed."""
    import json
    from pathlib import PurePosixPath, PureWindowsPath

    import galaxysr

    meta = artifact.meta
    assert meta["galaxysr_version"] == galaxysr.__version__
    assert meta["provenance"] == {**meta["provenance"], "galaxysr_version": galaxysr.__version__,
                                  "command": "python train.py --epochs 200", "seed": 0}
    assert len(meta["provenance"]["git_commit"]) == 40                 # a clean checkout's commit
    out_dir = meta["train"]["out_dir"]
    assert not PurePosixPath(out_dir).is_absolute() and not PureWindowsPath(out_dir).is_absolute()
    assert "/work" not in json.dumps(meta) and "/home" not in json.dumps(meta)
    health = json.loads((artifact.path / "metrics.json").read_text())["health"]
    assert health["ok"], health["checks"]
