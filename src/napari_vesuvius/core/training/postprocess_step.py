"""The last step of a training run: choose each checkpoint's clean-up on the held-out volumes.

For ``checkpoint_best.pt`` and ``checkpoint_last.pt`` (once when they hold the same weights), the
validation volumes are predicted with the engine defaults and :func:`~..postprocess.choice.
iter_choose_postprocess` picks hysteresis ``T_low`` and the closing. The choice is merged into the
checkpoint's metadata (so ``predict``/``submit``, the Export and Tune docks use it with that model) and
the best checkpoint's config is written to ``postprocess.json`` in the run folder (loadable with
``--postprocess`` or the Tune dock's Load). Without held-out volumes nothing is chosen: a clean-up
tuned on the volumes the network was trained on would flatter it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from napari_vesuvius.core.postprocess.choice import METADATA_KEY, PostprocessChoice, iter_choose_for_model
from napari_vesuvius.core.postprocess.sweep import load_volume_array

from ..inference.checkpoint import read_checkpoint_info, update_checkpoint_metadata
from ..progress import Progress, scaled
from . import rundir
from .data import VolumeSource

POSTPROCESS_JSON = "postprocess.json"


def iter_choose_run_postprocess(
    run_dir: Path,
    val_sources: Sequence[VolumeSource],
    *,
    device: str,
    batch_size: int,
    max_volumes: int,
    say: Callable[[str], Any],
) -> Generator[Progress, None, dict[str, PostprocessChoice]]:
    """Job: choose and store the clean-up of the run's checkpoints; returns ``{file name: choice}``."""
    from ..inference.loading import load_model

    if not val_sources:
        say("clean-up not chosen: no held-out validation volume; the checkpoints keep the built-in defaults")
        return {}
    volumes = [
        (s.id, load_volume_array(s.image), load_volume_array(s.label)) for s in val_sources[:max_volumes]
    ]
    names = [n for n in (rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST) if (run_dir / n).exists()]
    by_iteration: dict[Any, PostprocessChoice] = {}
    choices: dict[str, PostprocessChoice] = {}
    for index, name in enumerate(names):
        path = run_dir / name
        iteration = read_checkpoint_info(path).metadata.get("iteration")
        choice = by_iteration.get(iteration) if iteration is not None else None
        if choice is None:
            job = iter_choose_for_model(load_model(path), volumes, device=device, batch_size=batch_size)
            choice = yield from scaled(job, index, 1, len(names), f"choosing the clean-up of {name}: ")
            by_iteration[iteration] = choice
        update_checkpoint_metadata(path, {METADATA_KEY: choice.to_metadata()})
        choices[name] = choice
        say(f"{name}: {choice.describe()}")
    chosen = choices.get(rundir.CHECKPOINT_BEST) or next(iter(choices.values()), None)
    if chosen is not None:
        chosen.config.save(run_dir / POSTPROCESS_JSON)
    return choices


def iter_choose_for_run(
    run_dir: str | Path, *, device: str | None = None, say: Callable[[str], Any] = print
) -> Generator[Progress, None, dict[str, PostprocessChoice]]:
    """Job: the end-of-run step again for a finished (or cancelled) run folder, from its ``config.json``:
    the same validation volumes, batch size and volume limit; ``device`` None = the run's device."""
    from ..inference import device as devices
    from .config import load_config
    from .data import collect_sources, split_sources

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / rundir.CONFIG_JSON)
    sources = collect_sources(cfg.data, cfg.pairs)
    _, val_sources, _ = split_sources(sources, cfg.val_fraction, cfg.seed, cfg.val_ids)
    resolved = str(devices.resolve_device(device or cfg.device))
    job = iter_choose_run_postprocess(
        run_dir, val_sources, device=resolved, batch_size=cfg.batch_size,
        max_volumes=cfg.score_max_volumes, say=say,
    )  # fmt: skip
    return (yield from job)
