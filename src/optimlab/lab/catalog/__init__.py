"""What the lab can compare: tasks (data, model, metric) and their models, the data loaders, the optimizer presets
with their search spaces, how a metric's value is shown, and the adapter through which the lab's specs and runs
build the library's optimizers, wrappers and schedules.

The lowest room of the lab: it imports the library and nothing else of the lab."""

from optimlab.lab.catalog import generic  # noqa: E402, F401 - registers the text: and arrays: tasks with get_task
