"""User-facing errors.

``UserError`` carries one readable message (what is wrong, which file, how to fix it).
Scripts catch it in ``main`` and exit non-zero without a traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """An error caused by the user's input, reported as one message without traceback."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a script's ``main(argv)``; turn ``UserError`` into ``error: ...`` on stderr, exit 2.

    Args:
        main: the script's entry point, returning an exit status or None (= 0).
        argv: arguments (None means ``sys.argv[1:]``).
    Returns:
        the exit status to pass to ``sys.exit``.
    """
    try:
        status = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(status or 0)
