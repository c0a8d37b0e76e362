"""optimlab's lab: run optimizers side by side on real data and report what happened.

Needs the ``optimlab[lab]`` extra (matplotlib, mnist1d, tqdm, scipy). The lab imports the library; the library never
imports the lab. Entry point: ``optimlab compare`` (see :mod:`optimlab.lab.commands.compare`; the command line:
:mod:`optimlab.lab.commands.cli`).

Its rooms follow the pipeline, bottom to top; a room imports only the rooms below it (``tests/test_layers.py``):

- :mod:`~optimlab.lab.catalog`: what can be compared: tasks, their models and data, optimizer presets, search
  spaces, the adapter to the library.
- :mod:`~optimlab.lab.training`: one run: its config, the training loop, its record, the results folder.
- :mod:`~optimlab.lab.executors`: where runs execute (local processes, Ray) and where they are logged
  (TensorBoard, MLflow).
- :mod:`~optimlab.lab.study`: many runs under one protocol: the sweep, tuning with equal budgets, selection, cost.
- :mod:`~optimlab.lab.present`: what a study shows: statistics, the summary, the report, the figures and pages.
- :mod:`~optimlab.lab.reproduce`: the claims, one experiment file each, with their verdicts and report.
- :mod:`~optimlab.lab.commands`: the ``optimlab`` command line.

From Python: :func:`compare` (``optimlab compare`` on any task, the same folder and report) and :class:`Task`, the
protocol a task of your own follows (``optimlab compare --task my_task.py:make_task``).
"""

from optimlab.lab.api import compare
from optimlab.lab.catalog.tasks import TASKS, Task, get_task
from optimlab.lab.training.runner import Callback, RunConfig, run

__all__ = ["Callback", "RunConfig", "run", "TASKS", "Task", "get_task", "compare"]
