"""optimlab's lab: run optimizers side by side on real data and report what happened.

Needs the ``optimlab[lab]`` extra (matplotlib, mnist1d, tqdm). The lab imports the library; the library never
imports the lab. Entry point: ``optimlab compare`` (see :mod:`optimlab.lab.commands.compare`; the command line:
:mod:`optimlab.lab.commands.cli`).
"""

from optimlab.lab.catalog.tasks import TASKS, get_task
from optimlab.lab.training.runner import Callback, RunConfig, run

__all__ = ["Callback", "RunConfig", "run", "TASKS", "get_task"]
