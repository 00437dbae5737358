"""GPU inference: nnU-Net ResEncM tiles/s and whole-volume time, this engine vs nnU-Net v2's predictor.

Built to run in one short call on a lent GPU machine (under 8 minutes on one H100/H200):

1. **Tile throughput**: the network's forward on 128³ tiles (batch 2) for each candidate — fp32 (TF32
   off), fp16 and bf16 autocast, each also in the ``channels_last_3d`` layout, and the best of them
   ``torch.compile``d — tiles/s and peak GPU memory. nnU-Net's own way (batch 1, fp16 autocast) is timed
   the same way.
2. **Whole volume** (synthetic 512³ uint8, step 0.5, Gaussian, no TTA): this engine with its defaults
   (bf16 where supported, GPU-side Gaussian accumulation, pinned-memory batches, the next slab read while
   the GPU runs) and with the fastest tuning from part 1, against ``nnUNetPredictor`` with
   ``perform_everything_on_device=True`` on the same network and card; wall time, tiles/s, peak GPU
   memory, and each output's difference from an fp32 reference (this engine, fp32, TF32 off).

The result is written to the ``gpu`` section of docs/benchmarks.md (a CUDA run only). ``--dry-run`` runs
every step on the CPU with the tiny network, a 32³ patch and a 40³ volume in seconds, writing nothing:
the test suite runs it so the script cannot rot on machines without a GPU.

Run on a GPU: ``python benchmarks/bench_gpu.py`` (``--size 384`` / ``--no-compile`` to shorten it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._networks import build_network, forward_gflop  # noqa: E402
from benchmarks.bench_inference import STEP, compare, make_volume, run_nnunet, tiles_of  # noqa: E402
from napari_vesuvius.core.inference.device import GpuTuning  # noqa: E402
from napari_vesuvius.core.inference.engine import predict  # noqa: E402
from napari_vesuvius.core.inference.model_api import InferenceModel, Normalization  # noqa: E402

TILE_HEADER = ["candidate", "precision", "layout", "batch", "tiles/s", "ms / tile", "TFLOP/s", "peak GPU MiB",
               "vs nnU-Net way"]  # fmt: skip
VOLUME_HEADER = ["method", "precision", "wall (s)", "tiles/s", "vs nnUNetPredictor", "peak GPU MiB",
                 "max abs Δprob vs fp32", "interior max abs Δprob", "0.5-mask flips"]  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One way of running the forward: autocast dtype (None: fp32), layout, compiled or not, batch."""

    name: str
    dtype: torch.dtype | None
    channels_last: bool = False
    compiled: bool = False
    batch: int = 2

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | str:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else "–"


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """fp32 without TF32 (the reference and the fp32 candidate)."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def time_tiles(
    network: torch.nn.Module,
    candidate: Candidate,
    patch: tuple[int, ...],
    device: torch.device,
    seconds: float,
) -> tuple[float, float | str]:
    """(tiles/s, peak GPU MiB) of ``candidate``'s forward on random tiles, after a warm-up."""
    net = copy.deepcopy(network).to(device).eval()
    x = torch.randn((candidate.batch, 1, *patch), device=device)
    if candidate.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if candidate.compiled:
        net = torch.compile(net)
    reset_peak(device)
    guard = exact_fp32(device) if candidate.dtype is None else contextlib.nullcontext()
    with guard, torch.inference_mode(), autocast(device, candidate.dtype):
        for _ in range(3 if candidate.compiled else 2):  # warm-up (cuDNN autotuning, compilation)
            net(x)
        synchronize(device)
        runs, start = 0, time.perf_counter()
        while True:
            net(x)
            runs += 1
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    peak = peak_mib(device)
    del net, x
    return runs * candidate.batch / elapsed, peak


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float, float | str]:
    """(result, wall seconds, peak GPU MiB) of ``run()``."""
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return result, time.perf_counter() - start, peak_mib(device)


