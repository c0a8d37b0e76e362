"""The ``optimlab`` command line: its parser and :func:`main`.

Every subcommand comes from a module listed in :data:`COMMAND_MODULES` that defines ``COMMANDS`` (name ->
:class:`~optimlab.lab.commands.command.Command`): ``compare`` (:mod:`~optimlab.lab.commands.compare`),
``benchmark`` (:mod:`~optimlab.lab.commands.benchmark`), ``report``, ``lr-find``, ``schedule`` and ``list``
(:mod:`~optimlab.lab.commands.tools`), the diagnostics (:mod:`~optimlab.lab.commands.diagnose`) and ``reproduce``
(:mod:`~optimlab.lab.commands.reproduce`). Another package adds its own the same way: a module with ``COMMANDS``,
appended to :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.data import DatasetNotFoundError
from optimlab.lab.commands.command import Command
from optimlab.lab.executors.ray import RunsFailedError
from optimlab.lab.training.results import LabWarning

__all__ = ["main", "build_parser", "commands", "COMMAND_MODULES"]

# The modules whose COMMANDS are optimlab's subcommands, in the order of ``optimlab --help``; a module that is not
# installed is skipped. Each keeps its import light (the parser is built for every command), so that
# ``optimlab list`` does not load the diagnostics or the reproductions.
COMMAND_MODULES: list[str] = [
    "optimlab.lab.commands.compare",  # compare
    "optimlab.lab.commands.benchmark",  # benchmark
    "optimlab.lab.commands.tools",  # report, lr-find, schedule, list
    "optimlab.lab.commands.diagnose",  # walk, interpolate, landscape, histograms, sharpness
    "optimlab.lab.commands.reproduce",  # reproduce
]


def commands() -> dict[str, Command]:
    """Every subcommand of :data:`COMMAND_MODULES`, in their order."""
    found: dict[str, Command] = {}
    for module_name in COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        found.update(importlib.import_module(module_name).COMMANDS)
    return found


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as the commands' own (not the 13 lines of usage); its
    subparsers are of this class too."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``optimlab`` parser: a subparser for each of :func:`commands`, whose ``_handler`` default is the
    function that runs it."""
    p = _Parser(prog="optimlab", description="Compare deep-learning optimizers on real data.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, cmd in commands().items():
        description = cmd.help if cmd.description == "" else cmd.description
        parser = sub.add_parser(name, help=cmd.help, description=description, formatter_class=cmd.formatter_class)
        cmd.configure(parser)
        parser.set_defaults(_handler=cmd.handler)
    return p


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """The lab's warnings (:class:`~optimlab.lab.training.results.LabWarning`) as one line each, each said once per
    command (a results file is read several times); others as Python prints them."""
    if issubclass(category, LabWarning):
        if str(message) not in _SAID:
            _SAID.add(str(message))
            print(f"optimlab: warning: {message}", file=sys.stderr if file is None else file, flush=True)
    else:
        _PYTHON_SHOW_WARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOW_WARNING = warnings.showwarning
_SAID: set[str] = set()  # the lab's warnings printed by this command

# OS errors a user can act on, said in one line: the disk, the quota, a read-only or missing place, a name
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _os_error_line(e: OSError) -> str | None:
    """One line for an OS error with an errno (the file and its folder, what the OS said, what to do), or
    ``None`` for one without (a bug: its traceback is kept)."""
    if e.errno is None:
        return None
    where = ""
    if e.filename is not None:
        path = Path(os.fsdecode(e.filename))
        where = f" {path}" if path.is_dir() else f" {path.name} in {path.parent}"
    said = e.strerror or str(e)
    if e.errno in _FULL:
        return (
            f"cannot write{where}: {said}. Every finished run is kept; free some space (or choose another --out) "
            "and run the same command again to resume"
        )
    return f"{said}:{where}" if where else said


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optimlab`` console script and of ``python -m optimlab``.

    A mistake the user can fix (a bad argument, a missing file, a full disk, an unreachable tracking server)
    ends with one line ``optimlab: error: ...`` and exit status 2; runs that failed for good on Ray end with
    one line and exit status 1; the lab's warnings are one line each."""
    args = build_parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    _SAID.clear()
    try:
        return args._handler(args)
    except DatasetNotFoundError as e:
        print(f"optimlab: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, PermissionError, ImportError) as e:
        print(f"optimlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        line = _os_error_line(e)
        if line is None:
            raise
        print(f"optimlab: error: {line}", file=sys.stderr)
        return 2
    except RunsFailedError as e:  # the ray backend: runs whose workers kept dying
        print(f"optimlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\noptimlab: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
