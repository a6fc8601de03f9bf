"""AutoResearch command line (the AutoResearch actor will join this module later).

``python -m actors.autoresearch parse-log RUN.LOG`` prints the parsed log as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from actors.golf_log import parse_log

logger = logging.getLogger(__name__)


def _cmd_parse_log(args: argparse.Namespace) -> int:
    path = Path(args.log)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"error: cannot read log {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(json.dumps(parse_log(text), indent=2, allow_nan=False, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.autoresearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parse-log", help="parse a train_gpt.py log and print JSON")
    p.add_argument("log", help="path to the run log")
    p.set_defaults(func=_cmd_parse_log)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
