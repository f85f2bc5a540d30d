"""OmniQ's benchmark suite: OmniQ beside its peers, one command.

Run ``python -m benchmarks --backend all --workload all`` (see ``docs/benchmarks.md``).
Peer libraries are a bench-only dependency (``benchmarks/requirements-peers.txt``).
"""
