"""OmniQ's benchmark suite: OmniQ beside its peers, one command.

Run ``python -m benchmarks --backend all --workload all`` (see ``docs/benchmarks.md``).
Peer libraries are a bench-only dependency (``benchmarks/requirements-peers.txt``).
``benchmarks/README.md`` says where the targets and reference figures live (data files in
``benchmarks/data/``) and which results are kept in git (only the published run's).
"""
