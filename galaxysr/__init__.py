"""galaxysr — super-resolve Herschel SPIRE maps to SCUBA-2 450 µm resolution.

Data flow (one way): instruments → maps → sky/simulate → datasets → model/losses
→ training → inference → catalogue → baselines → evaluate. See ``docs/`` for the map.
"""

__version__ = "0.1.0"
