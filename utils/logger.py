"""Project logger.

Paddle installs a handler on the root logger at import time, so ``logging.basicConfig``
silently does nothing afterwards. Every module logs through the named ``csra`` logger,
which owns its handler and does not propagate to the root.
"""
from __future__ import annotations

import logging
import sys

LOGGER_NAME = "csra"
_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


def get_logger(name: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Return the project logger (or a child ``csra.<name>``), configured once.

    Args:
        name: optional child name, e.g. ``"train"`` gives ``csra.train``.
        level: level set on the root project logger the first time it is configured.
    Returns:
        a ``logging.Logger`` writing to stderr through its own handler.
    """
    root = logging.getLogger(LOGGER_NAME)
    if not getattr(root, "_csra_configured", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False
        root._csra_configured = True  # type: ignore[attr-defined]
    return root if not name else root.getChild(name)
