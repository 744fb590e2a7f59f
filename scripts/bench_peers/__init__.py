"""Helpers for scripts/bench.py: the jobserver task module, the in-process runs, the bare
aiohttp server, the HTTP load process, and one module per peer job queue.

Every module here is run with `scripts/` on `sys.path` (bench.py sets PYTHONPATH), so they
import as `bench_peers.<name>`.
"""
