"""One run's record: :class:`RunRecord`, the typed, read-only view through which everything in the lab reads a run.

A record is what :func:`~optimlab.lab.training.runner.run` returns and what ``results.jsonl`` keeps, one JSON object
a line, in format :data:`RECORD_VERSION`:

- ``version``; ``key`` (the config's :meth:`~optimlab.lab.training.config.RunConfig.key`); ``config`` (the
  :class:`~optimlab.lab.training.config.RunConfig`, tuples as lists);
- ``status``: ``"ok"``, or ``"diverged"`` when the training loss became non-finite (the run stopped there);
- ``metric``, ``higher_is_better``, ``target``: the task's metric, its direction and its validation target;
- ``optimizer_settings``: the first param group's settings as constructed, with the optimizer's class;
- ``history``: the curves, one value per evaluation (the first at step 0): ``step``; ``lr``; ``time`` and ``cpu``,
  the training wall and CPU seconds so far; ``batch_loss``, the mean training-batch loss since the evaluation
  before; and ``<split>_<name>`` (``train_loss``, ``val_accuracy``, ...) for each split the config names but
  ``test``. ``None`` stands for a value that was not finite;
- ``test``: the test split's ``loss`` and metric, evaluated once, at the end (where the run stopped, for a run
  that diverged or that a callback stopped), or ``None`` for a run whose config does not name the test split;
- ``steps_done``, ``train_seconds``, ``train_cpu_seconds``, ``time_per_step``, ``step_cpu_ms``, ``step_wall_ms``,
  ``fwd_bwd_cpu_ms``, ``wall_seconds``: what it took;
- ``environment``: package versions, machine (``cpu_model`` among them) and threads, the UTC ``date`` at the end of
  the run, and the code's identity under ``"code"``
  (:mod:`~optimlab.lab.training.code_identity`; records written before it was added have none);
- ``extras``, when a callback put something in ``ctx.extras``.

A view, not a dataclass of those fields: the JSON object is the format, so the record keeps it and reads it where it
is. :meth:`RunRecord.to_json` gives back exactly the object :meth:`RunRecord.from_json` got, with the fields an older
record of this format lacks still absent, and this docstring is the one description of the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from optimlab.lab.training.config import RunConfig

__all__ = ["RECORD_VERSION", "ResultsVersionError", "RecordError", "RunRecord", "time_to_target", "finite_or_none"]

RECORD_VERSION = 2


class ResultsVersionError(ValueError):
    """A results folder (or a record) written by another version of the lab's record format."""


class RecordError(ValueError):
    """A JSON value that is not a record the lab can use; the message says why (:meth:`RunRecord.problem`)."""


def time_to_target(
    steps: Sequence[float], values: Sequence[float | None], target: float, *, higher_is_better: bool
) -> float:
    """The first ``steps[i]`` (a step count or seconds) at which ``values[i]`` reaches ``target``; ``inf`` if never.

    ``None`` values (a diverged evaluation) never reach it.
    """
    if len(steps) != len(values):
        raise ValueError(f"Invalid lengths: {len(steps)} steps, {len(values)} values; expected equal lengths")
    if not math.isfinite(target):
        raise ValueError(f"Invalid target: {target!r}; expected a finite number")
    for s, v in zip(steps, values, strict=True):
        if v is not None and math.isfinite(v) and (v >= target if higher_is_better else v <= target):
            return float(s)
    return math.inf


def _number(x: Any, none: bool = True) -> bool:
    return (none and x is None) or (isinstance(x, (int, float)) and not isinstance(x, bool))


def finite_or_none(x: Any) -> float | None:
    """``x`` when it is a finite number, else ``None`` (how a record stores a value that was not finite)."""
    return x if _number(x, none=False) and math.isfinite(x) else None


_NUMBERS = ("steps_done", "train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms",
            "fwd_bwd_cpu_ms", "wall_seconds", "target")


