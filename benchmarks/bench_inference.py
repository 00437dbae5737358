"""Sliding-window inference: this engine vs MONAI's ``sliding_window_inference`` vs nnU-Net v2's predictor.

One run per configuration, the same network weights (seeded), the same synthetic CT volume, the same
patch, step 0.5 and Gaussian blending (σ = patch/8), no TTA, batch 2 where the tool batches. Each
method's surface probability is compared with a reference: the unmodified network's fp32 logits of
every tile, blended in float64 (the same tiles are timed as "raw forward", the floor for any sliding
window). For ResEncM one tile is also run in float64 to show how far fp32 logits are from exact.
nnU-Net accumulates logits in fp16 on CPU (its Gaussian underflows near the faces), so every error is
also given on the interior (8 voxels from the faces). Voxels outside the scan (ct == 0) are 0 for all.

Configurations (``--config``): ``tiny`` — 320³, patch 128, the built-in ``tiny`` U-Net; ``resencm`` —
192³, patch 128, nnU-Net's ResEncM network (what challenge participants run). Default: both, each in
its own section of docs/benchmarks.md (``--size/--patch/--network`` override one for a quick check).
Run: ``python benchmarks/bench_inference.py`` (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from napari_vesuvius.core.inference._tiling import gaussian_weights, padded_shape, tile_grid
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.inference.model_api import InferenceModel, Normalization

BATCH = 2
STEP = 0.5
HEADER = ["method", "precision", "time (s)", "time / engine default", "max abs Δprob",
          "interior max abs Δprob", "0.5-mask flips", "overhead (non-forward)"]  # fmt: skip
REPO = Path(__file__).resolve().parent.parent
#: name → (volume edge, patch edge, network, docs/benchmarks.md section, section title)
CONFIGS = {
    "tiny": (320, 128, "tiny", "inference", "Sliding-window inference (CPU)"),
    "resencm": (192, 128, "resencm", "inference-resencm", "Sliding-window inference, nnU-Net ResEncM (CPU)"),
}


def make_volume(size: int) -> np.ndarray:
    from napari_vesuvius.core.synthetic import make_fragment

    return make_fragment((size, size, size), seed=7).image


def tiles_of(norm: np.ndarray, patch: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    return list(itertools.product(*tile_grid(norm.shape, patch, STEP)))


def raw_forward(network: torch.nn.Module, norm: np.ndarray, patch: tuple[int, int, int], precision: str,
                reference: bool = False) -> tuple[float, np.ndarray | None]:  # fmt: skip
    """Time the forward passes of every tile (batches of BATCH); optionally blend them in float64."""
    starts = tiles_of(norm, patch)
    logits_sum = np.zeros((2, *norm.shape)) if reference else None
    weight_sum = np.zeros(norm.shape) if reference else None
    gauss = gaussian_weights(patch).astype(np.float64)
    spent = 0.0
    for first in range(0, len(starts), BATCH):
        group = starts[first : first + BATCH]
        regions = [tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True)) for start in group]
        batch = torch.from_numpy(np.stack([norm[r] for r in regions]))[:, None]
        begin = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = network(batch).float()
        spent += time.perf_counter() - begin
        if reference:
            for logits, region in zip(out.double().numpy(), regions, strict=True):
                logits_sum[(slice(None), *region)] += logits * gauss
                weight_sum[region] += gauss
    if not reference:
        return spent, None
    logits = logits_sum / weight_sum
    prob = 1.0 / (1.0 + np.exp(logits[0] - logits[1]))  # softmax class 1 of two classes
    return spent, prob


def run_monai(network: torch.nn.Module, norm: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(norm)[None, None], patch, BATCH, network, overlap=1 - STEP, mode="gaussian",
            sigma_scale=0.125, padding_mode="constant", cval=0.0,
        )  # fmt: skip
    return torch.softmax(logits[0].float(), 0)[1].numpy()


def run_nnunet(
    network: torch.nn.Module, norm: np.ndarray, patch: tuple[int, ...], device: torch.device | None = None
) -> np.ndarray:
    """nnU-Net v2's own sliding window (``predict_logits_from_preprocessed_data``) on our network.

    ``device``: CPU by default; on CUDA everything stays on the GPU (``perform_everything_on_device``).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = device if device is not None else torch.device("cpu")
    predictor = nnUNetPredictor(tile_step_size=STEP, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                allow_tqdm=False)  # fmt: skip
    predictor.network = network.to(device)
    predictor.list_of_parameters = [network.state_dict()]
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=2)
    predictor.allowed_mirroring_axes = None
    logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(norm)[None])
    return torch.softmax(logits.float(), 0)[1].cpu().numpy()


