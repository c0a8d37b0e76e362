"""Where runs execute and where they are logged: the local process pool, Ray, and the TensorBoard/MLflow trackers.

An executor only runs configs and hands records back; the study's driver writes them. Imports
:mod:`optimlab.lab.training` and :mod:`optimlab.lab.catalog`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from optimlab.lab.training.config import RunConfig
    from optimlab.lab.training.record import RunRecord

__all__ = ["Executor"]


class Executor(Protocol):
    """Runs configs and yields each run's record as it completes, in any order; writes nothing.

    Closing the returned iterator early (Ctrl-C in the driver) must stop the runs still in flight.
    """

    def run(self, configs: Sequence[RunConfig]) -> Iterator[RunRecord]: ...