class RunRecord:
    """One run's record (see the module's docstring for its fields), read-only.

    Values: :meth:`final`, :meth:`at` and :meth:`test` give a number or ``None`` (missing, or not finite) and never
    look at :attr:`status`: a reader that counts a diverged run as missing says so with :attr:`ok`.
    :meth:`steps_to` and :meth:`cpu_seconds_to` give the time to a target (``inf`` if never reached).
    """

    __slots__ = ("_data", "_config")

    _data: dict[str, Any]
    _config: RunConfig

    def __init__(self, data: dict[str, Any], config: RunConfig) -> None:
        """Use :meth:`from_json` or :meth:`from_line`: they check the record."""
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_config", config)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a RunRecord is read-only (cannot set {name!r})")

    def __getstate__(self) -> dict[str, Any]:
        return self._data

    def __setstate__(self, data: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_config", RunConfig.from_dict(data["config"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunRecord) and self._data == other._data

    __hash__ = None  # type: ignore[assignment] - equal records need not be one object; a record is not a dict key

    def __repr__(self) -> str:
        c = self._config
        return f"RunRecord({self.key}: {c.task} {c.optimizer} lr={c.lr:g} seed={c.seed}, {self.status})"

    # -- reading and writing ------------------------------------------------------------------------

    @staticmethod
    def problem(value: Any) -> str | None:
        """Why ``value`` (one parsed line of ``results.jsonl``) is not a record of this version that the lab can
        use, or ``None``: a dict with a string ``key``, a ``config`` that :meth:`RunConfig.from_dict` accepts,
        string ``status`` and ``metric``, a ``history`` of lists of numbers (``None`` where a value was not
        finite) with a ``step`` list, a ``test`` dict of numbers or ``None``, and numbers (or ``None``) for its
        costs. The version is :meth:`from_json`'s to check."""
        if not isinstance(value, dict):
            return f"a JSON {type(value).__name__}, not a record"
        if not isinstance(value.get("key"), str):
            return "no 'key'"
        try:
            RunConfig.from_dict(value["config"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return f"no valid 'config' ({e})"
        for name in ("status", "metric"):
            if not isinstance(value.get(name), str):
                return f"no {name!r}"
        history = value.get("history")
        if not isinstance(history, dict) or not isinstance(history.get("step"), list):
            return "no 'history' with a 'step' list"
        for name, values in history.items():
            if not isinstance(values, list) or not all(map(_number, values)):
                return f"history {name!r} is not a list of numbers"
        test = value.get("test")
        if test is not None and (not isinstance(test, dict) or not all(map(_number, test.values()))):
            return "'test' is not a dict of numbers"
        for name in _NUMBERS:
            if not _number(value.get(name)):
                return f"{name!r} is not a number"
        return None

    @classmethod
    def from_json(cls, value: Any) -> RunRecord:
        """The record of a JSON object (a copy is kept: ``value`` stays the caller's). Raises
        :class:`ResultsVersionError` for a record of another format version and :class:`RecordError` (naming
        the problem, :meth:`problem`) for anything else that is not a record."""
        return cls._checked(json.loads(json.dumps(value)))

    @classmethod
    def from_line(cls, line: str | bytes) -> RunRecord:
        """The record of one line of ``results.jsonl``; raises ``json.JSONDecodeError`` where the line is not JSON
        (cut short by a hard kill), else as :meth:`from_json`."""
        return cls._checked(json.loads(line))

    @classmethod
    def _checked(cls, value: Any) -> RunRecord:
        if isinstance(value, dict) and "key" in value and value.get("version") != RECORD_VERSION:
            raise ResultsVersionError(
                f"record format {value.get('version')!r}; this version reads and writes format {RECORD_VERSION}"
            )
        problem = cls.problem(value)
        if problem is not None:
            raise RecordError(problem)
        return cls(value, RunConfig.from_dict(value["config"]))

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (a fresh copy): ``RunRecord.from_json(r.to_json()) == r``."""
        return json.loads(json.dumps(self._data))

    def to_line(self) -> str:
        """The record as one line of ``results.jsonl`` (without the newline)."""
        return json.dumps(self._data)

    # -- what ran -----------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._data["version"]

    @property
    def key(self) -> str:
        """The config's key (:meth:`RunConfig.key`): the run's identity for resume."""
        return self._data["key"]

    @property
    def config(self) -> RunConfig:
        return self._config

    @property
    def status(self) -> str:
        """``"ok"``, or ``"diverged"``: the training loss became non-finite and the run stopped there."""
        return self._data["status"]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def metric(self) -> str:
        """The task's metric (``"accuracy"``, ``"perplexity"``, ``"loss"``)."""
        return self._data["metric"]

    @property
    def higher_is_better(self) -> bool | None:
        """Whether a higher :attr:`metric` is better (``None`` in a record that does not say)."""
        return self._data.get("higher_is_better")

    @property
    def target(self) -> float | None:
        """The task's validation target when the run was made."""
        return self._data.get("target")

    @property
    def optimizer_settings(self) -> Mapping[str, Any]:
        return MappingProxyType(self._data.get("optimizer_settings") or {})

    @property
    def environment(self) -> Mapping[str, Any]:
        """Package versions, machine, threads and (``"code"``) the code's identity; ``{}`` when not recorded."""
        return MappingProxyType(self._data.get("environment") or {})

    @property
    def code(self) -> Mapping[str, Any] | None:
        """The code's identity (:func:`~optimlab.lab.training.code_identity.code_identity`), ``None`` in a record
        written before it was recorded."""
        return self.environment.get("code")

    @property
    def extras(self) -> Mapping[str, Any]:
        """What callbacks put in ``ctx.extras`` (``{}`` when nothing)."""
        return MappingProxyType(self._data.get("extras") or {})

    # -- what it took -------------------------------------------------------------------------------

    @property
    def steps_done(self) -> int | None:
        return self._data.get("steps_done")

    @property
    def train_seconds(self) -> float | None:
        """Training wall time (evaluations excluded)."""
        return self._data.get("train_seconds")

    @property
    def train_cpu_seconds(self) -> float | None:
        """Training CPU time of this process (evaluations excluded)."""
        return self._data.get("train_cpu_seconds")

    @property
    def time_per_step(self) -> float | None:
        """Median wall seconds of a training step."""
        return self._data.get("time_per_step")

    @property
    def step_cpu_ms(self) -> float | None:
        """Median CPU milliseconds of ``optimizer.step()``."""
        return self._data.get("step_cpu_ms")

    @property
    def step_wall_ms(self) -> float | None:
        """Median wall milliseconds of ``optimizer.step()``."""
        return self._data.get("step_wall_ms")

    @property
    def fwd_bwd_cpu_ms(self) -> float | None:
        """Median CPU milliseconds of a step's forward and backward pass."""
        return self._data.get("fwd_bwd_cpu_ms")

    @property
    def wall_seconds(self) -> float | None:
        """The whole run's wall time, evaluations and set-up included."""
        return self._data.get("wall_seconds")

    # -- the numbers --------------------------------------------------------------------------------

    @property
    def history(self) -> Mapping[str, list[Any]]:
        """The curves (see the module's docstring); read, do not change, their lists."""
        return MappingProxyType(self._data["history"])

    @property
    def test_values(self) -> Mapping[str, float | None] | None:
        """The test split's values, evaluated once at the end; ``None`` for a run that does not name the split."""
        test = self._data.get("test")
        return None if test is None else MappingProxyType(test)

    @property
    def metric_key(self) -> str:
        """The curve of :attr:`metric` that tells how the run is doing: ``val_<metric>`` where the run evaluated
        the validation split, else ``train_<metric>`` (the tasks without data splits)."""
        key = f"val_{self.metric}"
        return key if key in self._data["history"] else f"train_{self.metric}"

    def final(self, key: str) -> float | None:
        """The last value of the curve ``key`` (``"val_accuracy"``, ``"train_loss"``); ``None`` when the record
        has no such curve, or its last value was not finite. ``test_<name>`` (the test split is evaluated once,
        not a curve) reads :meth:`test`."""
        values = self._data["history"].get(key)
        if values:
            return finite_or_none(values[-1])
        split, _, name = key.partition("_")
        return self.test(name) if split == "test" else None

    def at(self, key: str, step: int) -> float | None:
        """The curve ``key`` at the first evaluation at or after ``step``; ``None`` when there is none (the run
        ended or diverged before), the record has no such curve, or the value was not finite."""
        history = self._data["history"]
        for s, v in zip(history["step"], history.get(key) or [], strict=False):
            if s >= step:
                return finite_or_none(v)
        return None

    def test(self, name: str) -> float | None:
        """The test split's ``name`` (``"accuracy"``, ``"loss"``, ``"perplexity"``); ``None`` when the run did not
        evaluate it or the value was not finite."""
        return finite_or_none((self._data.get("test") or {}).get(name))

    def steps_to(self, target: float, *, key: str | None = None, higher_is_better: bool | None = None) -> float:
        """The first evaluated step at which the curve ``key`` (default :attr:`metric_key`) reaches ``target``
        (:func:`time_to_target`: ``inf`` if never; a value that was not finite never reaches it).
        ``higher_is_better`` defaults to the record's. Raises ``KeyError`` when the record has no such curve."""
        return self._time_to(target, "step", key, higher_is_better)

    def cpu_seconds_to(self, target: float, *, key: str | None = None, higher_is_better: bool | None = None) -> float:
        """As :meth:`steps_to`, in training CPU seconds (the ``cpu`` curve: evaluations excluded)."""
        return self._time_to(target, "cpu", key, higher_is_better)

    def _time_to(self, target: float, clock: str, key: str | None, higher_is_better: bool | None) -> float:
        history = self._data["history"]
        key = self.metric_key if key is None else key
        if key not in history:
            raise KeyError(f"the record has no curve {key!r} (it has {', '.join(history)})")
        higher = self.higher_is_better if higher_is_better is None else higher_is_better
        if higher is None:
            raise ValueError("the record does not say whether a higher metric is better: pass higher_is_better")
        return time_to_target(history[clock], history[key], target, higher_is_better=higher)
