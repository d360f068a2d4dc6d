"""The fault harness: a cluster of real processes (gateway, two schedulers, two step
workers, a private Redis, a private PostgreSQL or a SQLite file) under a seeded random
schedule of faults, then a check of every run. ``python -m tests.faults --help``;
docs/faults.md says what it checks."""
