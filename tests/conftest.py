"""Shared fixtures: small simulated fields and FITS writers for bad-input tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from galaxysr.maps import tan_wcs


@pytest.fixture
def write_fits(tmp_path):
    """Write an image with a simple TAN header; returns the path."""

    def _write(name="map.fits", shape=(64, 64), pixel=6.0, bunit="mJy/beam", extra=None,
               data=None, wcs=True):
        header = fits.Header()
        if wcs:
            header.update(tan_wcs(SkyCoord(150 * u.deg, 2 * u.deg), pixel * u.arcsec,
                                  shape[-2:]).to_header())
        if bunit is not None:
            header["BUNIT"] = bunit
        for key, value in (extra or {}).items():
            header[key] = value
        if data is None:
            data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        path = tmp_path / name
        fits.PrimaryHDU(data, header=header).writeto(path)
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained small sky-model network, exported as a ModelArtifact folder."""
    import keras

    from galaxysr.model import ModelConfig, build_generator
    from galaxysr.training import TrainConfig, export_artifact

    keras.utils.set_random_seed(0)  # an untrained network's map depends on its draw: fix it
    config = TrainConfig(model=ModelConfig(tile=64, depth=4, base_filters=4))
    return export_artifact(build_generator(config.model), config, tmp_path_factory.mktemp("art") / "model")


@pytest.fixture(scope="session")
def field_files(tmp_path_factory):
    """A 0.01 deg² simulated field written as cosmos_250/350/500.fits; (folder, Field)."""
    from galaxysr.instruments import SPIRE_BANDS
    from galaxysr.maps import write_map
    from galaxysr.simulate import SimulationConfig, simulate_field

    folder = tmp_path_factory.mktemp("field")
    field = simulate_field(SimulationConfig(area_deg2=0.01, seed=77))
    for band in SPIRE_BANDS:
        write_map(field[band], folder / f"cosmos_{band[-3:]}.fits")
    return folder, field


def pytest_configure(config):
    # Two logical CPU devices, so MirroredStrategy tests can run two replicas on one CPU.
    # Must happen before TensorFlow initialises its devices. TensorFlow's C++ start-up lines
    # (absl, CPU instructions, a failed cuInit on machines without a GPU) are filtered, as the
    # command line tools filter them; anything else on standard error passes.
    from galaxysr.console import quiet_native_output

    with quiet_native_output(force=True):
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        except RuntimeError:
            pass
