"""What a subcommand of ``optimlab`` is: a :class:`Command`. A module adds its subcommands by defining
``COMMANDS`` (name -> :class:`Command`) and being listed in :data:`optimlab.lab.commands.cli.COMMAND_MODULES`,
the lab's own modules and any other package's alike."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help (in ``optimlab --help``), a function that adds its arguments to its
    parser, and its handler (runs it, returns the exit status). ``description``: the text under the usage line of
    ``optimlab NAME --help`` (``""``, the default: the help; ``None``: none); ``formatter_class``: its parser's.

    A module whose import is heavy (the diagnostics) keeps its arguments in a light module and imports the rest
    in its handler, so that building the parser stays quick."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    description: str | None = ""
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter
