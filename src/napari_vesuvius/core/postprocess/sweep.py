"""Parameter sweeps: score one post-processing parameter over a grid of values, on one or many volumes.

``iter_sweep(cases, base_config, "t_low", [0.2, 0.3, ...])`` runs the post-processing pipeline with
``dataclasses.replace(base_config, t_low=value)`` for every value on every volume, scores each mask
with the leaderboard metric and returns a :class:`SweepResult` (mean score per value, per-term means,
per-volume table, best value). Work that does not depend on the swept value is done once per volume:

* probabilities are validated and turned into comparison keys once; the label's foreground and
  ignore masks are prepared once (scoring then skips ``prepare_masks``);
* sweeping a clean-up parameter reuses one thresholded mask (hysteresis / percentile run once);
* sweeping ``dust_size`` / ``keep_largest`` reuses everything up to the components step and one
  26-connected labelling (:class:`.postprocess.components.ComponentFilter`, the pipeline's own
  components step), so each value costs only a table lookup;
* values that give the same mask as an earlier value reuse its score (common on uint8 inputs and
  for size/radius grids), the costly part of a sweep.

Cases are processed one after the other (outer loop) so only one volume is in memory at a time
when its arrays are given as zero-argument loaders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.labels import IGNORE
from napari_vesuvius.core.metric.score import SCORE_KEYS, ScoreResult, prepare_masks, score_masks
from napari_vesuvius.core.postprocess.components import ComponentFilter
from napari_vesuvius.core.postprocess.config import ConfigError, PostprocessConfig
from napari_vesuvius.core.postprocess.pipeline import (
    as_probability_array,
    check_scan_mask,
    iter_pipeline_steps,
)
from napari_vesuvius.core.postprocess.threshold import ProbabilityKeys
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.value_checks import label_problem

#: Sweepable parameters and their value type, in the order a user interface lists them.
SWEEP_PARAMETERS: dict[str, type] = {
    "t_low": float,
    "t_high": float,
    "threshold": float,
    "percentile_fraction": float,
    "closing_z": int,
    "closing_xy": int,
    "opening_z": int,
    "opening_xy": int,
    "dust_size": int,
    "keep_largest": int,
    "margin": int,
    "max_hole_size": int,
    "max_cavity_size": int,
}
#: Parameters that change the threshold step (everything after it is re-run per value anyway).
THRESHOLD_PARAMETERS = frozenset({"t_low", "t_high", "threshold", "percentile_fraction"})
#: Parameters of the last (components) step: one labelling serves every value.
COMPONENT_PARAMETERS = frozenset({"dust_size", "keep_largest"})
#: A parameter only acts when the config has this setting (name, required value, hint).
_REQUIRES: dict[str, tuple[str, Any]] = {
    "t_low": ("threshold_mode", "hysteresis"),
    "t_high": ("threshold_mode", "hysteresis"),
    "threshold": ("threshold_mode", "absolute"),
    "percentile_fraction": ("threshold_mode", "percentile"),
    "max_hole_size": ("fill_holes", True),
    "max_cavity_size": ("fill_cavities", True),
}
MAX_VALUES = 1000

Value = float | int
Source = Any  # an array (numpy / dask / anything np.asarray takes), None, or a zero-argument loader


class SweepCase(NamedTuple):
    """One volume of a sweep: its name, probabilities, label (0/1/2) and optional scan mask (ct > 0)."""

    name: str
    probability: Source
    label: Source
    scan_mask: Source = None


# ---------------------------------------------------------------------------------------- values
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def _number(token: str, text: str) -> Value:
    token = token.strip()
    if not re.fullmatch(_NUMBER, token):
        raise ValueError(f"sweep values {text!r}: {token!r} is not a number")
    return int(token) if re.fullmatch(r"[-+]?\d+", token) else float(token)


def value_range(start: Value, stop: Value, step: Value) -> list[Value]:
    """``start, start+step, …`` up to and including ``stop`` (within rounding); ints stay ints."""
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise ValueError(f"range {start}:{stop}:{step}: bounds and step must be finite")
    if step <= 0:
        raise ValueError(f"range {start}:{stop}:{step}: step must be positive")
    if stop < start:
        raise ValueError(f"range {start}:{stop}:{step}: stop is below start")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_VALUES:
        raise ValueError(f"range {start}:{stop}:{step} has {count} values (at most {MAX_VALUES})")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return [int(start + i * step) for i in range(count)]
    return [round(start + i * step, 10) for i in range(count)]


def parse_values(text: str) -> list[Value]:
    """Sweep values from ``"start:stop:step"`` (stop included) or ``"a,b,c"``; sorted, duplicates dropped."""
    text = str(text).strip()
    if not text:
        raise ValueError("sweep values: empty; give start:stop:step or a comma-separated list")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"sweep values {text!r}: a range needs start:stop:step")
        values = value_range(*(_number(p, text) for p in parts))
    else:
        values = [_number(p, text) for p in text.split(",") if p.strip()]
        if len(values) > MAX_VALUES:
            raise ValueError(f"sweep values {text!r}: more than {MAX_VALUES} values")
    return sorted(set(values), key=float)


def _coerce_value(parameter: str, value: Any) -> Value:
    kind = SWEEP_PARAMETERS[parameter]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(None, f"sweep of {parameter!r}: value {value!r} is not a number")
    if kind is int:
        if not float(value).is_integer():
            raise ConfigError(None, f"sweep of {parameter!r}: value {value!r} must be a whole number")
        return int(value)
    return float(value)


def sweep_configs(
    base_config: PostprocessConfig, parameter: str, values: Sequence[Any]
) -> list[PostprocessConfig]:
    """One validated config per value; unknown parameters, bad or duplicate values raise ConfigError."""
    if parameter not in SWEEP_PARAMETERS:
        raise ConfigError(
            None, f"cannot sweep {parameter!r}: sweepable parameters are {', '.join(SWEEP_PARAMETERS)}"
        )
    if len(values) == 0:
        raise ConfigError(None, f"sweep of {parameter!r}: no values given")
    required = _REQUIRES.get(parameter)
    if required is not None and getattr(base_config, required[0]) != required[1]:
        raise ConfigError(
            None,
            f"sweeping {parameter!r} has no effect unless {required[0]} is {required[1]!r} "
            f"(the base config has {getattr(base_config, required[0])!r})",
        )
    coerced = [_coerce_value(parameter, v) for v in values]
    if len(set(coerced)) != len(coerced):
        raise ConfigError(None, f"sweep of {parameter!r}: duplicate values in {coerced}")
    configs = []
    for value in coerced:
        try:
            configs.append(dataclasses.replace(base_config, **{parameter: value}))
        except ConfigError as error:
            raise ConfigError(None, f"sweep value {value!r} for {parameter!r}: {error.problem}") from None
    return configs


# ---------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SweepResult:
    """Scores of every (volume, value) pair; ``results[i][j]`` is volume ``i`` at ``values[j]``."""

    parameter: str
    values: list[Value]
    case_names: list[str]
    results: list[list[ScoreResult]]
    base_config: PostprocessConfig
    timings: dict[str, float] = field(default_factory=dict)

    def term_means(self, key: str) -> list[float]:
        """Mean of one score term (a key of ``SCORE_KEYS``) over the volumes, per value."""
        return [
            float(np.mean([row[j].to_dict()[key] for row in self.results])) for j in range(len(self.values))
        ]

    @property
    def mean_scores(self) -> list[float]:
        return self.term_means("score")

    @property
    def mean_terms(self) -> dict[str, list[float]]:
        """Per-value means of every term: score, topo, surface_dice, voi_score, voi_split, voi_merge."""
        return {key: self.term_means(key) for key in SCORE_KEYS}

    @property
    def best_index(self) -> int:
        """Index of the highest mean score (the first one on ties)."""
        return int(np.argmax(self.mean_scores))

    @property
    def best_value(self) -> Value:
        return self.values[self.best_index]

    @property
    def best_score(self) -> float:
        return self.mean_scores[self.best_index]

    def best_config(self) -> PostprocessConfig:
        """The base config with the best value of the swept parameter."""
        return dataclasses.replace(self.base_config, **{self.parameter: self.best_value})

    def per_volume(self) -> list[dict[str, Any]]:
        """One row per (volume, value): ``{"id", "value", **ScoreResult.to_dict()}``."""
        return [
            {"id": name, "value": value, **result.to_dict()}
            for name, row in zip(self.case_names, self.results, strict=True)
            for value, result in zip(self.values, row, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: values, mean score and term means per value, best value, per-volume rows."""
        return {
            "parameter": self.parameter,
            "values": list(self.values),
            "mean_scores": self.mean_scores,
            "mean_terms": self.mean_terms,
            "best_value": self.best_value,
            "best_score": self.best_score,
            "n_volumes": len(self.case_names),
            "volumes": list(self.case_names),
            "per_volume": self.per_volume(),
            "base_config": self.base_config.to_dict(),
            "timings": dict(self.timings),
        }


