"""Where runs execute and where they are logged: the local process pool, Ray, and the TensorBoard/MLflow trackers.

An executor only runs configs and hands records back; the study's driver writes them. Imports
:mod:`optimlab.lab.training` and :mod:`optimlab.lab.catalog`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from optimlab.lab.training.config import RunConfig
    from optimlab.lab.training.record import RunRecord

__all__ = ["Executor", "Closing"]

_Self = TypeVar("_Self", bound="Closing")


class Executor(Protocol):
    """Runs configs and yields each run's record as it completes, in any order; writes nothing.

    Closing the returned iterator early (Ctrl-C in the driver) must stop the runs still in flight.
    """

    def run(self, configs: Sequence[RunConfig]) -> Iterator[RunRecord]: ...


class Closing:
    """The life cycle the lab's executors share: ``with executor:`` calls :meth:`close` on the way out, whatever
    happened (an executor starts its workers or joins its cluster on first use)."""

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop what the executor started (its worker processes, its cluster); a no-op when it started nothing."""
