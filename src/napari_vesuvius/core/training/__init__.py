"""Training and fine-tuning of surface-detection networks (Qt-free; torch imported lazily).

This package imports nothing itself (``config``, ``rundir``, ``monitor`` and ``process`` stay free of
torch, so the Train widget and the CLI can read settings and follow runs without loading it): import
the modules directly. ``__all__`` lists the public modules; the names other packages use are:

* :mod:`.config` — the exact run settings: ``TrainConfig``, ``AugmentConfig``, ``load_config``,
  ``OPTIMIZER_DEFAULTS``, ``TrainConfigError`` (a bad setting, naming the config file);
* :mod:`.data` — training volumes and the train/validation split: ``collect_sources``,
  ``sources_from_folder``, ``split_sources``, ``VolumeSource``;
* :mod:`.runner` — the training job: ``train`` (a generator job writing the run folder);
* :mod:`.rundir` — the run folder's file names (``CONFIG_JSON``, ``METRICS_JSONL``,
  ``CHECKPOINT_BEST``, ``CHECKPOINT_LAST``, ``TRAIN_STATE``, ``TRAIN_LOG``, ``PID_FILE``, ...);
* :mod:`.process` — the training subprocess the widgets start: ``TrainingProcess``, ``running_pid``,
  ``write_pid_file`` / ``remove_pid_file`` (``train.pid`` with the start time: never a reused pid),
  exit codes;
* :mod:`.monitor` — follow ``metrics.jsonl``: ``RunWatcher``, ``read_metrics``, ``RunSummary``;
* :mod:`.postprocess_step` — the clean-up chosen per checkpoint at the end of a run:
  ``iter_choose_for_run``, ``POSTPROCESS_JSON``;
* :mod:`.validation` — pseudo-Dice and the leaderboard score on held-out volumes.

Internal to training: :mod:`.augment` (CT augmentations), :mod:`.loss` (Dice + CE with the ignore label
masked, see ``docs/challenge.md``), :mod:`.sampler` (patch sampler), :mod:`.model`, :mod:`.guard` and
``_trainer``.
"""

__all__ = [
    "augment",
    "config",
    "data",
    "guard",
    "loss",
    "model",
    "monitor",
    "postprocess_step",
    "process",
    "rundir",
    "runner",
    "sampler",
    "validation",
]
