"""Sliding-window 3D inference: models, normalisation, the tiling engine and model loading.

Public API, by module (import from the module; this package imports nothing, so reading the
settings does not load torch):

- :mod:`.settings`: :class:`~.settings.SlidingWindowSettings` (step, Gaussian, TTA axes, batch size,
  device, precision, output dtype, skip air), :func:`~.settings.add_settings_arguments` /
  :func:`~.settings.settings_from_args` for the CLI, :func:`~.settings.parse_tta`.
- :mod:`.models`: :class:`~.models.ModelSpec`, :func:`~.models.load_models`, :func:`~.models.as_members`,
  :func:`~.models.model_specs` — model members and their ensemble weights.
- :mod:`.engine`: :func:`~.engine.predict_volume` (job) / :func:`~.engine.predict`,
  :class:`~.engine.PredictionResult`.
- :mod:`.outputs`: :func:`~.outputs.create_prediction_output` — a zarr prediction output written to a
  partial sibling and published atomically.
- :mod:`.blocks`: block-wise prediction for full scrolls (``core/scroll``).
- :mod:`.loading`, :mod:`.checkpoint`, :mod:`.nnunet`: loading built-in checkpoints and nnU-Net models;
  :mod:`.model_api`: ``InferenceModel``, ``WeightedModel``, ``Normalization``.
"""
