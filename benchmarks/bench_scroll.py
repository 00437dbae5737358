"""Full-scroll inference benchmark: a zarr volume larger than this machine's RAM, block-wise on dask workers.

The input is a synthetic 3456³ uint8 zarr (41 GB logical, 128³ chunks) that is mostly air, as a real
scroll scan is: only a few scanned regions with the synthetic fragment texture (``core/synthetic``) are
stored; every other chunk is missing and reads as 0. The model is the built-in U-Net preset ``tiny``
(random weights, patch 64³), step 0.5, fp32 on CPU. The run is ``core.scroll.predict_scroll`` as the
CLI runs it: a ``LocalCluster`` of 2 worker processes (``--workers 1 2``: 1, then 2; one torch thread
each), default blocks (512³), OME-Zarr output with its pyramid. Reported: wall time (cluster start
included) and run time, voxels/s of the whole volume, of the non-air blocks and of the scanned voxels,
the share of blocks skipped as air, the tiles recomputed at block borders, and the peak RSS of each
worker process and of the client (sampled every 0.2 s with psutil).

The cost per scanned voxel is compared with the in-memory engine the same way on both sides: seconds
per million voxels of the scanned regions; block-wise, the run's worker-seconds (run time × workers);
in memory, ``predict_volume`` in its own process set up as the ``predict`` command (glibc heap kept,
one torch thread) on every scanned region, each read on the whole-volume tile grid so that it runs the
tiles a whole-volume pass runs there. The outputs of the worker counts must be identical.

Run (heavy, ~10 min on 2 cores; ``--workers 1 2`` ~16 min): ``flock /tmp/team/heavy.lock python
benchmarks/bench_scroll.py``; ``--quick`` for a small check (896³, one 128³ region across 8 blocks),
``--regions 3`` for the full volume with only its third region (a single block).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from napari_vesuvius.core.progress import ConsoleProgress, run_job

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench_data" / "scroll"
PATCH = 64
#: (corner z, y, x), (size z, y, x), seed: scanned regions; the first straddles block borders on every axis
REGIONS = [
    ((896, 896, 896), (256, 256, 256), 11),
    ((2200, 600, 2900), (256, 256, 192), 12),
    ((3300, 3100, 200), (128, 256, 256), 13),
]
QUICK_REGIONS = [((448, 448, 448), (128, 128, 128), 11)]


def make_input(size: int, regions: list[Any], name: str = "") -> tuple[Path, int]:
    """The sparse synthetic scan (reused if its layout matches); returns (path, non-zero voxels)."""
    import zarr

    from napari_vesuvius.core.synthetic import make_fragment

    path = DATA / f"scroll_{size}{name}.zarr"
    layout = json.dumps({"size": size, "regions": regions})
    if path.exists():
        array = zarr.open_array(str(path), mode="r")
        if array.attrs.get("bench_layout") == layout:
            return path, int(array.attrs["scanned_voxels"])
    DATA.mkdir(parents=True, exist_ok=True)
    array = zarr.create_array(
        store=str(path), shape=(size,) * 3, chunks=(128,) * 3, dtype="uint8", fill_value=0, overwrite=True
    )
    scanned = 0
    for corner, shape, seed in regions:
        image = make_fragment(tuple(shape), seed=seed).image
        array[tuple(slice(c, c + n) for c, n in zip(corner, shape, strict=True))] = image
        scanned += int(np.count_nonzero(image))
    array.attrs.update({"bench_layout": layout, "scanned_voxels": scanned})
    return path, scanned


def make_model() -> Path:
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset

    path = DATA / f"tiny{PATCH}.pt"
    if not path.exists():
        torch.manual_seed(0)
        config = preset("tiny")
        save_checkpoint(path, build_unet(config), config, Normalization(), (PATCH,) * 3, {"note": "random"})
    return path


class RssSampler:
    """Peak RSS per dask worker process (children started by multiprocessing spawn) and of this process."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[int, float] = {}
        self.client = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.client = max(self.client, me.memory_info().rss / 2**20)
            for child in me.children(recursive=True):
                try:
                    if any("spawn_main" in part for part in child.cmdline()):
                        rss = child.memory_info().rss / 2**20
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), rss)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _reference_process() -> None:
    """A reference process set up as the in-memory ``predict`` command is: heap kept, one torch thread."""
    import torch

    from napari_vesuvius.core.heap import keep_freed_memory

    keep_freed_memory(single_arena=True)
    torch.set_num_threads(1)


def reference_box(shape: Any, region: Any) -> tuple[slice, ...]:
    """The scanned region widened to the whole-volume tile grid's tiles that touch it.

    With a step of exactly half a patch (volume edge = patch + k · step, as here) the engine's own grid
    over this box is the whole volume's grid, so it runs exactly the tiles a whole-volume in-memory pass
    runs over the region (a box aligned anywhere else runs a differently placed grid: up to one tile
    per axis more or fewer).
    """
    from napari_vesuvius.core.inference.blocks import axis_tiles

    corner, size, _ = region
    axes = axis_tiles(shape, (PATCH,) * 3, 0.5)
    return tuple(slice(*a.input_range(c, c + n)[:2]) for a, c, n in zip(axes, corner, size, strict=True))


