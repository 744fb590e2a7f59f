"""Helper modules for scripts/bench_nodes.py: the jobserver no-op task and the pgqueuer peer."""
