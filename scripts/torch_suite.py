"""Run torch's own ``TestOptimRenewed`` (``test/test_optim.py``, CPU) on optimlab's drop-in classes.

A developer tool, not part of the test suite: torch's test file is not in this repository (get the copy matching the
installed torch from the pytorch source tree) and is passed by path. Before pytest collects it, the ``optim_cls`` of
the chosen entries of ``torch.testing._internal.common_optimizers.optim_db`` are swapped for optimlab's classes of
the same name, so every test the file builds for those entries runs on optimlab. ``--torch`` leaves torch's classes
in place (the baseline). Needs ``expecttest`` (the test extra).

    PYTHONPATH=$PWD/src python3 scripts/torch_suite.py /tmp/suite/test_optim.py                 # the 13 classes
    PYTHONPATH=$PWD/src python3 scripts/torch_suite.py /tmp/suite/test_optim.py --classes Muon -- -x
    PYTHONPATH=$PWD/src python3 scripts/torch_suite.py /tmp/suite/test_optim.py --torch         # torch's own
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["DROP_IN", "main", "swap"]

DROP_IN = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam",
           "Adamax", "Adadelta", "ASGD", "Rprop", "Adafactor", "Muon")


def swap(names: tuple[str, ...]) -> list[str]:
    """Point the ``optim_db`` entries named ``names`` at optimlab's classes; returns the names swapped."""
    import torch
    from torch.testing._internal import common_optimizers

    import optimlab

    swapped = []
    for info in common_optimizers.optim_db:
        name = info.optim_cls.__name__
        if name in names and info.optim_cls is getattr(torch.optim, name, None):
            info.optim_cls = getattr(optimlab, name)
            swapped.append(name)
    return swapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="pytest arguments go after --")
    parser.add_argument("test_file", help="path of torch's test/test_optim.py")
    parser.add_argument("--classes", default=",".join(DROP_IN), help="comma-separated optim_db class names")
    parser.add_argument("--torch", action="store_true", help="keep torch's classes (the baseline run)")
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    names = tuple(n for n in args.classes.split(",") if n)
    unknown = sorted(set(names) - set(DROP_IN))
    if unknown:
        parser.error(f"not a drop-in class: {unknown}; expected some of {list(DROP_IN)}")
    if not args.torch:
        swapped = swap(names)
        missing = sorted(set(names) - set(swapped))
        if missing:
            parser.error(f"optim_db has no torch entry for {missing}")
        print("torch_suite: optim_cls swapped for optimlab's:", ", ".join(swapped), flush=True)
    else:
        print("torch_suite: torch's own classes (baseline)", flush=True)

    import pytest

    path = os.path.abspath(args.test_file)
    selection = "TestOptimRenewed and cpu and (" + " or ".join(f"_{n}_" for n in names) + ")"
    return int(pytest.main([path, "-q", "-p", "no:cacheprovider", "--rootdir", os.path.dirname(path),
                            "-k", selection, *extra]))


if __name__ == "__main__":
    sys.exit(main())
