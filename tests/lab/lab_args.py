"""Command lines shared by the lab tests."""

# a tuned comparison small enough for a test: 40 steps, 3 trials of 16 steps, 3 final seeds
TINY = ["--task", "mnist1d-mlp", "--steps", "40", "--eval-every", "20", "--seeds", "3", "--budget", "3"]
TINY += ["--batch-size", "50", "--no-progress", "--jobs", "1"]
