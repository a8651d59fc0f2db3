"""galaxysr — super-resolve Herschel SPIRE maps to SCUBA-2 450 µm resolution.

The Python front door::

    from galaxysr import super_resolve, extract_sources, simulate_field, load_model, write_map

    result = super_resolve("spire_250.fits")           # a Map: .data, .wcs, .unit, .error
    catalogue = extract_sources(result)                # an astropy Table with units
    write_map(result, "spire_450.fits")                # a Map does no I/O itself

``galaxysr.reobserve`` gives a catalogue back to the SPIRE maps: fluxes fitted on them at its
positions (``refine``) and the residuals of its re-observation (``residuals``).

Data flow (one way): instruments → maps → sky/simulate → datasets → model/losses
→ training → inference → catalogue → reobserve → baselines → evaluate. See ``docs/`` for the map.
Names are imported on first use, so ``import galaxysr`` does not import TensorFlow.
"""

__version__ = "0.5.0"

#: Public name → the module that defines it.
_API = {
    "super_resolve": "inference", "load_model": "inference", "extract_sources": "catalogue",
    "simulate_field": "simulate", "SimulationConfig": "simulate", "Map": "maps", "read_map": "maps",
    "write_map": "maps", "as_map": "maps", "MapError": "maps", "BANDS": "instruments",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'galaxysr' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
