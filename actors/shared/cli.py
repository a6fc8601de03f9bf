"""What every command line of the application shares: plain-text tables and the
one way a user's mistake ends (one line on stderr, exit 2, no traceback)."""

from __future__ import annotations

import sys
from typing import Iterable, Sequence


class UserError(Exception):
    """A mistake the user can fix (a missing folder, a bad flag value): printed as
    one `error: ...` line, and the command exits 2."""

    exit_code = 2


def fail(message: str, code: int = 2) -> int:
    """Print `error: message` on stderr and return the exit code to use."""
    print(f"error: {message}", file=sys.stderr)
    return code


def format_table(header: Sequence[str], rows: Iterable[Sequence[object]], empty: str | None = None) -> str:
    """Columns padded to their widest cell, two spaces apart. The last column is
    not padded (it is often prose, such as a reason), and trailing blanks go."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths)] + [r[-1]]).rstrip() for r in cells]
    if len(cells) == 1 and empty:
        lines.append(empty)
    return "\n".join(lines)
