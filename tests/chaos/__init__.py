"""The chaos harness: many faults at once under a mixed load, then an audit that trusts
only its own ledger (run it with ``python -m tests.chaos --backend NAME``; README,
"Reliability: the chaos runner")."""