def compare(prob: np.ndarray, reference: np.ndarray, border: int = 8) -> tuple[float, float, float]:
    """max |Δ| everywhere, max |Δ| on the interior, share of voxels whose 0.5 mask flips."""
    diff = np.abs(prob.astype(np.float32) - reference)
    inner = tuple(slice(border, -border) for _ in range(3))
    flips = float(np.mean((prob >= 0.5) != (reference >= 0.5)))
    return float(diff.max()), float(diff[inner].max()), flips


def native_bf16() -> bool:
    """True where this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fp64_tile_error(
    network: torch.nn.Module, norm: np.ndarray, patch: tuple[int, int, int]
) -> tuple[float, int]:
    """max |Δprob| between the fp32 and the float64 forward of the volume's first tile, and its edge.

    PyTorch convolves float64 with its reference kernel, whose unfolded input for a 128³ tile of 64
    channels needs 29 GB, so the check uses the tile's first half-patch cube (the arithmetic per voxel is
    the same; only the field of view is smaller).
    """
    import copy

    edge = max(16, min(patch) // 2)
    tile = torch.from_numpy(norm[:edge, :edge, :edge].copy())[None, None]
    exact = copy.deepcopy(network).double()
    with torch.inference_mode():
        single = torch.softmax(network(tile).double(), 1)[0, 1]
        double = torch.softmax(exact(tile.double()), 1)[0, 1]
    return float((single - double).abs().max()), edge


def run_config(
    name: str, size: int, patch_edge: int, network_name: str, skip: tuple[str, ...]
) -> tuple[str, str]:
    """Time every method on one configuration; ``(markdown body, one-line summary)``."""
    sys.path.insert(0, str(REPO))
    from benchmarks._networks import build_network, forward_gflop
    from benchmarks._report import markdown_table, peak_rss_mb

    load_start = os.getloadavg()[0]
    network, about = build_network(network_name)
    patch = (patch_edge,) * 3
    volume = make_volume(size)
    norm_spec = Normalization()
    norm = norm_spec.apply(volume)
    assert padded_shape(volume.shape, patch)[0] == volume.shape, "the benchmark volume must be >= the patch"
    model = InferenceModel([network], patch, normalization=norm_spec, name=network_name)
    air = volume == 0
    n_tiles = len(tiles_of(norm, patch))
    gflop = forward_gflop(network_name, patch)
    print(f"[{name}] {size}^3 volume, patch {patch}, {n_tiles} tiles, {about}", file=sys.stderr)

    fwd32, reference = raw_forward(network, norm, patch, "fp32", reference=True)
    assert reference is not None
    reference[air] = 0
    rows: list[list[Any]] = []
    times: dict[str, float] = {}

    def record(label: str, precision: str, seconds: float, prob: np.ndarray, forward: float | None) -> None:
        prob = np.asarray(prob, dtype=np.float32)
        prob[air] = 0
        delta, delta_inner, flips = compare(prob, reference)
        overhead = "" if forward is None else f"{100 * (1 - forward / seconds):.1f}%"
        times[label] = seconds
        rows.append([label, precision, seconds, delta, delta_inner, f"{100 * flips:.3f}%", overhead])
        print(f"  {label} ({precision}): {seconds:.1f}s, max|Δ| {delta:.2e}", file=sys.stderr)

    results = {}
    modes = [("this engine (default)", "auto"), ("this engine fp32", "fp32")]
    bf16_note = ""
    if "bf16" in skip:
        bf16_note = " bf16 not run (--skip bf16)."
    elif not native_bf16():  # emulated bf16 ran 50× slower than fp32 (tiny network, 96³)
        bf16_note = " bf16 not run: no native bf16 on this CPU (no avx512_bf16/amx); emulated, far slower."
    else:
        modes.append(("this engine bf16", "bf16"))
    for label, precision in modes:
        default_done = results.get("this engine (default)")
        if default_done is not None and default_done.settings["precision"] == precision:
            continue
        result = predict(volume, model, step=STEP, batch_size=BATCH, device="cpu", precision=precision,
                         output_dtype="float32")  # fmt: skip
        results[label] = result
        record(label, result.settings["precision"], result.elapsed_s, result.probability, result.forward_s)
    others = (("monai", "MONAI sliding_window_inference", run_monai),
              ("nnunet", "nnU-Net v2 nnUNetPredictor", run_nnunet))  # fmt: skip
    for key, label, runner in others:
        if key in skip:
            continue
        begin = time.perf_counter()
        prob = runner(network, norm, patch)
        record(label, "fp32", time.perf_counter() - begin, prob, None)
    exact_note = ""
    if network_name == "resencm" and "fp64" not in skip:
        try:
            error, edge = fp64_tile_error(network, norm, patch)
            exact_note = (
                f" The reference's own error: on the volume's first {edge}³ cube the network's fp32 forward "
                f"differs from its float64 forward by at most {error:.1e} in probability."
            )
        except (MemoryError, RuntimeError) as problem:  # never lose the table to the spot check
            exact_note = f" The float64 spot check could not run: {str(problem).splitlines()[0][:120]}."
    default = times["this engine (default)"]
    for row in rows:
        row.insert(3, f"{row[2] / default:.2f}×")
    default_mode = results["this engine (default)"].settings["precision"]
    ratios = ", ".join(f"{times[k] / default:.2f}× vs {k}" for k in times if not k.startswith("this engine"))
    body = "\n".join([
        f"Volume: synthetic fragment {size}³ (uint8), patch {patch}, step {STEP}, Gaussian σ = patch/8, "
        f"no TTA, batch {BATCH}, CPU, {torch.get_num_threads()} torch threads. Network: {about}, random "
        f"weights (seed 0); {gflop:.0f} GFLOP per tile. {n_tiles} tiles.",
        "",
        markdown_table(HEADER, rows),
        "",
        f"Raw network forward of the same {n_tiles} tiles (the unmodified network, fp32, batch {BATCH}, "
        f"outside any sliding window): {fwd32:.1f} s ({n_tiles * gflop / fwd32:.0f} GFLOP/s). Reference: "
        "those fp32 logits blended in float64. Overhead = 1 − (forward time inside the run) / (run time). "
        f"Engine default precision on this CPU: {default_mode}.{bf16_note}{exact_note} Speed-up of the "
        f"default engine: {ratios}. Peak RSS {peak_rss_mb():.0f} MiB. Load average (1 min) at the start "
        f"{load_start:.1f}, at the end {os.getloadavg()[0]:.1f}; on a shared machine timings vary by up to "
        "±30 % between runs.",
    ])  # fmt: skip
    return body, f"{name}: {ratios}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=(*CONFIGS, "all"), default="all")
    parser.add_argument("--size", type=int, help="volume edge (overrides the configuration's)")
    parser.add_argument("--patch", type=int, help="patch edge (overrides the configuration's)")
    parser.add_argument("--network", help="resencm or a built-in preset (overrides the configuration's)")
    parser.add_argument("--skip", nargs="*", default=(), choices=("monai", "nnunet", "bf16", "fp64"))
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks._report import write_section

    names = list(CONFIGS) if args.config == "all" else [args.config]
    overridden = any(v is not None for v in (args.size, args.patch, args.network))
    command = "python benchmarks/bench_inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in names:
        size, patch, network, section, title = CONFIGS[name]
        body, summary = run_config(
            name, args.size or size, args.patch or patch, args.network or network, tuple(args.skip)
        )
        print(summary, file=sys.stderr)
        if args.no_write or overridden:  # a quick check never replaces a configuration's section
            print(body)
        else:
            write_section(section, title, body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