# ---------------------------------------------------------------------------------------- running
def _resolve(source: Source) -> Any:
    value = source() if callable(source) else source
    if value is not None and hasattr(value, "compute") and not isinstance(value, np.ndarray):
        value = value.compute()
    return value


def _mask_maker(
    keys: ProbabilityKeys, scan: np.ndarray | None, parameter: str, configs: list[PostprocessConfig]
) -> Callable[[PostprocessConfig], np.ndarray]:
    """A function config -> pipeline mask that reuses the value-independent work of this sweep."""
    base = configs[0]
    if parameter in COMPONENT_PARAMETERS:
        before = run_job(
            iter_pipeline_steps(keys, dataclasses.replace(base, dust_size=0, keep_largest=0), scan)
        )
        components = ComponentFilter(before)  # the pipeline's components step, labelled once
        return lambda config: components.filter(config.dust_size, config.keep_largest)
    if parameter in THRESHOLD_PARAMETERS:
        return lambda config: run_job(iter_pipeline_steps(keys, config, scan))
    only_threshold = dataclasses.replace(
        base, opening_z=0, opening_xy=0, closing_z=0, closing_xy=0, fill_holes=False,
        fill_cavities=False, dust_size=0, keep_largest=0, margin=0,
    )  # fmt: skip
    thresholded = run_job(iter_pipeline_steps(keys, only_threshold, scan))
    return lambda config: run_job(iter_pipeline_steps(keys, config, scan, thresholded=thresholded))