def reference_region(path: Path, model_path: Path, region: Any) -> tuple[float, int, float]:
    """In-memory engine on one scanned region's :func:`reference_box`: seconds (sliding window only,
    as the run's block seconds), tiles run, CPU seconds. Runs in a :func:`_reference_process`."""
    import zarr

    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model

    array = zarr.open_array(str(path), mode="r")
    data, model = array[reference_box(array.shape, region)], load_model(model_path)
    cpu = time.process_time()
    result = predict(data, model, device="cpu", precision="fp32", output_dtype="uint8")
    return result.elapsed_s, result.tiles_run, time.process_time() - cpu


def reference_seconds(path: Path, model_path: Path, regions: list[Any]) -> tuple[float, int, float]:
    """The in-memory engine over every scanned region, in one fresh process: seconds, tiles, CPU s."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_reference_process) as pool:
        runs = [pool.submit(reference_region, path, model_path, r).result() for r in regions]
    return sum(r[0] for r in runs), sum(r[1] for r in runs), sum(r[2] for r in runs)


def run_workers(path: Path, model_path: Path, workers: int) -> tuple[Any, float, RssSampler, Path]:
    from napari_vesuvius.core.inference.models import ModelSpec
    from napari_vesuvius.core.scroll import predict_scroll

    output = DATA / f"pred_{path.stem}_{workers}w.ome.zarr"
    job = predict_scroll(
        path, output, [ModelSpec(model_path)], workers=workers, torch_threads=1, device="cpu",
        precision="fp32", ome=True, overwrite=True,
    )  # fmt: skip
    start = time.perf_counter()
    with RssSampler() as sampler:
        result = run_job(job, ConsoleProgress(f"{workers} worker(s)"))
    return result, time.perf_counter() - start, sampler, output


def _datasets(output: Path) -> list[Any]:
    import zarr

    return zarr.open_group(str(output), mode="r").attrs["multiscales"][0]["datasets"]


def same_output(a: Path, b: Path, regions: list[Any]) -> bool:
    """Level 0 of both outputs over every scanned region plus one patch of margin (elsewhere both are 0:
    outside the scan the probability is 0)."""
    import zarr

    first, second = zarr.open_group(str(a), mode="r")["0"], zarr.open_group(str(b), mode="r")["0"]
    for corner, shape, _ in regions:
        box = tuple(slice(max(0, c - PATCH), c + n + PATCH) for c, n in zip(corner, shape, strict=True))
        if not np.array_equal(first[box], second[box]):
            return False
    return True


def main() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._report import markdown_table, peak_rss_mb, write_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="896³ with one 128³ region (a check, not a benchmark)"
    )
    parser.add_argument(
        "--regions", type=int, nargs="+", choices=range(1, len(REGIONS) + 1), metavar="N",
        help="only these scanned regions (1 to 3) of the full volume: a shorter check, printed, not written",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[2],
        help="a run with each number of workers (default: 2; '1 2' adds the 1-worker row: ~6 min more)",
    )  # fmt: skip
    args = parser.parse_args()
    size, regions, name = (896, QUICK_REGIONS, "") if args.quick else (3456, REGIONS, "")
    if args.regions and not args.quick:
        chosen = sorted(set(args.regions))
        regions, name = [REGIONS[i - 1] for i in chosen], "_r" + "".join(str(i) for i in chosen)
    start = time.perf_counter()
    path, scanned = make_input(size, regions, name)
    print(f"input {path}: {size}³ = {size**3 / 1e9:.1f} GB logical, {scanned / 1e6:.1f} M scanned voxels "
          f"({time.perf_counter() - start:.0f}s to prepare)")  # fmt: skip
    model_path = make_model()
    region_voxels = sum(int(np.prod(shape)) for _, shape, _ in regions)
    ref_s, ref_tiles, ref_cpu = reference_seconds(path, model_path, regions)
    ref_rate = ref_s / (region_voxels / 1e6)  # seconds per M scanned voxels
    ref_cpu_rate = ref_cpu / (region_voxels / 1e6)
    print(f"in-memory reference: {ref_tiles} tiles over {len(regions)} region(s) ({region_voxels / 1e6:.1f} "
          f"M scanned voxels) in {ref_s:.1f}s = {ref_rate:.2f} s per M")  # fmt: skip
    rows, outputs, base, levels, distinct = [], [], None, 0, 0
    for workers in args.workers:
        result, wall, sampler, output = run_workers(path, model_path, workers)
        outputs.append(output)
        levels = len(_datasets(output))
        distinct = result.tiles_with_data
        busy_voxels = result.compute_voxels_per_s * result.elapsed_s
        base = base or wall
        worker_peak = max(sampler.peaks.values()) if sampler.peaks else float("nan")
        share = 100 * result.blocks_air / result.blocks_total
        air = f"{result.blocks_air}/{result.blocks_total} ({share:.1f} %)"
        rate = result.elapsed_s * workers / (region_voxels / 1e6)  # worker·s per M scanned voxels
        cpu_rate = result.worker_cpu_s / (region_voxels / 1e6)  # worker CPU·s per M scanned voxels
        print(f"{workers} worker(s): {rate:.2f} worker·s per M scanned voxels vs in-memory {ref_rate:.2f} "
              f"= {rate / ref_rate:.2f}× (CPU: {cpu_rate:.2f} vs {ref_cpu_rate:.2f} = "
              f"{cpu_rate / ref_cpu_rate:.2f}×)")  # fmt: skip
        rows.append([
            workers, f"{wall:.0f}", f"{result.elapsed_s:.0f}", f"{base / wall:.2f}×", air,
            f"{size**3 / wall / 1e6:.1f}", f"{busy_voxels / wall / 1e6:.2f}", f"{scanned / wall / 1e6:.3f}",
            f"{result.recompute:.2f}", f"{rate:.2f} ({rate / ref_rate:.2f}×)",
            f"{cpu_rate:.2f} ({cpu_rate / ref_cpu_rate:.2f}×)", f"{worker_peak:.0f}",
            f"{sampler.client:.0f}",
        ])  # fmt: skip
    identical = len(outputs) < 2 or all(same_output(outputs[0], other, regions) for other in outputs[1:])
    header = ["workers", "wall (s)", "run (s)", "speed-up (wall)", "air blocks skipped",
              "Mvox/s whole volume", "Mvox/s non-air blocks", "Mvox/s scanned", "recompute",
              "worker·s per M scanned voxels (vs in-memory)", "worker CPU·s per M (vs in-memory)",
              "peak RSS / worker (MiB)",
              "client peak RSS (MiB)"]  # fmt: skip
    body = (
        f"Input: synthetic {size}³ uint8 zarr ({size**3 / 1e9:.1f} GB logical; this machine has "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM), 128³ chunks, {len(regions)} scanned regions "
        f"({region_voxels / 1e6:.1f} M voxels, {scanned / 1e6:.1f} M of them non-zero = "
        f"{100 * scanned / size**3:.3f} % of the volume); everything else is air (chunks not stored). "
        f"Model: preset `tiny`, patch {PATCH}³, random weights, step 0.5, fp32, CPU. Blocks "
        f"{result.settings['block_size']}³, OME-Zarr output with a {levels}-level max-pooled pyramid, "
        f"LocalCluster of worker processes with one torch thread each.\n\n"
        + markdown_table(header, rows)
        + "\n\nWall = the whole command incl. cluster start and model shipping; run = first block submitted "
        "→ last block recorded. Mvox/s: the whole volume, the voxels of the computed (non-air) blocks and "
        "the non-zero voxels, each per wall second. Recompute = tiles with data run per distinct such tile "
        f"({distinct} distinct): a tile straddling a block border runs once per block it touches; the first "
        "region was placed across a corner of 8 blocks (worst case), inside a large scan the factor is "
        "about (1 + patch / (2 · block))³ = 1.2. Cost per scanned voxel, the same on both sides: seconds "
        f"per million voxels of the scanned regions ({region_voxels / 1e6:.1f} M); block-wise = run × "
        "workers (worker-seconds, idle workers at the end included); reference = the in-memory engine "
        "(`predict_volume`, one process set up as the `predict` command: glibc heap kept, one torch "
        "thread) on every region, each widened to the whole-volume tile grid's tiles that touch it, so it "
        f"runs the tiles a whole-volume pass runs there ({ref_tiles} tiles, {distinct} distinct tiles with "
        f"data in the block-wise run): {ref_s:.0f} s = {ref_rate:.2f} s per M; the whole-volume pass would "
        "also read and normalise every air row, so this is its lower bound. CPU·s: the CPU seconds of the "
        f"worker processes during their block tasks, against the reference's ({ref_cpu_rate:.2f} per M): "
        "they grow less than worker-seconds when other programs share the cores, but they omit "
        "workers waiting for work. "
        + (
            f"Outputs of {' and '.join(str(w) for w in args.workers)} worker(s) identical: "
            f"{'yes' if identical else 'NO'}. "
            if len(outputs) > 1
            else ""
        )
        + f"Benchmark process peak RSS {peak_rss_mb():.0f} MiB (the output "
        "comparison included; the reference runs in its own process)."
    )
    workers = "" if args.workers == [2] else " --workers " + " ".join(str(w) for w in args.workers)
    command = "flock /tmp/team/heavy.lock python benchmarks/bench_scroll.py" + workers
    if args.quick or name:
        print(body)
    else:
        write_section("scroll", "Full-scroll inference (block-wise, dask workers, CPU)", body, command)


if __name__ == "__main__":
    main()
