"""CPU thread count, set before Paddle is imported.

Paddle sets ``OMP_NUM_THREADS=1`` at import time when it is unset, so dygraph would use one
core. Scripts call ``configure_threads()`` first: an explicit ``OMP_NUM_THREADS`` is kept,
otherwise the cores are shared among the data-parallel ranks of this machine.
"""
from __future__ import annotations

import os


def configure_threads() -> int:
    """Set ``OMP_NUM_THREADS`` if unset (cores // local ranks); return the value in force."""
    if "OMP_NUM_THREADS" not in os.environ:
        ranks = int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")) or 1)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(ranks, 1)))
    return int(os.environ["OMP_NUM_THREADS"])
