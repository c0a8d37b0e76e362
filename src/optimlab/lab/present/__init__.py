"""What a study shows: statistics (intervals, tests, best sets, performance profiles), the per-optimizer summary, the
report (its text and CSV in ``tables``, its figures in ``report_figures``, the page in ``report``; across training
lengths, ``lengths``), the diagnostics' figures (``diagnostic_plots``, ``landscape_plots``), and what every figure and
page of the lab shares (``figures``: pyplot and saving a PNG; ``pages``: the HTML style sheet, tables and page;
``style``: one colour per optimizer). Reads studies; runs nothing."""
