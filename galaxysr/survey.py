"""Whole-survey super-resolution on a Dask cluster.

The output grid of a map is cut into blocks of whole tiles. Each block is one Dask task:
the worker reads only the part of the input FITS files the block needs (memory-mapped
sections, a margin around it), fills gaps and resamples exactly as ``predict`` does — the
same global tile grid, the same strips, the same resampling nodes (see
:func:`galaxysr.maps.pixel_mapping`) — runs the network on the block's tiles, blends them
and writes the pixels the block *owns* atomically to ``DIR/blocks/``. Every output pixel
is owned by one block, and every tile that touches it is run by that block, so the mosaic
equals ``predict``'s map whatever the block size. Finished blocks are skipped on a rerun,
so a crashed or interrupted job resumes; Dask itself reruns the tasks of a worker that
dies. The mosaic (with ``ERROR`` and ``FLAGS`` extensions and provenance) is assembled
row by row from the block files, and an optional catalogue is extracted block by block
with a halo, keeping each source in the block that owns its position (no duplicates).

Scaling out uses Dask's own machinery — ``LocalCluster`` on one machine, any cluster by its
scheduler address (dask-jobqueue on SLURM/PBS: docs/survey.md) — not processes of ours.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = ["Block", "plan_blocks", "run_block", "survey", "survey_field", "start_client", "assemble",
           "extract_mosaic", "field_stem"]

#: Native input pixels read beyond what a block's tiles cover: the cubic-spline
#: prefilter's edge effect decays by 0.27 per pixel (negligible after 20), and gap filling
#: reaches ~4 beams (12 native pixels at 250 µm).
INPUT_MARGIN_PIXELS = 40


@dataclass(frozen=True)
class Block:
    """A block of the output grid.

    Attributes
    ----------
    index : (int, int)
        Block row and column.
    rows, cols : (int, int)
        Ranges [first, last) of tile-row and tile-column indices the block runs.
    core : (int, int, int, int)
        The output pixels it owns: rows [y_lo, y_hi), columns [x_lo, x_hi).
    """

    index: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    core: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"block_{self.index[0]:04d}_{self.index[1]:04d}"


def _split(starts: list[int], length: int, tile: int, per_block: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per block along one axis: (tile index range, owned pixel range)."""
    bounds = [starts[k] for k in range(0, len(starts), per_block)] + [length]
    bounds[0] = 0
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        touching = [i for i, s in enumerate(starts) if s < hi and s + tile > lo]
        out.append(((touching[0], touching[-1] + 1), (lo, hi)))
    return out


def plan_blocks(ys: list[int], xs: list[int], shape: tuple[int, int], tile: int,
                tiles_per_block: int = 8) -> list[Block]:
    """Blocks of about ``tiles_per_block`` × ``tiles_per_block`` tiles covering an output
    grid of ``shape`` whose tiles start at rows ``ys`` and columns ``xs``; every pixel is
    owned by exactly one block, which runs every tile touching its pixels."""
    rows = _split(ys, shape[0], tile, tiles_per_block)
    cols = _split(xs, shape[1], tile, tiles_per_block)
    return [Block((i, j), r_tiles, c_tiles, (r_pix[0], r_pix[1], c_pix[0], c_pix[1]))
            for i, (r_tiles, r_pix) in enumerate(rows) for j, (c_tiles, c_pix) in enumerate(cols)]


# -- the worker side ---------------------------------------------------------------------

_MODELS: dict = {}


def _model(path: str, threads: int):
    """The model, loaded once per worker process (TensorFlow limited to ``threads``)."""
    if path not in _MODELS:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already initialised in this process
            pass
        from .inference import load_artifact

        _MODELS[path] = load_artifact(path if path != "shipped" else None)
    return _MODELS[path]


