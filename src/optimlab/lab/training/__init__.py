"""One run: its config, the one training loop (:func:`~optimlab.lab.training.runner.run`) with its callbacks, the
record it returns, and the results folder that keeps the records.

Imports only :mod:`optimlab.lab.catalog` (and the library)."""
