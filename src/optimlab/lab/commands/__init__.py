"""The ``optimlab`` command line: the parser and one module per command (compare, benchmark, diagnose, reproduce,
the tools). The top room: it may import every other room; none imports it."""
