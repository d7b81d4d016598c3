"""Experiment runner: teacher, baseline and distilled students on a dataset.

``tools/run_experiments.py`` is the command line; :func:`run_experiments`
does the work. The pieces, one per module:

* :mod:`.presets` -- model sizes, input scale and schedule per task;
* :mod:`.methods` -- the method table (each method's terms, read from
  its ``configs/<method>/`` config and adapted to the preset);
* :mod:`.dataset_configs` -- dataloaders/evaluators for the user's data;
* :mod:`.run_configs` -- the full mmengine config of every run;
* :mod:`.run_plan` -- which runs an experiment needs;
* :mod:`.scheduler` -- which runs may start (pure state, no I/O);
* :mod:`.run_executor` -- one run as a ``tools/train.py`` subprocess,
  resumable, and its :class:`~.run_executor.RunResult`;
* :mod:`.scalars_log` -- reading mmengine's ``scalars.json``;
* :mod:`.results_report` -- ``results.json`` and ``results.md``;
* :mod:`.results_plot` -- ``results.png``;
* :mod:`.progress` -- run counter and ETA;
* :mod:`.time_budget` -- ``--budget time``: probe seconds per
  iteration and give each distilled student the baseline's time;
* :mod:`.cluster` -- ``--executor slurm``: each run as a submitit job;
* :mod:`.evidence` -- seed-paired gains, their intervals and
  ``--recommend``;
* :mod:`.experiment` -- the orchestration.
"""
from .experiment import ExperimentOptions, run_experiments
from .methods import METHODS, MethodSpec, ModelInfo, methods_for
from .presets import PRESETS, Preset, get_preset

__all__ = [
    'ExperimentOptions', 'run_experiments', 'METHODS', 'MethodSpec',
    'ModelInfo', 'methods_for', 'PRESETS', 'Preset', 'get_preset'
]
