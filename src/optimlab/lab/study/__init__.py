"""Many runs under one protocol: the sweep driver (resume by config key), tuning with equal budgets, selection,
final seeds, and the cost estimate. Imports the rooms below it: executors, training, catalog."""