def _digest(mask: np.ndarray) -> bytes:
    return hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()


def _normalise_cases(cases: Sequence[Any], scan_masks: Sequence[Source] | None) -> list[SweepCase]:
    out = []
    for index, item in enumerate(cases):
        if isinstance(item, SweepCase):
            case = item
        elif len(item) in (3, 4):
            case = SweepCase(str(item[0]), *item[1:])
        else:
            raise ValueError(
                f"sweep case {index}: expected (name, probability, label), got {len(item)} items"
            )
        if scan_masks is not None:
            case = case._replace(scan_mask=scan_masks[index])
        out.append(case)
    if not out:
        raise ValueError("a sweep needs at least one volume")
    if scan_masks is not None and len(scan_masks) != len(out):
        raise ValueError(f"{len(scan_masks)} scan masks given for {len(out)} volumes")
    return out


def iter_sweep(
    cases: Sequence[Any],
    base_config: PostprocessConfig | None,
    parameter: str,
    values: Sequence[Any],
    *,
    scan_masks: Sequence[Source] | None = None,
    tolerance: float = 2.0,
    topo_backend: str = "auto",
) -> Generator[Progress, None, SweepResult]:
    """Job: sweep ``parameter`` over ``values`` on every case; returns a :class:`SweepResult`.

    ``cases``: ``(name, probability, label)`` tuples or :class:`SweepCase` (arrays or zero-argument
    loaders; probabilities uint8 0–255 or float in [0, 1]; labels 0/1/2). ``scan_masks`` (one per
    case, or None) gate the masks and feed the percentile threshold, as in :func:`run_pipeline`.
    All configs are validated before any volume is read.
    """
    base_config = PostprocessConfig() if base_config is None else base_config
    configs = sweep_configs(base_config, parameter, values)
    values = [getattr(config, parameter) for config in configs]
    items = _normalise_cases(cases, scan_masks)
    total = len(items) * (len(configs) + 1)
    timings = {"load": 0.0, "pipeline": 0.0, "score": 0.0}
    results: list[list[ScoreResult]] = []
    done = 0
    for case in items:
        yield Progress(done, total, f"{case.name}: loading")
        started = time.perf_counter()
        prob = as_probability_array(_resolve(case.probability), case.name)
        keys = ProbabilityKeys(prob, case.name)
        label = np.asarray(_resolve(case.label))
        problem = label_problem(label)  # values outside 0/1/2 would silently count as surface
        if problem is not None:
            raise VolumeError(case.name, problem)
        if label.shape != prob.shape:
            raise VolumeError(
                case.name, f"label shape {label.shape} does not match probabilities {prob.shape}"
            )
        scan = check_scan_mask(_resolve(case.scan_mask), prob.shape, case.name)
        _, label_mask = prepare_masks(np.zeros(prob.shape, bool), label)
        ignore = (label == IGNORE) if label.dtype != bool else None
        keep = None if ignore is None or not ignore.any() else ~ignore
        del label, ignore
        make_mask = _mask_maker(keys, scan, parameter, configs)
        timings["load"] += time.perf_counter() - started
        done += 1
        row: list[ScoreResult] = []
        seen: dict[bytes, ScoreResult] = {}
        for config, value in zip(configs, values, strict=True):
            started = time.perf_counter()
            mask = make_mask(config)
            if keep is not None:
                mask &= keep
            scored = time.perf_counter()
            timings["pipeline"] += scored - started
            digest = _digest(mask)
            result = seen.get(digest)
            if result is None:
                result = score_masks(mask, label_mask, tolerance=tolerance, topo_backend=topo_backend)
                result.timings["total"] = time.perf_counter() - scored
                seen[digest] = result
            timings["score"] += time.perf_counter() - scored
            row.append(result)
            done += 1
            yield Progress(done, total, f"{case.name}: {parameter}={value:g} → {result.score:.4f}")
        results.append(row)
    return SweepResult(
        parameter=parameter,
        values=values,
        case_names=[case.name for case in items],
        results=results,
        base_config=base_config,
        timings=timings,
    )


