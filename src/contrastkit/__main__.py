"""``python -m contrastkit`` and the ``contrastkit`` console script.

The CLI needs the ``[train]`` extra; without it the command prints one ``error:`` line naming
the extra (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    try:
        from contrastkit.cli import main as cli_main
    except ImportError as exc:
        if type(exc).__name__ != "MissingExtra":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    cli_main(argv)


if __name__ == "__main__":
    main()
