"""User-facing half: engines, ingest, query, evaluation, inspection and the CLI."""
