"""``optimlab.lab.compare``: ``optimlab compare`` from Python, on any task, with the same folder and report."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.tasks import Task, get_task

__all__ = ["compare", "task_name"]


def task_name(task: str | Callable[[], Task]) -> str:
    """The string that names ``task`` in every worker: ``task`` itself when it is a string, else the
    ``module:function`` of a factory defined at the top level of an importable module (a factory of ``__main__``, a
    lambda or a nested function cannot be imported by a worker: give ``'file.py:make_task'`` instead)."""
    if isinstance(task, str):
        return task
    if isinstance(task, Task):
        raise TypeError("Invalid task: a Task instance cannot be sent to the workers; give the function that makes "
                        "it (defined in a module), or 'path/to/file.py:make_task'")
    module, qualname = getattr(task, "__module__", None), getattr(task, "__qualname__", "")
    if not callable(task) or not module or "<" in qualname:
        raise TypeError(f"Invalid task: {task!r}; expected a task name, 'path/to/file.py:make_task', or a function "
                        "defined at the top level of a module")
    if module == "__main__":
        main = getattr(__import__("__main__"), "__file__", None)
        if not main:
            raise TypeError(f"Invalid task: {qualname} is defined in an interactive session; put it in a file and "
                            "give 'path/to/file.py:make_task'")
        return f"{Path(main).absolute()}:{qualname}"
    if module.startswith("optimlab_user_task_"):  # loaded from a file by get_task: name the file again
        return f"{__import__(module).__file__}:{qualname}"
    return f"{module}:{qualname}"


def compare(
    task: str | Callable[[], Task],
    optimizers: Sequence[str],
    out: str | os.PathLike,
    *,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
    data_dir: str | None = None,
    progress: bool = False,
    report: bool = True,
    **protocol: Any,
) -> Any:
    """Tune ``optimizers`` with equal budgets on ``task`` and run each on fresh ``seeds``, into the results folder
    ``out`` (the folder, records and report of ``optimlab compare --out OUT``; run it again to resume). Returns the
    :class:`~optimlab.lab.study.tuning.StudyResult`; ``report``: also write ``summary.csv``, the figures and
    ``report.html`` into ``out``, as the command does.

    ``task``: a built-in task's name, ``text:PATH``, ``arrays:PATH``, ``'path/to/file.py:make_task'``,
    ``'package.module:make_task'``, or a factory function defined at the top level of a module. ``protocol``:
    any field of :class:`~optimlab.lab.study.protocol.Protocol` (``steps``, ``batch_size``, ``eval_every``,
    ``budget``, ``tuning``, ``trial_fraction``, ``schedule``, ``target``, ``lrs``, ...); the rest are the task's
    defaults (:func:`~optimlab.lab.study.protocol.default_protocol`). ``jobs``: worker processes of the local pool.
    """
    from optimlab.lab.present.report import build_report
    from optimlab.lab.study.protocol import default_protocol
    from optimlab.lab.study.session import Session, check_study, plan_study

    if isinstance(optimizers, str):
        raise TypeError(f"Invalid optimizers: {optimizers!r}; expected a list of specs, e.g. ['adam', 'sgdm']")
    if not optimizers:
        raise ValueError("Invalid optimizers: []; expected at least one optimizer spec")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"Invalid jobs: {jobs!r}; expected a positive integer")
    resolved = get_task(task_name(task))
    fields = dict(protocol)
    if seeds is not None:
        fields["seeds"] = tuple(seeds)
    if "steps" in fields and "eval_every" not in fields:
        fields["eval_every"] = min(resolved.eval_every, fields["steps"])
    proto = default_protocol(resolved, **fields)
    specs = list(optimizers)
    check_study(proto, specs, data_dir)
    plan = plan_study(proto, specs, Path(out), jobs=jobs, data_dir=data_dir)
    session = Session.local(jobs, data_dir=data_dir, progress=progress)
    study = session.run([plan], jobs=plan.jobs)[resolved.name]
    if report and not study.interrupted:
        build_report(out)
    return study
