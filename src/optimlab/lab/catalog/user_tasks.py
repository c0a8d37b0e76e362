"""A user's own task, named by a string that every worker resolves the same way: ``path/to/file.py:make_task`` (a
Python file), ``package.module:make_task`` (an importable module); the factory is called with no arguments and
returns a :class:`~optimlab.lab.catalog.tasks.Task`.

The string is what a protocol and a run config store, so a local process-pool worker and a Ray worker resolve a
task by importing the same file or module. A file path is made absolute (the canonical name); a module is imported
by Python's own import system, so it must be importable in every worker (installed, or on ``PYTHONPATH``).

Only the file the user named is loaded, and only from a place no one else can write: the file must be owned by this
user (or root) and writable by no one else, and so must every folder above it (a folder others can write, such as
``/tmp``, is accepted with the sticky bit set, where others can neither rename nor delete what is not theirs).
Every mistake is a :class:`TaskError` (a ``ValueError``) with one line that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TaskError", "is_factory_spec", "canonical_spec", "load_factory", "unsafe_reason"]


class TaskError(ValueError):
    """A task string that does not give a task: a missing file, an import error, a factory with parameters, an
    object that is not a complete task. Its message is one line naming the file and the fix."""


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names a factory (``file.py:fn`` or ``module:fn``), not a built-in task."""
    return ":" in spec and not spec.startswith(("text:", "arrays:"))


def _split(spec: str) -> tuple[str, str]:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise TaskError(f"Invalid task {spec!r}; expected path/to/file.py:make_task or package.module:make_task")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise TaskError(f"Invalid task {spec!r}: {attr!r} is not a Python name; give the factory's name after ':'")
    return where, attr


def _is_file(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where


def canonical_spec(spec: str) -> str:
    """``spec`` with a file path made absolute (what a protocol stores: the same in every worker's working
    folder)."""
    where, attr = _split(spec)
    if _is_file(where):
        return f"{Path(where).expanduser().absolute()}:{attr}"
    return spec


def unsafe_reason(path: Path) -> str | None:
    """Why code at ``path`` must not be loaded (someone other than this user could have written it), or None."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is None:  # Windows: no owners to check
        return None
    real = path.resolve()
    st = real.stat()
    if st.st_uid not in (uid, 0):
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid}) or root"
    if st.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):o}); run chmod go-w {real}"
    for parent in real.parents:
        st = parent.stat()
        if st.st_uid not in (uid, 0):
            return f"is inside {parent}, which is owned by uid {st.st_uid}; move it to a folder of yours"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"is inside {parent}, which others can write (mode {stat.S_IMODE(st.st_mode):o}); move it to a "
                    f"folder of yours or run chmod go-w {parent}")
    return None


def _import_file(path: Path, spec: str) -> Any:
    if not path.is_file():
        raise TaskError(f"task file {path} not found (from --task {spec!r}); give the path of an existing .py file")
    if path.suffix != ".py":
        raise TaskError(f"task file {path} is not a .py file (from --task {spec!r}); give a Python file")
    problem = unsafe_reason(path)
    if problem is not None:
        raise TaskError(f"task file {path} {problem}: code from a place others can write is not loaded")
    name = "optimlab_user_task_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TaskError(f"task file {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any error of the user's file is reported as one line
        del sys.modules[name]
        raise TaskError(f"task file {path} failed to import: {type(e).__name__}: {e}; fix the file "
                        f"(run python {path} to see the traceback)") from e
    return module


def _import_module(where: str, spec: str) -> Any:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and where.startswith(e.name):
            raise TaskError(f"task module {where!r} not found (from --task {spec!r}); install it or add its folder "
                            "to PYTHONPATH (in every worker: a Ray cluster's nodes too), or give a .py file") from e
        raise TaskError(f"task module {where!r} failed to import: {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001
        raise TaskError(f"task module {where!r} failed to import: {type(e).__name__}: {e}; fix the module "
                        f"(python -c 'import {where}' shows the traceback)") from e


def load_factory(spec: str, params: tuple[str, ...] = (), returns: str = "a Task") -> tuple[Callable[..., Any], str]:
    """The factory that ``spec`` names, and where it is (for messages); checks that it can be called with the
    positional arguments ``params`` (none for a task factory); ``returns`` says what it makes, in messages."""
    where, attr = _split(spec)
    if _is_file(where):
        path = Path(where).expanduser().absolute()
        module, origin = _import_file(path, spec), str(path)
    else:
        module, origin = _import_module(where, spec), where
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n]))
            raise TaskError(f"{origin} has no {attr!r}; define a function {attr}({', '.join(params)}) that returns "
                            f"{returns} (callables there: {', '.join(names) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TaskError(f"{origin}:{attr} is a {type(obj).__name__}, not a function; give a function that returns "
                        f"{returns}")
    try:
        inspect.signature(obj).bind(*params)
    except TypeError:
        called = f"with ({', '.join(params)})" if params else "with no arguments"
        raise TaskError(f"{origin}:{attr}{inspect.signature(obj)} cannot be called {called}, as the lab calls it; "
                        "give its other parameters defaults") from None
    except ValueError:  # no signature (a builtin): calling it says
        pass
    return obj, f"{origin}:{attr}"
