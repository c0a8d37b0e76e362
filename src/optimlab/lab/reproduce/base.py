"""The pieces of a reproduction: the experiment definition, the run context, verdicts, evidence.

An experiment is a module of :mod:`optimlab.lab.reproduce.experiments` (see the package docstring for what it
defines); :func:`load_experiment` wraps it in an :class:`Experiment`. :func:`run_experiment` runs it in a
:class:`Context` and returns an :class:`Outcome` (evidence, verdict, figure), also written as
``<out>/<name>/evidence.json``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optimlab.lab.study.cost import CostEstimate

from optimlab.lab.reproduce.claims import EXPERIMENTS, module_name
from optimlab.lab.study.session import Session
from optimlab.lab.training.jsonable import jsonable

__all__ = [
    "VERDICTS",
    "REPRODUCED",
    "NOT_REPRODUCED",
    "MIXED",
    "Verdict",
    "Check",
    "verdict_from_checks",
    "Experiment",
    "Context",
    "Outcome",
    "load_experiment",
    "run_experiment",
    "plan",
    "estimate",
    "interval_row",
    "comparison_row",
    "table",
    "config_key",
    "EVIDENCE_FILE",
    "FIGURE_FILE",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
MIXED = "mixed"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, MIXED)
EVIDENCE_FILE = "evidence.json"
FIGURE_FILE = "figure.png"
CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class Verdict:
    """``value`` in :data:`VERDICTS` and the ``reason``, computed from the numbers."""

    value: str
    reason: str

    def __post_init__(self) -> None:
        if self.value not in VERDICTS:
            raise ValueError(f"Invalid verdict: {self.value!r}; expected one of {', '.join(VERDICTS)}")

    def to_dict(self) -> dict[str, str]:
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class Check:
    """One condition of a rule: what it says, whether it held, and the numbers it was decided on."""

    text: str
    passed: bool
    detail: str = ""


def verdict_from_checks(checks: Sequence[Check]) -> Verdict:
    """The usual rule: every check holds -> reproduced; none holds -> not reproduced; otherwise mixed.

    The reason lists each check with its numbers, so a reader sees why."""
    if not checks:
        raise ValueError("Invalid checks: []; expected at least one check")
    passed = sum(c.passed for c in checks)
    value = REPRODUCED if passed == len(checks) else NOT_REPRODUCED if passed == 0 else MIXED
    parts = [f"{'✓' if c.passed else '✗'} {c.text}" + (f" ({c.detail})" if c.detail else "") for c in checks]
    return Verdict(value, f"{passed}/{len(checks)} checks hold: " + "; ".join(parts))


# ----------------------------------------------------------------------------------------------------
# Evidence helpers


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> dict[str, Any]:
    """An evidence table (JSON-ready): the report prints it as it is."""
    rows = [list(r) for r in rows]
    if any(len(r) != len(columns) for r in rows):
        raise ValueError(f"Invalid table {title!r}: every row needs {len(columns)} cells")
    return {"title": title, "columns": list(columns), "rows": rows, "note": note}


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.4g}"


def interval_row(label: str, values: Sequence[float], confidence: float = 0.95) -> list[Any]:
    """``[label, n, mean, "[low, high]"]``: the mean and Student-t interval over seeds (one value: no interval)."""
    from optimlab.lab.present.stats import mean_ci

    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return [label, len(vals), "–", "–"]
    ci = mean_ci(finite, confidence)
    interval = "–" if ci.n < 2 else f"[{_fmt(ci.low)}, {_fmt(ci.high)}]"
    n = f"{ci.n}" if len(finite) == len(vals) else f"{ci.n} (of {len(vals)}: others non-finite)"
    return [label, n, _fmt(ci.mean), interval]


INTERVAL_COLUMNS = ("", "n", "mean", "95% t interval")


def comparison_row(label: str, a: Sequence[float], b: Sequence[float], paired: bool = False) -> list[Any]:
    """``[label, mean difference a - b, t, p]`` from Welch's (or the paired) t test
    (:mod:`optimlab.lab.present.stats`)."""
    from optimlab.lab.present.stats import paired_test, welch_test

    a, b = [float(v) for v in a], [float(v) for v in b]
    try:
        r = paired_test(a, b) if paired else welch_test(a, b)
    except ValueError as e:
        return [label, _fmt(sum(a) / len(a) - sum(b) / len(b)) if a and b else "–", "–", f"n/a ({e})"]
    return [label, _fmt(sum(a) / len(a) - sum(b) / len(b)), _fmt(r.t), f"{r.p:.3g}"]


COMPARISON_COLUMNS = ("comparison", "mean difference", "t", "p (two-sided)")


def config_key(config: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-able config."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------
# The experiment


@dataclass(frozen=True)
class Experiment:
    """An experiment module, checked: its texts, protocol (with the ``--quick`` override) and functions."""

    name: str
    title: str
    claim: str
    citation: str
    rule: str
    protocol: Mapping[str, Any]
    quick: Mapping[str, Any]
    run: Callable[[Context], dict[str, Any]]
    verdict: Callable[[dict[str, Any]], Verdict]
    figure: Callable[[dict[str, Any], Path], None] | None
    work: Callable[[Mapping[str, Any]], Sequence[Any]] | None
    caption: str
    module: ModuleType | None = None

    def protocol_for(self, quick: bool = False) -> dict[str, Any]:
        """The protocol as data (a deep copy), with the ``QUICK`` override applied when ``quick``."""
        p = copy.deepcopy(dict(self.protocol))
        if quick:
            p.update(copy.deepcopy(dict(self.quick)))
        return p

    @staticmethod
    def from_module(module: ModuleType) -> Experiment:
        missing = [a for a in ("NAME", "TITLE", "CLAIM", "CITATION", "RULE", "PROTOCOL", "run", "verdict")
                   if not hasattr(module, a)]
        if missing:
            raise ValueError(f"Invalid experiment {module.__name__}: missing {', '.join(missing)}")
        if hasattr(module, "cost") and not hasattr(module, "work"):  # the old API, seconds measured elsewhere
            raise ValueError(f"Invalid experiment {module.__name__}: cost() is no longer read; declare work(protocol) "
                             "instead (the runs it will do; optimlab.lab.study.cost prices them on this machine)")
        quick = getattr(module, "QUICK", {})
        unknown = sorted(set(quick) - set(module.PROTOCOL))
        if unknown:
            raise ValueError(f"Invalid experiment {module.__name__}: QUICK overrides unknown keys {unknown}")
        return Experiment(
            name=module.NAME,
            title=module.TITLE,
            claim=module.CLAIM,
            citation=module.CITATION,
            rule=module.RULE,
            protocol=module.PROTOCOL,
            quick=quick,
            run=module.run,
            verdict=module.verdict,
            figure=getattr(module, "figure", None),
            work=getattr(module, "work", None),
            caption=getattr(module, "CAPTION", ""),
            module=module,
        )


def load_experiment(name: str) -> Experiment:
    """The experiment ``name`` (a registered name such as ``adam-step-bound``, or a module path)."""

    if name in EXPERIMENTS:
        module = importlib.import_module(f"optimlab.lab.reproduce.experiments.{module_name(name)}")
    elif "." in name:
        module = importlib.import_module(name)
    else:
        raise ValueError(f"unknown claim {name!r}; available: {', '.join(EXPERIMENTS)} (optimlab reproduce --list)")
    return Experiment.from_module(module)


# ----------------------------------------------------------------------------------------------------
# The context


@dataclass
class Context:
    """What an experiment's ``run(ctx)`` gets.

    ``protocol``: the protocol dict (quick override applied); ``seeds``: the seeds to use (``--seeds`` or the
    protocol's ``"seeds"``); ``folder``: the experiment's results folder; ``jobs``, ``data_dir``, ``progress``
    (bars on a terminal, lines otherwise; ``False``: silent).
    """

    name: str
    protocol: dict[str, Any]
    seeds: tuple[int, ...]
    folder: Path
    quick: bool = False
    jobs: int = 1
    data_dir: str | None = None
    progress: bool = True
    log_stream: Any = None
    computed: int = field(default=0, init=False)
    reused: int = field(default=0, init=False)

    def log(self, message: str) -> None:
        """A line for the user (suppressed when ``progress`` is False)."""
        if self.progress:
            print(f"[{self.name}] {message}", file=self.log_stream, flush=True)

    def bar(self, total: int, desc: str, unit: str = "it") -> Any:
        """A progress bar (tqdm on a terminal, lines of 10 % otherwise): ``update(n)``, ``close()``."""
        from optimlab.lab.training.progress import Progress

        return Progress(total, f"{self.name}: {desc}", self.progress, unit)

    # -- small numeric experiments ------------------------------------------------------------------

    def cached(self, key: Mapping[str, Any], fn: Callable[[], Any]) -> Any:
        """``fn()``'s JSON result, stored in ``folder/cache/<hash of key>.json`` with the key, the versions
        (:func:`optimlab.lab.training.runner.environment`) and its cost; a later call with the same key reads it back.

        ``key`` must hold everything the result depends on (config, seed); results are written atomically, so
        an interrupted run loses only the piece in progress."""
        from optimlab.lab.training.runner import environment

        key = jsonable(dict(key))
        path = self.folder / "cache" / f"{config_key(key)}.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                problem = None if isinstance(stored, dict) and "result" in stored else "not a cached piece"
            except (OSError, ValueError) as e:  # empty or cut short (a power loss), not JSON, not text
                stored, problem = None, str(e) or type(e).__name__
            if problem is not None:
                from optimlab.lab.training.results import LabWarning

                warnings.warn(f"{path} is unreadable ({problem}); computing that piece again", LabWarning,
                              stacklevel=2)
            elif stored.get("version") == CACHE_VERSION and stored.get("key") == key:
                self.reused += 1
                return stored["result"]
        start, cpu = time.perf_counter(), time.process_time()
        result = jsonable(fn())
        record = {
            "version": CACHE_VERSION,
            "key": key,
            "result": result,
            "environment": environment(),
            "wall_seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_durably(path, json.dumps(record))
        self.computed += 1
        return result

    # -- training runs through the lab --------------------------------------------------------------

    def session(self, callbacks: Any = None) -> Session:
        """The :class:`~optimlab.lab.study.session.Session` of this context: the local pool of ``jobs`` workers
        with its data folder, progress lines and bars (none when ``progress`` is False), and ``callbacks``."""
        return Session.local(self.jobs, self.data_dir, self.progress, callbacks)

    def sweep(self, configs: Iterable[Any], subdir: str = "runs", callbacks: Any = None) -> list[Any]:
        """Run the :class:`~optimlab.lab.training.runner.RunConfig` s with
        :func:`~optimlab.lab.study.sweep.run_sweep` in ``folder/subdir`` (resumable by key; records carry versions,
        seed and config) and return their records (:class:`~optimlab.lab.training.record.RunRecord`), in the order
        of ``configs``. Raises KeyboardInterrupt when the sweep was interrupted."""
        from optimlab.lab.training.results import load_records

        configs = list(configs)
        out = self.folder / subdir
        outcome = self.session(callbacks).sweep(configs, out, phase=self.name)
        self.computed += outcome.finished
        self.reused += outcome.skipped
        if outcome.interrupted:
            raise KeyboardInterrupt
        by_key = {r.key: r for r in load_records(out)}
        return [by_key[c.key()] for c in configs]

    def tune(self, task: str, optimizers: Sequence[str], protocol: Any, subdir: str, callbacks: Any = None) -> Any:
        """:func:`optimlab.lab.study.tuning.tune_and_run` in ``folder/subdir`` (the ``optimlab compare`` protocol:
        equal budgets, selection on validation, final runs on fresh seeds); returns the StudyResult.
        ``callbacks``: a module-level function ``config -> [Callback, ...]`` (what they put in ``ctx.extras`` is
        in each record's ``"extras"``)."""
        from optimlab.lab.training.results import load_records

        out = self.folder / subdir
        before = {r.key for r in load_records(out)} if out.exists() else set()
        try:
            return self.session(callbacks).tune(task, optimizers, protocol, out)
        finally:
            after = {r.key for r in load_records(out)} if out.exists() else set()
            self.computed += len(after - before)
            self.reused += len(before)


# ----------------------------------------------------------------------------------------------------
# Running an experiment


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_experiment` returns (and writes as ``evidence.json``)."""

    experiment: Experiment
    evidence: dict[str, Any]
    verdict: Verdict
    figure: Path | None
    folder: Path
    quick: bool
    seconds: float
    computed: int = 0  # pieces (cached results, training runs) computed in this call
    reused: int = 0  # and found done in the results folder (an earlier call, or an earlier part of this one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.experiment.name,
            "title": self.experiment.title,
            "rule": self.experiment.rule,
            "verdict": self.verdict.to_dict(),
            "quick": self.quick,
            "seconds": self.seconds,
            "figure": self.figure.name if self.figure else None,
            "evidence": self.evidence,
        }


def _protocol(experiment: Experiment, quick: bool, seeds: Sequence[int] | None) -> dict[str, Any]:
    """The experiment's protocol at this size, with ``seeds`` (``--seeds``) instead of its own where given."""
    protocol = experiment.protocol_for(quick)
    if seeds is not None:
        protocol["seeds"] = list(seeds)
    return protocol


def plan(experiment: Experiment, quick: bool = False, seeds: Sequence[int] | None = None) -> tuple[int, int] | None:
    """``(runs, steps)`` of the experiment's declared work at this size (and with ``seeds`` instead of its own, as
    ``--seeds``), counted without probing or running anything; None if it declares no work."""
    from optimlab.lab.study.cost import count_work

    if experiment.work is None:
        return None
    return count_work(experiment.work(_protocol(experiment, quick, seeds)))


def estimate(
    experiment: Experiment,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    *,
    jobs: int = 1,
    data_dir: str | None = None,
) -> CostEstimate | None:
    """What the experiment's declared work costs at this size (and with ``seeds`` instead of its own, as
    ``--seeds``) on this machine with ``jobs`` workers, priced by the lab's one cost model
    (:func:`optimlab.lab.study.cost.estimate_work`: short probe runs of its tasks and optimizers); None if it
    declares no work."""
    from optimlab.lab.study.cost import estimate_work

    if experiment.work is None:
        return None
    return estimate_work(experiment.work(_protocol(experiment, quick, seeds)), jobs=jobs, data_dir=data_dir)


def make_context(
    experiment: Experiment,
    out: str | os.PathLike,
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
    data_dir: str | None = None,
    progress: bool = True,
) -> Context:
    """The :class:`Context` for ``experiment`` in ``out/<name>`` (``out/<name>-quick`` for ``--quick``)."""
    protocol = _protocol(experiment, quick, seeds)
    chosen = tuple(protocol.get("seeds", (0,)))
    folder = Path(out) / (experiment.name + ("-quick" if quick else ""))
    return Context(experiment.name, protocol, chosen, folder, quick, jobs, data_dir, progress)


def run_experiment(experiment: Experiment, ctx: Context) -> Outcome:
    """Run ``experiment`` in ``ctx``: evidence, verdict by its rule, figure; write ``evidence.json`` next to the
    figure in ``ctx.folder``. A rerun reads every finished piece back from the cache / results files."""
    from optimlab.lab.training.runner import environment

    ctx.folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    evidence = jsonable(experiment.run(ctx))
    verdict = experiment.verdict(evidence)
    if not isinstance(verdict, Verdict):
        raise TypeError(f"{experiment.name}.verdict must return a Verdict, got {type(verdict).__name__}")
    figure = None
    if experiment.figure is not None:
        figure = ctx.folder / FIGURE_FILE
        experiment.figure(evidence, figure)
    seconds = time.perf_counter() - start
    outcome = Outcome(experiment, evidence, verdict, figure, ctx.folder, ctx.quick, seconds, ctx.computed, ctx.reused)
    record = outcome.to_dict()
    record.update(protocol=jsonable(ctx.protocol), seeds=list(ctx.seeds), environment=environment(),
                  pieces={"computed": ctx.computed, "reused": ctx.reused})
    _write_durably(ctx.folder / EVIDENCE_FILE, json.dumps(record, indent=1))
    return outcome


def _write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably: a temporary file, fsync'ed, then renamed over
    ``path`` (a power loss leaves the old file or the new one, never an empty one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
