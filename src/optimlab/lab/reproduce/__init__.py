"""``optimlab reproduce NAME``: the source documents' claims, one honest experiment per claim, with a verdict,
intervals, a figure.

The registry
------------
:data:`EXPERIMENTS` names every claim of issue 13 in the issue's order. Claim ``name`` lives in
``optimlab/lab/reproduce/experiments/<name with - as _>.py``; a name whose file does not exist yet is listed as
"not built" (:func:`available` gives the built ones), so a new claim is one file (and, for a claim not in the
issue, one line in :mod:`optimlab.lab.reproduce.claims`).

An experiment file
------------------
One readable module per claim, defining (module-level names)::

    NAME      = "adam-step-bound"           # the registry name
    TITLE     = "Adam's step bound ..."     # one line
    CLAIM     = "..."                       # the claim as the source documents state it
    CITATION  = "Kingma & Ba 2015 ..."      # paper(s) and reference code; shown in the figure caption
    PROTOCOL  = {...}                       # everything the numbers depend on, as plain data (JSON-able);
                                            # "seeds": [...] is the default seed list (--seeds overrides it)
    QUICK     = {...}                       # overrides of PROTOCOL keys for --quick (a smoke test)
    RULE      = "reproduced if ..."         # the verdict rule as text, written before any run
    CAPTION   = "..."                       # optional: what the figure shows (the citation is appended)

    def run(ctx: Context) -> dict: ...          # computes the evidence (JSON-able dict), see below
    def verdict(evidence: dict) -> Verdict: ... # the RULE as a function of the evidence only
    def figure(evidence: dict, path: Path) -> None: ...   # optional: writes the PNG
    def work(protocol: dict) -> list[Work]: ...           # optional: the work run(ctx) will do, priced up front

``work`` declares work, never seconds: the :class:`~optimlab.lab.training.runner.RunConfig` s that ``run`` gives
``ctx.sweep`` / ``ctx.tune`` (build them in one function that both call; a tuned study's are
:func:`~optimlab.lab.study.cost.planned_configs`), and for what runs in ``ctx.cached`` a
:class:`~optimlab.lab.study.cost.Training` (a training loop of this process, with its extra forward and backward
passes) or :class:`~optimlab.lab.study.cost.Steps` (an optimizer stepping a small tensor, no model). The lab's one
cost model, :mod:`optimlab.lab.study.cost`, prices it on this machine with short probe runs (:func:`estimate`,
``optimlab reproduce NAME --dry-run``); :func:`plan` counts its runs and steps without probing (``--list``). Price
what dominates; say in the docstring of ``work`` what is left out.

``verdict`` usually builds :class:`Check` s and returns :func:`verdict_from_checks` (all hold: reproduced; none:
not reproduced; else mixed; the reason lists every check with its numbers). The evidence dict may hold anything
the figure and the verdict need; the report prints its ``"tables"`` entry: a list of :func:`table` s, with rows
from :func:`interval_row` (mean and 95 % t interval over seeds, :mod:`optimlab.lab.present.stats`) under
:data:`INTERVAL_COLUMNS` and :func:`comparison_row` (Welch or paired t test, p-value) under
:data:`COMPARISON_COLUMNS`; and an optional ``"notes"`` list of strings.

The context
-----------
``run(ctx)`` gets a :class:`Context`: ``ctx.protocol`` (quick override applied), ``ctx.seeds``, ``ctx.quick``,
``ctx.folder`` (its results folder, ``OUT/<name>`` or ``OUT/<name>-quick``), ``ctx.jobs``, ``ctx.data_dir``, and:

- ``ctx.cached(key, fn)``: ``fn()``'s JSON result stored under a hash of ``key`` with the versions
  (optimlab, torch, python) and its cost; reused on a rerun (small numeric experiments, toy 2-D problems: one
  call per seed / setting, so Ctrl-C then a rerun loses only the piece in progress);
- ``ctx.sweep(configs, subdir)``: :class:`~optimlab.lab.training.runner.RunConfig` s through the lab's
  :func:`~optimlab.lab.study.sweep.run_sweep` (records with versions, seed and config; resumable by key);
- ``ctx.tune(task, optimizers, protocol, subdir)``: :func:`~optimlab.lab.study.tuning.tune_and_run`, the protocol of
  ``optimlab compare`` (equal budgets, selection on validation, final runs on fresh seeds);
- ``ctx.bar(total, desc)`` (progress: tqdm on a terminal, lines otherwise) and ``ctx.log(message)``.

Running
-------
:func:`run_experiment` (``load_experiment(name)``, ``make_context(...)``) returns an :class:`Outcome` and writes
``evidence.json`` (evidence, verdict, rule, protocol, seeds, versions) and ``figure.png``;
:func:`optimlab.lab.reproduce.report.write_report` writes ``report.md`` and ``report.html`` whose first table is
the claims with their verdicts. The command line is :mod:`optimlab.lab.commands.reproduce`.
"""

from __future__ import annotations

from optimlab.lab.reproduce.base import (
    COMPARISON_COLUMNS,
    INTERVAL_COLUMNS,
    MIXED,
    NOT_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    Check,
    Context,
    Experiment,
    Outcome,
    Verdict,
    comparison_row,
    config_key,
    estimate,
    interval_row,
    load_experiment,
    make_context,
    plan,
    run_experiment,
    table,
    verdict_from_checks,
)
from optimlab.lab.reproduce.claims import EXPERIMENTS, available, module_name

__all__ = [
    "EXPERIMENTS",
    "available",
    "module_name",
    "Check",
    "Context",
    "Experiment",
    "Outcome",
    "Verdict",
    "VERDICTS",
    "REPRODUCED",
    "NOT_REPRODUCED",
    "MIXED",
    "INTERVAL_COLUMNS",
    "COMPARISON_COLUMNS",
    "comparison_row",
    "config_key",
    "estimate",
    "interval_row",
    "load_experiment",
    "make_context",
    "plan",
    "run_experiment",
    "table",
    "verdict_from_checks",
]
