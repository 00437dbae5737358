"""Post-processing of probability volumes: thresholds, morphology, components, one JSON-serialisable pipeline.

Qt-free. The Tune widget, the ``postprocess`` CLI and the submission export all use
:class:`PostprocessConfig` with :func:`run_pipeline` / :func:`iter_pipeline`, and the widget's live
view uses :func:`preview_slice` / :func:`preview_region` with a :class:`PreviewCache`.
"""

from .components import (
    fill_cavities_3d,
    fill_holes_2d,
    filter_components,
    keep_components,
    keep_largest_components,
    label_components,
    remove_components,
    remove_dust,
)
from .config import ConfigError, PostprocessConfig
from .morphology import binary_closing, binary_opening, ellipsoid_footprint
from .pipeline import enabled_steps, iter_pipeline, run_pipeline, scan_mask_from_ct
from .preview import PreviewCache, preview_region, preview_slice
from .threshold import (
    ProbabilityKeys,
    percentile_threshold_value,
    threshold_absolute,
    threshold_hysteresis,
    threshold_percentile,
)

__all__ = [
    "ConfigError",
    "PostprocessConfig",
    "PreviewCache",
    "ProbabilityKeys",
    "binary_closing",
    "binary_opening",
    "ellipsoid_footprint",
    "enabled_steps",
    "fill_cavities_3d",
    "fill_holes_2d",
    "filter_components",
    "iter_pipeline",
    "keep_components",
    "keep_largest_components",
    "label_components",
    "percentile_threshold_value",
    "preview_region",
    "preview_slice",
    "remove_components",
    "remove_dust",
    "run_pipeline",
    "scan_mask_from_ct",
    "threshold_absolute",
    "threshold_hysteresis",
    "threshold_percentile",
]
