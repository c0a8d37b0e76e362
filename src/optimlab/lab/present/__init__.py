"""What a study shows: statistics (intervals, tests, best sets, performance profiles), the per-optimizer summary, the
text/CSV/HTML report and its figures. Reads studies; runs nothing."""
