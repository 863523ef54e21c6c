"""kho-triage: run kho-drgn over many dumps and report across a fleet.

``discover`` finds dumps and vmlinux files, ``worker`` analyses one dump in
its own process, ``batch`` runs workers in parallel with a time limit each,
``records`` flattens records and writes them (JSON Lines, Parquet),
``fleet`` groups them with the SQL of ``queries.sql`` (DuckDB, or SQLite as
the fallback), ``cli`` is the ``kho-triage`` console script.
"""
