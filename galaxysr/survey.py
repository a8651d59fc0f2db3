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
from astropy import units as u

from .catalogue import DEFAULT_METHOD
from .config import HEAD_P_MIN

__all__ = ["Block", "plan_blocks", "block_done", "run_block", "survey", "survey_field", "up_to_date", "start_client", "assemble",
           "extract_mosaic", "draw_mosaic", "field_stem"]

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


def _read_cutout(path: str, band: str, job, region: tuple[int, int, int, int], noise_value: float | None,
                 background: str | None = None):
    """The part of the input map ``path`` under output pixels ``region`` (+ margin), as a
    Map in mJy/beam with its noise (the file's noise map, or ``noise_value`` everywhere),
    less the background the driver measured on the whole map (``background``: a ``.npy``
    file on the input's grid, read memory-mapped), as prediction removes it."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from .maps import MJY_PER_BEAM, MapError, map_from_parts
    from .maps.fits_io import image_hdu_index

    y_lo, y_hi, x_lo, x_hi = region
    corners_x = np.array([x_lo, x_hi, x_lo, x_hi], float) - 0.5
    corners_y = np.array([y_lo, y_lo, y_hi, y_hi], float) - 0.5
    world = job.wcs.pixel_to_world_values(corners_x, corners_y)
    with fits.open(path, memmap=True) as hdul:
        index = image_hdu_index(hdul, None, path)
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
    if background is not None:
        level = np.load(background, mmap_mode="r")[i0:i1, j0:j1]
        cut = replace(cut, data=(cut.data - level).astype(np.float32))
    if cut.noise is None and noise_value is not None:
        cut = replace(cut, noise=np.full(cut.shape, noise_value, np.float32))
    return cut


def block_done(path: Path, with_cells: bool) -> bool:
    """Whether the block file ``path`` is finished — for a catalogue-head network (``with_cells``),
    with its cells (a block written before the survey kept them is made again)."""
    if not Path(path).exists():
        return False
    if not with_cells:
        return True
    with np.load(path) as saved:
        return "cells" in saved.files and saved["cells"].size > 0


def run_block(block: Block, job, paths: dict, model: str, out_dir: str, noise_values: dict,
              batch_size: int = 16, threads: int = 1, backgrounds: dict | None = None) -> str:
    """Compute one block and write ``out_dir/<name>.npz`` atomically; a block already on
    disk is not recomputed. Returns the file's path."""
    from .cells import CELL_CHANNELS, CELL_PIXELS
    from .inference import StripRunner, StripSums
    from .noise import fill_gaps

    out = Path(out_dir) / f"{block.name}.npz"
    artifact = _model(model, threads)
    if block_done(out, "cells" in artifact.config.output_channels):
        return str(out)
    tile = job.tile
    r0, r1 = block.rows
    c0, c1 = block.cols
    y_first, y_last = job.ys[r0], job.ys[r1 - 1] + tile
    x_lo, x_hi = job.xs[c0], job.xs[c1 - 1] + tile
    inputs, filled = {}, {}
    for band, path in paths.items():
        cut = _read_cutout(path, band, job, (y_first, y_last, x_lo, x_hi), noise_values.get(band),
                           (backgrounds or {}).get(band))
        if cut is None:
            inputs = None
            break
        inputs[band], filled[band] = fill_gaps(cut)
    y_lo, y_hi, cx_lo, cx_hi = block.core
    config = artifact.config
    # A catalogue-head network's cells are kept once per cell: its blocks' cores start on cell
    # borders, as its tiles do (even tile origins, :func:`galaxysr.inference.plan`).
    if "cells" in config.output_channels and (y_lo % CELL_PIXELS or cx_lo % CELL_PIXELS):
        raise ValueError(f"{block.name}: its core starts at pixel ({y_lo}, {cx_lo}), not on a border of the "
                         f"catalogue head's {CELL_PIXELS}-pixel cells; plan blocks from the plan's tile origins")
    sums = StripSums(y_last - y_first, x_hi - x_lo, 2 if config.uncertainty_head else 1,
                     config.sky_oversample if config.has_sky else 0,
                     CELL_CHANNELS if "cells" in config.output_channels else 0)
    if inputs is not None:
        runner = StripRunner(replace(job, artifact=artifact, inputs=inputs, filled=filled), batch_size)
        for y0 in job.ys[r0:r1]:
            result = runner.run(y0, x_lo, x_hi, job.xs[c0:c1])
            if result is not None:
                sums.add(y0 - y_first, result)
    image, error, flags, sky, cells = sums.blended(slice(y_lo - y_first, y_hi - y_first),
                                                   slice(cx_lo - x_lo, cx_hi - x_lo))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part.npz")
    empty = np.zeros((0, 0), np.float32)
    np.savez(tmp, image=image, error=empty if error is None else error, flags=flags,
             sky=empty if sky is None else sky,
             cells=empty if cells is None else cells)
    os.replace(tmp, out)
    return str(out)


