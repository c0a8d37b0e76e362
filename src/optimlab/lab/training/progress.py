"""Progress, one implementation for the whole lab.

- :class:`Progress`: a count toward a total, shown as a tqdm bar, as printed lines (one at every tenth of the
  total), or not at all: the diagnostics' passes, a reproduce experiment's ``ctx.bar``, and the bars below;
- :func:`run_bar`: the bar of one run's steps (the runner updates it), drawn by the process that runs it (the
  local executor's workers) or by the driver from what the run reports (Ray); :func:`sweep_bar`: the bar of a
  sweep's runs; :func:`share_bars` / :func:`use_shared_bars`: the lock that lets worker processes draw bars
  side by side;
- :class:`StudyProgress`: the lines a study prints as its runs finish (``[done/total] elapsed, ~left | ...``)
  and when an optimizer's tuning is complete, for a log or a file (a terminal gets the bars instead).

Bars go to stderr (tqdm's default), lines to stdout. tqdm is imported here only, when a bar is made.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from optimlab.lab.catalog.metrics import fmt_value

if TYPE_CHECKING:
    from optimlab.lab.training.runner import RunConfig

__all__ = ["Progress", "run_bar", "sweep_bar", "share_bars", "use_shared_bars", "StudyProgress"]


class Progress:
    """``update(n)``, ``set(n)``, ``set_postfix_str(s)``, ``close()``; as a callable ``progress(done, total)`` it
    sets the count (the form the diagnostics functions call).

    ``enabled=False``: nothing is shown. Otherwise ``lines=None`` (the default): a tqdm bar when stdout is a
    terminal, else a printed line at every tenth of the total (``  DESC: n/total UNIT (p%, s.ss[, postfix])``);
    ``lines=False``: a bar always (the bars of runs and sweeps, made only where bars are wanted). ``bar``: tqdm
    options beside ``total``, ``desc`` and ``unit`` (default ``leave=False, dynamic_ncols=True, mininterval=0.3``).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "it", *, lines: bool | None = None,
                 **bar: Any) -> None:
        self.total, self.desc, self.n, self.unit = max(1, int(total)), desc, int(bar.get("initial", 0)), unit
        self._bar = None
        self._lines = False
        self._next = 0.1
        self._start = time.perf_counter()
        self._postfix = ""
        if enabled and (lines is False or (lines is None and sys.stdout.isatty())):
            from tqdm.auto import tqdm

            options = {"leave": False, "dynamic_ncols": True, "mininterval": 0.3, **bar}
            self._bar = tqdm(total=self.total, desc=desc, unit=unit, **options)
        elif enabled:
            self._lines = True

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and (self.n / self.total >= self._next - 1e-9 or self.n == self.total):
            while self._next <= self.n / self.total + 1e-9:
                self._next += 0.1
            elapsed = time.perf_counter() - self._start
            post = f", {self._postfix}" if self._postfix else ""
            print(f"  {self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%, "
                  f"{elapsed:.1f}s{post})", flush=True)

    def set(self, n: int) -> None:
        """Set the count to ``n`` (a bar is redrawn at once: the driver draws the runs of Ray's workers)."""
        if self._bar is not None:
            self.n = self._bar.n = n
            self._bar.refresh()
        else:
            self.update(n - self.n)

    def set_postfix_str(self, s: str) -> None:
        self._postfix = s
        if self._bar is not None:
            self._bar.set_postfix_str(s)

    def __call__(self, done: int, total: int) -> None:
        self.update(done - self.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_bar(config: RunConfig, position: int, enabled: bool = True) -> Progress | None:
    """The bar of one run's steps (``OPTIMIZER lr=LR sSEED``) at line ``position`` of the terminal, or ``None``
    when bars are off."""
    if not enabled:
        return None
    return Progress(config.steps, f"{config.optimizer} lr={config.lr:.3g} s{config.seed}", unit="step",
                    lines=False, position=position, mininterval=0.5)


def sweep_bar(total: int, done: int) -> Progress:
    """The driver's bar of a sweep's runs (on the terminal's first line, kept when it ends); ``done``: the runs
    found finished already."""
    return Progress(total, "sweep", unit="run", lines=False, initial=done, position=0, leave=True, mininterval=0.1)


def share_bars(context: Any) -> Any:
    """A lock, made in the multiprocessing ``context``, for the bars of several processes (this one uses it
    from now on; pass it to each worker's :func:`use_shared_bars`)."""
    from tqdm.auto import tqdm

    lock = context.RLock()
    tqdm.set_lock(lock)
    return lock


def use_shared_bars(lock: Any) -> None:
    """In a worker process: draw bars under the parent's ``lock`` (:func:`share_bars`)."""
    from tqdm.auto import tqdm

    tqdm.set_lock(lock)


class StudyProgress:
    """Progress as lines (for logs and files): one line per finished run, at most one per ``every`` seconds
    (always the last), plus a line when an optimizer's tuning is complete, with its cost. Called with the events
    of :func:`~optimlab.lab.study.tuning.tune_and_run` (``"record"``, ``"selected"``); ``lines=False`` prints
    only the ``"selected"`` lines (a terminal shows the runs as bars)."""

    def __init__(self, total_steps: int, every: float = 5.0, lines: bool = True, stream: Any = None):
        self.total_steps = max(1, total_steps)
        self.every, self.lines = every, lines
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.steps = 0
        self.last = -math.inf

    def __call__(self, kind: str, **info: Any) -> None:
        if kind == "record":
            rec = info["record"]
            self.steps += rec.config.steps
            now = time.perf_counter()
            if not self.lines or (now - self.last < self.every and info["done"] < info["total"]):
                return
            self.last = now
            elapsed = now - self.start
            left = elapsed * (self.total_steps - self.steps) / max(1, self.steps)
            c = rec.config
            key = rec.metric_key
            split = key.partition("_")[0]
            value = f"{split} {rec.metric} {fmt_value(rec.final(key), rec.metric)}"
            result = "diverged" if not rec.ok else value
            hp = "".join(f" {k}={v:.3g}" for k, v in c.hparams)
            print(
                f"[{info['done']:>4}/{info['total']}] {_clock(elapsed)} elapsed, ~{_clock(max(0.0, left))} left | "
                f"{info['phase']} {c.optimizer} lr={c.lr:.3g}{hp} seed {c.seed}: {result}",
                file=self.stream,
                flush=True,
            )
        elif kind == "selected":
            sel, res = info["selection"], info["result"]
            metric = sel.trials[0].metric
            value = "all trials diverged" if sel.all_diverged else f"{fmt_value(sel.value, metric)}"
            hp = "".join(f", {k} {v:.3g}" for k, v in sel.hparams.items())
            edge = f" [edge: {'; '.join(sel.edges)}]" if sel.edges else ""
            print(
                f"selected {sel.spec}: lr {sel.lr:.3g}{hp} ({value}); tuning cost {len(sel.trials)} trials, "
                f"{res.tuning_cpu_seconds:.1f} CPU s{edge}",
                file=self.stream,
                flush=True,
            )


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
