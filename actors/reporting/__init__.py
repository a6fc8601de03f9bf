"""The report page: `python -m actors.report --out DIR` writes DIR/index.html from the
files the system already wrote (ledger, scaled folders, results.tsv, sweeps) and the
WorkTracker's Parquet state. One module per section; `page` puts them together."""
