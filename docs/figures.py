"""Regenerate the simulator figures of docs/: ``python docs/figures.py``."""

from pathlib import Path

from galaxysr.plots import counts_figure, field_bands_figure
from galaxysr.simulate import SimulationConfig, simulate_field

HERE = Path(__file__).parent / "figures"

if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    print(counts_figure(HERE / "counts.png"))
    print(field_bands_figure(simulate_field(SimulationConfig(area_deg2=0.04, seed=5)), HERE / "field.png"))
