"""Full-scroll inference benchmark: a zarr volume larger than this machine's RAM, block-wise on dask workers.

The input is a synthetic 3456³ uint8 zarr (41 GB logical, 128³ chunks) that is mostly air, as a real
scroll scan is: only a few scanned regions with the synthetic fragment texture (``core/synthetic``) are
stored; every other chunk is missing and reads as 0. The model is the built-in U-Net preset ``tiny``
(random weights, patch 64³), step 0.5, fp32 on CPU. The run is ``core.scroll.predict_scroll`` as the
CLI runs it: a ``LocalCluster`` of 1 and then 2 worker processes (one torch thread each), default blocks
(512³), OME-Zarr output with its pyramid. Reported: wall time (cluster start included) and run time,
voxels/s of the whole volume, of the non-air blocks and of the scanned voxels, the share of blocks
skipped as air, the tiles recomputed at block borders, and the peak RSS of each worker process and of
the client (sampled every 0.2 s with psutil). Reference: the in-memory engine (``predict_volume``, one
process, one torch thread) on the largest scanned region with one patch of air around it gives the
seconds per tile; the distinct tiles with data of the run times that is the in-memory equivalent.
The 1- and 2-worker outputs must be identical.

Run (heavy, ~20 min on 2 cores): ``flock /tmp/team/heavy.lock python benchmarks/bench_scroll.py``;
``--quick`` for a small check (896³, one region).
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


def make_input(size: int, regions: list[Any]) -> tuple[Path, int]:
    """The sparse synthetic scan (reused if its layout matches); returns (path, non-zero voxels)."""
    import zarr

    from napari_vesuvius.core.synthetic import make_fragment

    path = DATA / f"scroll_{size}.zarr"
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


def reference_rate(path: Path, model_path: Path, region: Any) -> tuple[float, int, int]:
    """In-memory engine (one thread) on one scanned region with one patch of air around it, as a
    whole-volume pass would see it (tiles straddling the region's faces run too): seconds, region voxels,
    tiles run."""
    import torch
    import zarr

    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model

    corner, shape, _ = region
    array = zarr.open_array(str(path), mode="r")
    box = tuple(
        slice(max(0, c - PATCH), min(n, c + s + PATCH))
        for c, s, n in zip(corner, shape, array.shape, strict=True)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = predict(
            array[box], load_model(model_path), device="cpu", precision="fp32", output_dtype="uint8"
        )
    finally:
        torch.set_num_threads(threads)
    return result.elapsed_s, int(np.prod(shape)), result.tiles_run


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
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    size, regions = (896, QUICK_REGIONS) if args.quick else (3456, REGIONS)
    start = time.perf_counter()
    path, scanned = make_input(size, regions)
    print(f"input {path}: {size}³ = {size**3 / 1e9:.1f} GB logical, {scanned / 1e6:.1f} M scanned voxels "
          f"({time.perf_counter() - start:.0f}s to prepare)")  # fmt: skip
    model_path = make_model()
    ref_s, ref_voxels, ref_tiles = reference_rate(
        path, model_path, max(regions, key=lambda r: int(np.prod(r[1])))
    )
    per_tile = ref_s / max(1, ref_tiles)
    print(f"in-memory reference: {ref_tiles} tiles ({ref_voxels / 1e6:.1f} M voxels) in {ref_s:.1f}s")
    region_voxels = sum(int(np.prod(shape)) for _, shape, _ in regions)
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
        versus = result.elapsed_s * workers / (distinct * per_tile)
        rows.append([
            workers, f"{wall:.0f}", f"{result.elapsed_s:.0f}", f"{base / wall:.2f}×", air,
            f"{size**3 / wall / 1e6:.1f}", f"{busy_voxels / wall / 1e6:.2f}", f"{scanned / wall / 1e6:.3f}",
            f"{result.recompute:.2f}", f"{versus:.2f}×", f"{worker_peak:.0f}", f"{sampler.client:.0f}",
        ])  # fmt: skip
    identical = len(outputs) < 2 or all(same_output(outputs[0], other, regions) for other in outputs[1:])
    header = ["workers", "wall (s)", "run (s)", "speed-up (wall)", "air blocks skipped",
              "Mvox/s whole volume", "Mvox/s non-air blocks", "Mvox/s scanned", "recompute",
              "worker·s / in-memory equivalent", "peak RSS / worker (MiB)",
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
        "about (1 + patch / (2 · block))³ = 1.2. Reference: the in-memory engine (one process, one thread) "
        f"on the largest region with one patch of air around it: {ref_tiles} tiles in {ref_s:.0f} s = "
        f'{per_tile:.2f} s per tile; "in-memory equivalent" = the distinct tiles with data × that, a lower '
        "bound for one in-memory pass over the whole volume (which would also read and normalise every "
        f"air row). Outputs of {' and '.join(str(w) for w in args.workers)} worker(s) identical: "
        f"{'yes' if identical else 'NO'}. Benchmark process peak RSS {peak_rss_mb():.0f} MiB (in-memory "
        "reference and the output comparison included)."
    )
    command = "flock /tmp/team/heavy.lock python benchmarks/bench_scroll.py" + (
        " --quick" if args.quick else ""
    )
    if args.quick:
        print(body)
    else:
        write_section("scroll", "Full-scroll inference (block-wise, dask workers, CPU)", body, command)


if __name__ == "__main__":
    main()