def tile_candidates(device: torch.device) -> list[Candidate]:
    """fp32, then fp16 and bf16 autocast, each in both layouts (the CPU dry run: fp32 in both layouts)."""
    found = [Candidate("fp32", None)]
    if device.type != "cuda":  # CPU autocast is emulated bf16 on most CPUs: the dry run checks the code only
        return [*found, Candidate("fp32, channels-last", None, True)]
    for dtype, name in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        found.append(Candidate(f"{name} autocast", dtype))
        found.append(Candidate(f"{name} autocast, channels-last", dtype, True))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="whole-volume edge (512)")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--network", default="resencm")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing window per tile candidate")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidate")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny network, 32³ patch, 40³ volume")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.size, args.patch, args.network, args.seconds, args.no_compile = 40, 32, "tiny", 0.0, True
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if device.type != "cuda" and not args.dry_run:
        print("no CUDA GPU here: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    from benchmarks._report import markdown_table, write_section

    start_all = time.perf_counter()
    network, about = build_network(args.network)
    patch = (args.patch,) * 3
    gflop = forward_gflop(args.network, patch)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"{card}: {about}, patch {patch}", file=sys.stderr)

    # 1. tile throughput
    on_gpu = device.type == "cuda"
    nnunet_way = Candidate("nnU-Net's way (fp16 autocast, batch 1)" if on_gpu else "nnU-Net's way (batch 1)",
                           torch.float16 if on_gpu else None, batch=1)  # fmt: skip
    candidates = [nnunet_way, *tile_candidates(device)]
    measured: list[tuple[Candidate, float, float | str]] = []
    for candidate in candidates:
        rate, peak = time_tiles(network, candidate, patch, device, args.seconds)
        measured.append((candidate, rate, peak))
        print(f"  {candidate.name}: {rate:.2f} tiles/s", file=sys.stderr)
    best = max(measured[1:], key=lambda m: m[1])[0]
    if not args.no_compile:  # compile the fastest candidate
        compiled = Candidate(f"{best.name}, torch.compile", best.dtype, best.channels_last, compiled=True)
        try:
            rate, peak = time_tiles(network, compiled, patch, device, args.seconds)
            measured.append((compiled, rate, peak))
            print(f"  {compiled.name}: {rate:.2f} tiles/s", file=sys.stderr)
        except Exception as error:  # a compiler missing on the machine must not lose the other numbers
            print(f"  torch.compile failed: {type(error).__name__}: {error}", file=sys.stderr)
    base_rate = measured[0][1]
    tile_rows = [
        [c.name, c.precision, "channels-last" if c.channels_last else "NCDHW", c.batch, rate, 1000 / rate,
         rate * gflop / 1000, peak, f"{rate / base_rate:.2f}×"]
        for c, rate, peak in measured
    ]  # fmt: skip
    fastest = max(measured[1:], key=lambda m: m[1])[0]

    # 2. whole volume
    volume = make_volume(args.size)
    norm_spec = Normalization()
    norm = norm_spec.apply(volume)
    air = volume == 0
    model = InferenceModel([copy.deepcopy(network)], patch, normalization=norm_spec, name=args.network)
    n_tiles = len(tiles_of(norm, patch))
    common = {"step": STEP, "batch_size": 2, "device": device.type, "output_dtype": "float32"}

    def engine(precision: str, tuning: GpuTuning | None = None) -> np.ndarray:
        return predict(volume, model, precision=precision, tuning=tuning, **common).probability

    with exact_fp32(device):
        reference, ref_s, _ = timed(device, lambda: engine("fp32"))
    reference = np.asarray(reference, dtype=np.float32)
    reference[air] = 0
    volume_rows: list[list[Any]] = []
    walls: dict[str, float] = {}

    def record(label: str, precision: str, prob: np.ndarray, wall: float, peak: float | str) -> None:
        prob = np.asarray(prob, dtype=np.float32)
        prob[air] = 0
        walls[label] = wall
        delta, delta_inner, flips = compare(prob, reference)
        row = [label, precision, wall, n_tiles / wall, "", peak, delta, delta_inner, f"{100 * flips:.3f}%"]
        volume_rows.append(row)
        print(f"  {label}: {wall:.1f} s", file=sys.stderr)

    nnunet_label = "nnU-Net v2 nnUNetPredictor (on device)"
    prob, wall, peak = timed(device, lambda: run_nnunet(copy.deepcopy(network), norm, patch, device))
    record(nnunet_label, "fp16 autocast, fp16 sums" if on_gpu else "fp32, fp16 sums", prob, wall, peak)
    default_precision = "auto"
    prob, wall, peak = timed(device, lambda: engine(default_precision))
    record(
        "this engine (defaults)", "auto → bf16/fp16" if device.type == "cuda" else "auto", prob, wall, peak
    )
    tuned = GpuTuning(channels_last=fastest.channels_last)
    tuned_precision = fastest.precision
    prob, wall, peak = timed(device, lambda: engine(tuned_precision, tuned))
    record(f"this engine ({fastest.name})", tuned_precision, prob, wall, peak)
    for row in volume_rows:
        row[4] = f"{walls[nnunet_label] / row[2]:.2f}×"

    total = time.perf_counter() - start_all
    body = "\n".join([
        f"Card: {card}. Network: {about}, random weights (seed 0); {gflop:.0f} GFLOP per {args.patch}³ tile. "
        f"PyTorch {torch.__version__}.",
        "",
        f"Tile throughput (random {args.patch}³ tiles, forward only, after warm-up; the last column compares "
        "with nnU-Net's own way of running the network):",
        "",
        markdown_table(TILE_HEADER, tile_rows),
        "",
        f"Whole volume: synthetic {args.size}³ uint8, patch {patch}, step {STEP}, Gaussian, no TTA, "
        f"{n_tiles} tiles, probabilities back on the host. Reference: this engine in fp32 with TF32 off "
        f"({ref_s:.1f} s).",
        "",
        markdown_table(VOLUME_HEADER, volume_rows),
        "",
        f"Whole script: {total:.0f} s.",
    ])  # fmt: skip
    command = "python benchmarks/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.dry_run or args.no_write:
        print(body)
    else:
        write_section("gpu", "GPU inference (nnU-Net ResEncM)", body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
