"""What the lab can compare: tasks (data, model, metric), the data loaders, the optimizer presets with their search
spaces, and the adapter through which the lab builds the library's optimizers, wrappers and schedules.

The lowest room of the lab: it imports the library and nothing else of the lab."""