# -- the driver side ---------------------------------------------------------------------

def _grid_only(job):
    """The Plan without its (possibly large) input maps: what every task needs to know."""
    return replace(job, inputs={}, filled={})


def assemble(job, blocks: list[Block], block_dir: Path, out_path: Path, overwrite: bool = False) -> Path:
    """The mosaic FITS from the block files in ``block_dir``, written row of blocks by row
    of blocks."""
    from .cells import CELL_PIXELS
    from .inference import MapWriter

    config = job.artifact.config
    with_error = config.uncertainty_head
    f = config.sky_oversample if config.has_sky else 0
    cell = CELL_PIXELS if "cells" in config.output_channels else 0
    template = job.template()
    if "cells" in config.output_channels:
        # A catalogue-head network's per-pixel map, whose sources are wider than the beam: say how
        # wide. It keeps the cells, from which the catalogue is read block by block (extract_mosaic)
        # and drawn (draw_mosaic), as predict draws its map.
        measured = job.artifact.calibration.fwhm_arcsec
        template = replace(template, fwhm=None if measured is None else measured * u.arcsec,
                           meta={**template.meta, "GSRPLANE": ("per-pixel map", "not drawn: draw_mosaic draws from it")})
    writer = MapWriter(template, job.shape, out_path, overwrite, with_error=with_error, sky_oversample=f,
                       cell_pixels=cell)
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
            sky = np.concatenate([p["sky"] for p in parts], axis=1) if f else None
            cells = np.concatenate([p["cells"] for p in parts], axis=1) if cell else None
            writer.write_rows(row[0].core[0], image, error, flags, sky, cells)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def extract_mosaic(path: Path, blocks: list[Block], halo_pixels: int, **kwargs):
    """Sources of a mosaic, found block by block on the block plus a halo and kept in the
    block that owns their position, so sources in the overlaps appear once. Each block is read
    alone (:func:`galaxysr.maps.read_map_section`): memory holds a block, not the mosaic. A
    catalogue-head network's mosaic (with ``CELLS``) gives each block its cells: the halo is
    rounded up to whole cells, and block cores start on cell borders."""
    from astropy.io import fits
    from astropy.table import vstack

    from .catalogue import extract_sources, owned_rows
    from .maps import read_map_section

    with fits.open(path, memmap=True) as hdul:
        ny, nx = hdul[0].shape
        k = int(hdul["CELLS"].header.get("CELLPIX", 2)) if "CELLS" in hdul else 1
    halo_pixels = -(-halo_pixels // k) * k
    tables, sub = [], None
    for block in blocks:
        y_lo, y_hi, x_lo, x_hi = block.core
        if y_lo % k or x_lo % k:
            raise ValueError(f"{path}: {block.name} starts at pixel ({y_lo}, {x_lo}), not on a border of the "
                             f"mosaic's {k}-pixel cells; plan blocks from the mosaic's tile origins")
        a, b = max(y_lo - halo_pixels, 0), min(y_hi + halo_pixels, ny)
        c, d = max(x_lo - halo_pixels, 0), min(x_hi + halo_pixels, nx)
        sub = replace(read_map_section(path, (a, b), (c, d)), source=str(path))
        if not np.isfinite(sub.data).any():
            continue
        tables.append(owned_rows(extract_sources(sub, **kwargs), (a, c), block.core))
    if tables:
        merged = vstack(tables, metadata_conflicts="silent")
    else:  # nothing on data: the catalogue's columns, empty
        merged = extract_sources(sub if sub is not None else read_map_section(path, (0, ny), (0, nx)), **kwargs)[:0]
    merged.sort("flux", reverse=True)
    merged["id"] = np.arange(1, len(merged) + 1)
    return merged


def draw_mosaic(job, per_pixel: Path, table, out_path: Path, overwrite: bool = False, rows: int = 512) -> Path:
    """A catalogue-head network's mosaic as ``predict`` makes its map
    (:func:`galaxysr.inference.draw_head_map`): ``table``'s sources — every detection the head
    decodes (:func:`extract_mosaic` at p_real ≥ 0 and no floor) — drawn through the band's beam
    (:func:`galaxysr.catalogue.draw_catalogue`) as the image, and the per-pixel mosaic
    ``per_pixel`` (:func:`assemble`'s) as ``MEAN``, its ``ERROR``, ``FLAGS``, ``SKYMODEL`` and
    ``CELLS`` kept. Written ``rows`` rows at a time: memory holds a chunk and the table."""
    from astropy.io import fits

    from .catalogue import draw_catalogue, drawn_cards
    from .cells import CELL_PIXELS
    from .inference import MapWriter
    from .instruments import FWHM_PER_SIGMA
    from .maps import Map

    config = job.artifact.config
    measured = job.artifact.calibration.fwhm_arcsec
    template = job.template()
    template = replace(template, meta={**template.meta, **drawn_cards(len(table))})
    f = config.sky_oversample if config.has_sky else 0
    c = CELL_PIXELS
    rows = -(-rows // c) * c  # chunks start on cell borders
    writer = MapWriter(template, job.shape, out_path, overwrite, with_error=config.uncertainty_head, sky_oversample=f,
                       cell_pixels=c, with_mean=True, mean_fwhm=None if measured is None else measured * u.arcsec)
    y = np.asarray(table["y"], float)
    reach = 5 * float((template.band.fwhm / template.pixel_scale).decompose()) / FWHM_PER_SIGMA + 2
    try:
        with fits.open(per_pixel, memmap=True) as hdul:
            for y0 in range(0, job.shape[0], rows):
                y1 = min(y0 + rows, job.shape[0])
                mean = np.asarray(hdul[0].data[y0:y1], np.float32)
                near = (y > y0 - reach) & (y < y1 + reach)
                chunk = table[near]
                chunk["y"] = y[near] - y0  # the sources that reach these rows, on the chunk's grid
                drawn = draw_catalogue(chunk, Map(mean, template.wcs[y0:y1, :], template.band))
                error = np.asarray(hdul["ERROR"].data[y0:y1], np.float32) if config.uncertainty_head else None
                sky = np.asarray(hdul["SKYMODEL"].data[f * y0:f * y1], np.float32) if f else None
                cells = np.moveaxis(np.asarray(hdul["CELLS"].data[:, y0 // c:-(-y1 // c)], np.float32), 0, -1)
                writer.write_rows(y0, drawn, error, np.asarray(hdul["FLAGS"].data[y0:y1], np.uint8), sky, cells,
                                  mean=mean)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


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
                 threads: int = 1, background: str | None = None, method: str | None = None,
                 p_min: float = HEAD_P_MIN) -> dict:
    """Super-resolve one SPIRE field (a 250 µm file; 350/500 found beside it) with the Dask
    ``client``.

    Writes ``out/<stem>_450.fits`` (and ``out/<stem>_450.ecsv`` with ``catalogue``), block
    files under ``out/blocks_<stem>/``. Blocks already there are not recomputed. The catalogue
    ``method`` defaults to the model's own, as ``predict``'s does: its catalogue head's
    (``p_real`` ≥ ``p_min``) for a model that has one, else PSF fits (S/N ≥ ``snr``). Returns a
    summary (paths, blocks computed and skipped, seconds).
    """
    from dask.distributed import as_completed

    from .inference import input_maps, load_model, outputs_to_make, plan

    started = time.perf_counter()
    artifact = load_model(model)
    method = _method(artifact, method, catalogue)
    maps = input_maps(artifact, Path(spire250), spire350, spire500)
    made_from, listed, mosaic_path, catalogue_path = _provenance(artifact, maps, spire250, out, background, snr,
                                                                 min_flux_mjy, method, p_min)
    need_mosaic, need_catalogue = outputs_to_make([(mosaic_path, "GSRPROV", made_from),
                                                   (catalogue and catalogue_path, "GSRCAT", listed)], overwrite)
    stem = field_stem(spire250)
    out_dir = Path(out)
    if not (need_mosaic or need_catalogue):
        return {"field": str(spire250), "mosaic": str(mosaic_path), "up_to_date": True, "blocks": 0, "skipped": 0,
                "computed": 0, "seconds": time.perf_counter() - started,
                **({"catalogue": str(catalogue_path)} if catalogue else {})}
    job = plan(maps, artifact, background=background, header_extra={"GSRPROV": made_from})
    paths = {b: str(Path(maps[b].source).resolve()) for b in artifact.config.input_bands}
    block_dir = out_dir / f"blocks_{stem}"
    block_dir.mkdir(parents=True, exist_ok=True)
    # The background is measured on the whole map, once, and every block removes its part.
    backgrounds = {}
    for band, level in job.backgrounds.items():
        if level is not None:
            backgrounds[band] = str(block_dir / f"background_{band}.npy")
            np.save(backgrounds[band], level)
    if progress:
        for note in job.notes:
            print(f"{stem}: {note}", flush=True)
    # Noise estimated from the whole map (not from a block) when the file carries none.
    noise_values = {b: float(np.nanmedian(job.inputs[b].noise)) for b in paths
                    if maps[b].noise is None and job.inputs[b].noise is not None}
    blocks = plan_blocks(job.ys, job.xs, job.shape, job.tile, tiles_per_block)
    with_cells = "cells" in artifact.config.output_channels
    done = {b.name for b in blocks if block_done(block_dir / f"{b.name}.npz", with_cells)}
    todo = [b for b in blocks if b.name not in done]
    summary = {"field": str(spire250), "blocks": len(blocks), "skipped": len(done), "computed": 0}
    if progress:
        print(f"{stem}: {len(blocks)} blocks of up to {tiles_per_block}×{tiles_per_block} tiles, {len(done)} "
              "already done", flush=True)
    futures = client.map(run_block, todo, job=_grid_only(job), paths=paths, model=str(artifact.path),
                         out_dir=str(block_dir), noise_values=noise_values, batch_size=batch_size,
                         threads=threads, backgrounds=backgrounds, pure=False, retries=3)
    t0 = time.perf_counter()
    for k, future in enumerate(as_completed(futures), 1):
        future.result()
        summary["computed"] += 1
        if progress:
            rate = k / (time.perf_counter() - t0)
            eta = (len(todo) - k) / rate if rate > 0 else math.inf
            print(f"{stem}: block {len(done) + k}/{len(blocks)}  {rate * 60:.1f} blocks/min  ETA {eta / 60:.1f} min",
                  flush=True)
    halo = int(np.ceil(3 * job.tile / 4))
    if need_mosaic and with_cells:
        # As predict does: the head's catalogue of the per-pixel mosaic, drawn through the beam.
        per_pixel = assemble(job, blocks, block_dir, block_dir / "per_pixel.fits", overwrite=True)
        drawn = extract_mosaic(per_pixel, blocks, halo, method="head", p_min=0.0, min_flux_mjy=-np.inf)
        summary["mosaic"] = str(draw_mosaic(job, per_pixel, drawn, mosaic_path, overwrite=True))
        Path(per_pixel).unlink()
    else:
        summary["mosaic"] = str(assemble(job, blocks, block_dir, mosaic_path, overwrite=True) if need_mosaic
                                else mosaic_path)
    if need_catalogue:
        from .catalogue import write_catalogue

        options = {"p_min": p_min} if method == "head" else {"snr": snr}
        table = extract_mosaic(mosaic_path, blocks, halo, min_flux_mjy=min_flux_mjy, method=method, **options)
        table.meta["GSRCAT"] = listed
        write_catalogue(table, catalogue_path, overwrite=True)
        summary["catalogue"], summary["sources"] = str(catalogue_path), len(table)
    summary["seconds"] = time.perf_counter() - started
    return summary


def _method(artifact, method: str | None, catalogue: bool) -> str:
    """The catalogue method of a survey: ``method``, or the model's own (its head's, if it has one)."""
    with_cells = "cells" in artifact.config.output_channels
    if method is None:
        return "head" if with_cells else DEFAULT_METHOD
    if catalogue and method == "head" and not with_cells:
        raise ValueError(f"{artifact.name}: has no catalogue head, so no head catalogue; use --catalogue-method "
                         "psf or sky, or a model trained with --catalogue-head")
    return method


def _provenance(artifact, maps: dict, spire250, out, background, snr, min_flux_mjy, method, p_min):
    """(mosaic digest, catalogue digest, mosaic path, catalogue path) of a field: as predict
    records them, so an unchanged field is up to date."""
    from .inference import digest, provenance

    stem = field_stem(spire250)
    made_from = provenance({b: m.source for b, m in maps.items()}, artifact,
                           {"overlap": None, "background": background or artifact.conventions.background})
    listed = digest(made_from, snr, min_flux_mjy, method, *((p_min,) if method == "head" else ()))
    return made_from, listed, Path(out) / f"{stem}_450.fits", Path(out) / f"{stem}_450.ecsv"


def up_to_date(spire250, out: str, model=None, spire350=None, spire500=None, catalogue: bool = False,
               snr: float = 4.0, min_flux_mjy: float = 2.0, background: str | None = None, method: str | None = None,
               p_min: float = HEAD_P_MIN, **_) -> bool:
    """Whether a field's mosaic (and catalogue) already exist from the same inputs, model and
    options — checked without starting any cluster. An existing output made otherwise raises
    :class:`~galaxysr.errors.OutputExistsError` here, before any cluster starts."""
    from .inference import input_maps, load_model, outputs_to_make

    artifact = load_model(model)
    method = _method(artifact, method, catalogue)
    maps = input_maps(artifact, Path(spire250), spire350, spire500)
    made_from, listed, mosaic, cat = _provenance(artifact, maps, spire250, out, background, snr, min_flux_mjy,
                                                 method, p_min)
    return not any(outputs_to_make([(mosaic, "GSRPROV", made_from), (catalogue and cat, "GSRCAT", listed)], False))


def survey(fields: list[str], out: str, workers: int | None = None, scheduler: str | None = None,
           progress: bool = True, **kwargs) -> list[dict]:
    """:func:`survey_field` for every 250 µm file in ``fields``, on one Dask cluster (see
    :func:`start_client`); the dashboard address is printed. Fields whose outputs are up to
    date (:func:`up_to_date`) are skipped, and if all are, no cluster is started;
    ``overwrite=True`` remakes them all."""
    pending = [f for f in fields if kwargs.get("overwrite") or not up_to_date(f, out, **kwargs)]
    done = [{"field": str(f), "mosaic": str(Path(out) / f"{field_stem(f)}_450.fits"), "up_to_date": True,
             "blocks": 0, "skipped": 0, "computed": 0, "seconds": 0.0} for f in fields if f not in pending]
    if not pending:
        return done
    client, cluster, threads = start_client(workers, scheduler)
    try:
        if progress:
            n = len(client.scheduler_info().get("workers", {}))
            print(f"Dask: {n} worker(s); dashboard {client.dashboard_link}", flush=True)
        return done + [survey_field(client, field, out, progress=progress, threads=threads, **kwargs)
                       for field in pending]
    finally:
        client.close()
        if cluster is not None:
            # A worker that takes over 4 s to exit (TensorFlow's teardown on a loaded machine)
            # is killed by its nanny with a WARNING line: nothing for the user to act on.
            import logging

            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            cluster.close()
