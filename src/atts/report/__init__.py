"""Reports of a run folder, computed from manifest.json and samples.jsonl alone.

``metrics`` (the numbers), ``graded_run`` (a run read and graded, grades cached in the folder),
``summary`` (summary.json content and the block `atts run` prints), ``plots`` (PNG figures,
matplotlib loaded only there and only when called), ``markdown`` (report.md) and ``build``
(``write_report``: everything `atts report` writes).  Importing this package stays light.
"""
