"""Super-resolve SPIRE maps of any size with a trained ModelArtifact.

One room per job: :mod:`.artifact` (a model folder: load, the shipped model, calibration
records), :mod:`.engine` (the plan, the strips of tiles through the network, the blended sums;
:func:`super_resolve`, the Python front door), :mod:`.writer` (the streamed FITS output) and
:mod:`.provenance` (what an output was made from, so reruns with nothing new do nothing).
"""

from .artifact import (CALIBRATION_FILE, SHIPPED_MODEL, Calibration, ModelArtifact, load_artifact, load_model,
                       read_calibration, record_calibration, write_calibration)
from .engine import (MissingBandError, Plan, StripRunner, StripSums, blend_window, check_inputs, input_maps, plan,
                     super_resolve, super_resolve_maps, tile_starts, unpack_sky, draw_head_map)
from .provenance import digest, file_sha256, outputs_to_make, provenance, recorded
from .writer import MapWriter

__all__ = ["SHIPPED_MODEL", "CALIBRATION_FILE", "Calibration", "read_calibration", "write_calibration",
           "MissingBandError", "ModelArtifact", "load_artifact", "load_model", "super_resolve",
           "input_maps", "record_calibration", "blend_window", "tile_starts", "check_inputs", "Plan", "plan",
           "StripRunner", "StripSums", "unpack_sky", "super_resolve_maps", "draw_head_map", "MapWriter", "file_sha256", "provenance",
           "digest", "recorded", "outputs_to_make"]
