"""Post-processing of probability volumes: thresholds, morphology, components, one JSON-serialisable pipeline.

Qt-free. Public API (everything in ``__all__``; other modules are implementation):

* :class:`PostprocessConfig` (``config``) — every setting, validated, saved/loaded as JSON; bad values
  raise :class:`ConfigError` naming the file; :data:`THRESHOLD_MODES` lists the threshold modes;
* :func:`run_pipeline` / :func:`iter_pipeline` (``pipeline``) — probabilities (+ scan mask) → bool mask;
  the Tune widget, the ``postprocess`` CLI, submission export, training validation and proofreading use
  them. :func:`iter_pipeline_steps` is the step loop itself (with :func:`check_scan_mask` and
  :func:`as_probability_array` for its inputs), shared by the preview and the parameter sweep so their
  masks equal the pipeline's; :func:`enabled_steps` names the steps a config runs;
  :func:`scan_mask_from_ct` is the scanned region ``ct > 0``;
* :func:`preview_slice` / :func:`preview_region` with a :class:`PreviewCache` (``preview``) — the Tune
  widget's live view and proofreading's accept of a crop, equal to the pipeline on that region;
* the steps on their own: thresholds (``threshold``, with :class:`ProbabilityKeys`), ellipsoid
  morphology (``morphology``) and 26-connected component tools (``components``; the Components panel
  and proofreading delete/keep pieces with them; :class:`ComponentFilter` labels once and filters by
  size / keep-k for many values, the pipeline's components step and the sweep's;
  :func:`labelling_without_gil` makes a worker thread's labelling release the GIL);
* choosing settings on labelled volumes, in submodules not imported here (they pull in the metric):
  :mod:`.sweep` scores a parameter over a grid of values; :mod:`.choice` chooses a model's clean-up
  (hysteresis T_low × closing), stores it in the checkpoint and reads it back as its default.

The metric definition and label conventions the pipeline serves are in ``docs/challenge.md``.
"""

from .components import (
    ComponentFilter,
    fill_cavities_3d,
    fill_holes_2d,
    filter_components,
    keep_components,
    keep_largest_components,
    label_components,
    labelling_without_gil,
    remove_components,
    remove_dust,
)
from .config import THRESHOLD_MODES, ConfigError, PostprocessConfig
from .morphology import binary_closing, binary_opening, ellipsoid_footprint
from .pipeline import (
    as_probability_array,
    check_scan_mask,
    enabled_steps,
    iter_pipeline,
    iter_pipeline_steps,
    run_pipeline,
    scan_mask_from_ct,
)
from .preview import PreviewCache, preview_region, preview_slice
from .threshold import (
    ProbabilityKeys,
    percentile_threshold_value,
    threshold_absolute,
    threshold_hysteresis,
    threshold_percentile,
)

__all__ = [
    "THRESHOLD_MODES",
    "ComponentFilter",
    "ConfigError",
    "PostprocessConfig",
    "PreviewCache",
    "ProbabilityKeys",
    "as_probability_array",
    "binary_closing",
    "binary_opening",
    "check_scan_mask",
    "ellipsoid_footprint",
    "enabled_steps",
    "fill_cavities_3d",
    "fill_holes_2d",
    "filter_components",
    "iter_pipeline",
    "iter_pipeline_steps",
    "keep_components",
    "keep_largest_components",
    "label_components",
    "labelling_without_gil",
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