def _read_cutout(path: str, band: str, job, region: tuple[int, int, int, int], noise_value: float | None):
    """The part of the input map ``path`` under output pixels ``region`` (+ margin), as a
    Map with its noise (the file's noise map, or ``noise_value`` everywhere)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from .maps import MJY_PER_BEAM, MapError, map_from_parts
    from .maps.fits_io import _image_hdu

    y_lo, y_hi, x_lo, x_hi = region
    corners_x = np.array([x_lo, x_hi, x_lo, x_hi], float) - 0.5
    corners_y = np.array([y_lo, y_lo, y_hi, y_hi], float) - 0.5
    world = job.wcs.pixel_to_world_values(corners_x, corners_y)
    with fits.open(path, memmap=True) as hdul:
        index = _image_hdu(hdul, None, path)
        header = hdul[index].header
        merged = hdul[0].header.copy() if index != 0 else fits.Header()
        merged.update(header)
        wcs = WCS(header).celestial
        px, py = wcs.world_to_pixel_values(*world)
        ny, nx = hdul[index].data.shape[-2:]
        m = INPUT_MARGIN_PIXELS
        i0, i1 = max(int(np.floor(min(py))) - m, 0), min(int(np.ceil(max(py))) + m + 1, ny)
        j0, j1 = max(int(np.floor(min(px))) - m, 0), min(int(np.ceil(max(px))) + m + 1, nx)
        if i1 <= i0 or j1 <= j0:
            return None
        data = np.array(hdul[index].data[..., i0:i1, j0:j1], dtype=np.float32).reshape(i1 - i0, j1 - j0)
        noise = None
        for name in ("ERROR", "NOISE", "RMS", "VARIANCE"):
            if name in hdul and hdul.index_of(name) != index and hdul[name].data is not None \
                    and hdul[name].data.shape[-2:] == (ny, nx):
                noise = np.array(hdul[name].data[..., i0:i1, j0:j1], dtype=np.float32).reshape(data.shape)
                noise = np.sqrt(noise) if name == "VARIANCE" else noise
                break
    sub = wcs.slice((slice(i0, i1), slice(j0, j1)))
    try:
        cut = map_from_parts(data, sub, band, noise=noise, keywords=merged, source=path)
    except MapError:
        return None  # a block over blank (all-NaN) input: nothing to do there
    cut = cut.to(MJY_PER_BEAM)
    if cut.noise is None and noise_value is not None:
        cut = replace(cut, noise=np.full(cut.shape, noise_value, np.float32))
    return cut


def run_block(block: Block, job, paths: dict, model: str, out_dir: str, noise_values: dict,
              batch_size: int = 16, threads: int = 1) -> str:
    """Compute one block and write ``out_dir/<name>.npz`` atomically; a block already on
    disk is not recomputed. Returns the file's path."""
    from .inference import StripRunner
    from .noise import fill_gaps

    out = Path(out_dir) / f"{block.name}.npz"
    if out.exists():
        return str(out)
    artifact = _model(model, threads)
    tile = job.tile
    r0, r1 = block.rows
    c0, c1 = block.cols
    y_first, y_last = job.ys[r0], job.ys[r1 - 1] + tile
    x_lo, x_hi = job.xs[c0], job.xs[c1 - 1] + tile
    inputs, filled = {}, {}
    for band, path in paths.items():
        cut = _read_cutout(path, band, job, (y_first, y_last, x_lo, x_hi), noise_values.get(band))
        if cut is None:
            inputs = None
            break
        inputs[band], filled[band] = fill_gaps(cut)
    y_lo, y_hi, cx_lo, cx_hi = block.core
    planes = 2 if artifact.config.uncertainty_head else 1
    numerator = np.zeros((planes, y_last - y_first, x_hi - x_lo))
    weights = np.zeros((y_last - y_first, x_hi - x_lo))
    flags = np.zeros(weights.shape, np.uint8)
    if inputs is not None:
        runner = StripRunner(replace(job, artifact=artifact, inputs=inputs, filled=filled), batch_size)
        x0s = job.xs[c0:c1]
        for y0 in job.ys[r0:r1]:
            result = runner.run(y0, x_lo, x_hi, x0s)
            if result is None:
                continue
            num, w, strip_flags = result
            numerator[:, y0 - y_first:y0 - y_first + tile] += num
            weights[y0 - y_first:y0 - y_first + tile] += w
            flags[y0 - y_first:y0 - y_first + tile] |= strip_flags
    rows = slice(y_lo - y_first, y_hi - y_first)
    cols = slice(cx_lo - x_lo, cx_hi - x_lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(weights[rows, cols] > 0, numerator[:, rows, cols] / weights[rows, cols], np.nan)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part.npz")
    np.savez(tmp, image=values[0].astype(np.float32),
             error=values[1].astype(np.float32) if planes == 2 else np.zeros((0, 0), np.float32),
             flags=flags[rows, cols])
    os.replace(tmp, out)
    return str(out)


# -- the driver side ---------------------------------------------------------------------

def _grid_only(job):
    """The Plan without its (possibly large) input maps: what every task needs to know."""
    return replace(job, inputs={}, filled={})


def assemble(job, blocks: list[Block], block_dir: Path, out_path: Path, overwrite: bool = False) -> Path:
    """The mosaic FITS from the block files in ``block_dir``, written row of blocks by row
    of blocks."""
    from .inference import MapWriter

    with_error = job.artifact.config.uncertainty_head
    writer = MapWriter(job.template(), job.shape, out_path, overwrite, with_error=with_error)
    try:
        by_row: dict[int, list[Block]] = {}
        for block in blocks:
            by_row.setdefault(block.index[0], []).append(block)
        for i in sorted(by_row):
            row = sorted(by_row[i], key=lambda b: b.index[1])
            parts = [np.load(Path(block_dir) / f"{b.name}.npz") for b in row]
            image = np.concatenate([p["image"] for p in parts], axis=1)
            error = np.concatenate([p["error"] for p in parts], axis=1) if with_error else None
            flags = np.concatenate([p["flags"] for p in parts], axis=1)
            writer.write_rows(row[0].core[0], image, error, flags)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def extract_mosaic(path: Path, blocks: list[Block], halo_pixels: int, **kwargs):
    """Sources of a mosaic, found block by block on the block plus a halo and kept in the
    block that owns their position, so sources in the overlaps appear once."""
    from astropy.table import vstack

    from .catalogue import extract_sources
    from .maps import read_map

    mosaic = read_map(path)
    tables = []
    for block in blocks:
        y_lo, y_hi, x_lo, x_hi = block.core
        a, b = max(y_lo - halo_pixels, 0), min(y_hi + halo_pixels, mosaic.shape[0])
        c, d = max(x_lo - halo_pixels, 0), min(x_hi + halo_pixels, mosaic.shape[1])
        sub = replace(mosaic, data=mosaic.data[a:b, c:d], wcs=mosaic.wcs[a:b, c:d],
                      noise=None if mosaic.noise is None else mosaic.noise[a:b, c:d],
                      flags=None if mosaic.flags is None else mosaic.flags[a:b, c:d])
        if not np.isfinite(sub.data).any():
            continue
        table = extract_sources(sub, **kwargs)
        x, y = np.asarray(table["x"]) + c, np.asarray(table["y"]) + a
        owned = (np.round(y) >= y_lo) & (np.round(y) < y_hi) & (np.round(x) >= x_lo) & (np.round(x) < x_hi)
        table = table[owned]
        table["x"], table["y"] = x[owned], y[owned]
        tables.append(table)
    merged = vstack(tables, metadata_conflicts="silent") if tables else extract_sources(mosaic, **kwargs)[:0]
    merged.sort("flux", reverse=True)
    merged["id"] = np.arange(1, len(merged) + 1)
    return merged


def field_stem(spire250) -> str:
    """A name for a field's outputs: the 250 µm file name without '250'/'PSW' and suffix."""
    name = Path(spire250).name
    for suffix in (".fits.gz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    for token in ("250", "PSW", "psw"):
        name = name.replace(token, "")
    return name.strip("_-. ") or "field"


def start_client(workers: int | None = None, scheduler: str | None = None):
    """A Dask client: on the cluster at ``scheduler``, or on a new ``LocalCluster`` of
    ``workers`` single-threaded processes (default one per 2 cores). Returns (client,
    cluster or None, TensorFlow threads per worker)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None, 1
    cores = os.cpu_count() or 2
    n = workers or max(1, cores // 2)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit=None)
    return Client(cluster), cluster, max(1, cores // n)


def survey_field(client, spire250: str, out: str, spire350: str | None = None, spire500: str | None = None,
                 model=None, tiles_per_block: int = 8, batch_size: int = 16, catalogue: bool = False,
                 overwrite: bool = False, progress: bool = True, snr: float = 4.0, min_flux_mjy: float = 2.0,
                 threads: int = 1) -> dict:
    """Super-resolve one SPIRE field (a 250 µm file; 350/500 found beside it) with the Dask
    ``client``.

    Writes ``out/<stem>_450.fits`` (and ``out/<stem>_450.ecsv`` with ``catalogue``), block
    files under ``out/blocks_<stem>/``. Blocks already there are not recomputed. Returns a
    summary (paths, blocks computed and skipped, seconds).
    """
    from dask.distributed import as_completed

    from .inference import input_maps, load_model, plan

    started = time.perf_counter()
    artifact = load_model(model)
    maps = input_maps(artifact, Path(spire250), spire350, spire500)
    stem = field_stem(spire250)
    out_dir = Path(out)
    mosaic_path, catalogue_path = out_dir / f"{stem}_450.fits", out_dir / f"{stem}_450.ecsv"
    for path in [mosaic_path] + ([catalogue_path] if catalogue else []):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: already exists; choose another folder or allow overwriting it")
    job = plan(maps, artifact)
    paths = {b: str(Path(maps[b].source).resolve()) for b in artifact.config.input_bands}
    # Noise estimated from the whole map (not from a block) when the file carries none.
    noise_values = {b: float(np.nanmedian(job.inputs[b].noise)) for b in paths
                    if maps[b].noise is None and job.inputs[b].noise is not None}
    blocks = plan_blocks(job.ys, job.xs, job.shape, job.tile, tiles_per_block)
    block_dir = out_dir / f"blocks_{stem}"
    done = {b.name for b in blocks if (block_dir / f"{b.name}.npz").exists()}
    todo = [b for b in blocks if b.name not in done]
    summary = {"field": str(spire250), "blocks": len(blocks), "skipped": len(done), "computed": 0}
    if progress:
        print(f"{stem}: {len(blocks)} blocks of up to {tiles_per_block}×{tiles_per_block} tiles, {len(done)} "
              "already done", flush=True)
    futures = client.map(run_block, todo, job=_grid_only(job), paths=paths, model=str(artifact.path),
                         out_dir=str(block_dir), noise_values=noise_values, batch_size=batch_size,
                         threads=threads, pure=False, retries=3)
    t0 = time.perf_counter()
    for k, future in enumerate(as_completed(futures), 1):
        future.result()
        summary["computed"] += 1
        if progress:
            rate = k / (time.perf_counter() - t0)
            eta = (len(todo) - k) / rate if rate > 0 else math.inf
            print(f"{stem}: block {len(done) + k}/{len(blocks)}  {rate * 60:.1f} blocks/min  ETA {eta / 60:.1f} min",
                  flush=True)
    summary["mosaic"] = str(assemble(job, blocks, block_dir, mosaic_path, overwrite))
    if catalogue:
        from .catalogue import write_catalogue

        halo = int(np.ceil(3 * job.tile / 4))
        table = extract_mosaic(mosaic_path, blocks, halo, snr=snr, min_flux_mjy=min_flux_mjy)
        write_catalogue(table, catalogue_path, overwrite=overwrite)
        summary["catalogue"], summary["sources"] = str(catalogue_path), len(table)
    summary["seconds"] = time.perf_counter() - started
    return summary


def survey(fields: list[str], out: str, workers: int | None = None, scheduler: str | None = None,
           progress: bool = True, **kwargs) -> list[dict]:
    """:func:`survey_field` for every 250 µm file in ``fields``, on one Dask cluster (see
    :func:`start_client`); the dashboard address is printed."""
    client, cluster, threads = start_client(workers, scheduler)
    try:
        if progress:
            n = len(client.scheduler_info().get("workers", {}))
            print(f"Dask: {n} worker(s); dashboard {client.dashboard_link}", flush=True)
        return [survey_field(client, field, out, progress=progress, threads=threads, **kwargs) for field in fields]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