def run_sweep(
    cases: Sequence[Any],
    base_config: PostprocessConfig | None,
    parameter: str,
    values: Sequence[Any],
    **kwargs: Any,
) -> SweepResult:
    """Run :func:`iter_sweep` synchronously."""
    return run_job(iter_sweep(cases, base_config, parameter, values, **kwargs))


# ---------------------------------------------------------------------------------------- files
def load_volume_array(path: str | Path) -> np.ndarray:
    """Read a whole .tif/.zarr volume into memory (3D checked, errors name the file)."""
    from napari_vesuvius.core.volume.io import open_volume

    with open_volume(path) as volume:
        if len(volume.shape) != 3:
            raise VolumeError(path, f"expected a 3D volume, got shape {volume.shape}")
        return np.asarray(volume.data.compute())


def load_label_array(path: str | Path) -> np.ndarray:
    """:func:`load_volume_array` of a label volume whose values must be 0, 1 or 2 (errors name the file)."""
    label = load_volume_array(path)
    problem = label_problem(label)
    if problem is not None:
        raise VolumeError(path, problem)
    return label


def cases_from_files(
    triples: Sequence[tuple[str, str | Path, str | Path]],
    ct_paths: dict[str, str | Path] | None = None,
) -> list[SweepCase]:
    """Lazy sweep cases from ``(id, probability_path, label_path)``; CT files (by id) give scan masks."""
    cases = []
    for volume_id, prob_path, label_path in triples:
        ct = None if ct_paths is None else ct_paths.get(volume_id)
        cases.append(
            SweepCase(
                str(volume_id),
                lambda p=prob_path: load_volume_array(p),
                lambda p=label_path: load_label_array(p),
                None if ct is None else (lambda p=ct: load_volume_array(p) > 0),
            )
        )
    return cases


def iter_score_cases(
    cases: Sequence[Any], config: PostprocessConfig | None, **kwargs: Any
) -> Generator[Progress, None, SweepResult]:
    """Job: post-process and score every case with one config (a one-value sweep of ``margin``)."""
    config = PostprocessConfig() if config is None else config
    return (yield from iter_sweep(cases, config, "margin", [config.margin], **kwargs))


def volume_files(folder: str | Path) -> dict[str, Path]:
    """``<id> -> path`` of the volumes (.tif/.tiff/.zarr) in a folder (ids by ``core.volume.volume_id``)."""
    from napari_vesuvius.core.volume.io import TIFF_SUFFIXES, is_zarr_path, volume_id

    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(folder, "not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        is_tiff = path.is_file() and path.suffix.lower() in TIFF_SUFFIXES
        if is_tiff or (path.name.lower().endswith(".zarr") and is_zarr_path(path)):
            found.setdefault(volume_id(path), path)
    return found
