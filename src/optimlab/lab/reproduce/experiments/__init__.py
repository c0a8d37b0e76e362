"""One module per claim of the seeds (see :mod:`optimlab.lab.reproduce` for what a module defines)."""
