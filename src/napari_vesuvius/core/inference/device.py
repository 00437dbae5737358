"""Device and precision choice for inference (imports torch: only the engine imports this module)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA if present, else Apple MPS, else CPU; an explicit choice must be available."""
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {DEVICES}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but this PyTorch has no usable CUDA GPU")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to a concrete mode.

    CUDA: bf16 where supported, else fp16. MPS: fp16. CPU: fp32. bf16 autocast on CPU is opt-in:
    measured here (docs/benchmarks.md) it was slower than the accelerated fp32 path and flipped
    0.59 % of the 0.5-threshold mask with random weights (target ≤ 0.1 %).
    """
    name = str(precision).lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors (the engine retries with a smaller batch)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


#: devices whose runs read the next slab in the background (``GpuTuning.prefetch``); on the CPU the
#: reader would only take a core from the forward
PREFETCH_DEVICES: tuple[str, ...] = ("cuda",)


@dataclass(frozen=True)
class GpuTuning:
    """How a CUDA run feeds and runs its networks (ignored on other devices); same probabilities either way.

    ``prefetch``: read and normalise the next row of tiles in a background thread while the GPU runs
    the current one (the GPU otherwise idles while a slab is read); ``cudnn_benchmark``: let cuDNN time
    its algorithms for the fixed tile shape (as nnU-Net's predictor does); ``channels_last``: run the
    networks in the ``channels_last_3d`` layout; ``compile``: ``torch.compile`` the networks (minutes of
    compilation, repaid on a whole scroll). The defaults are what ``benchmarks/bench_gpu.py`` measured
    or, where it has not run yet, PyTorch's plain behaviour.
    """

    prefetch: bool = True
    cudnn_benchmark: bool = True
    channels_last: bool = False
    compile: bool = False


def prepare_networks(networks: list[torch.nn.Module], device: torch.device, tuning: GpuTuning) -> list:
    """The networks on ``device`` in eval mode, laid out and compiled as ``tuning`` says for CUDA."""
    prepared = [network.to(device).eval() for network in networks]
    if device.type != "cuda":
        return prepared
    if tuning.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if tuning.channels_last:
        prepared = [network.to(memory_format=torch.channels_last_3d) for network in prepared]
    if tuning.compile:
        prepared = [torch.compile(network) for network in prepared]
    return prepared
