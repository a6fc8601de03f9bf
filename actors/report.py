"""`python -m actors.report --out DIR`: one static page of what the cluster did.

    python -m actors.report [--experiments DIR] [--code DIR] [--ledger PATH] [--research REPO]
                            [--sweeps DIR] [--state PATH] --out DIR [--watch SECONDS]

Writes DIR/index.html (PNG plots beside it in DIR/img/) and prints its path. It
reads only files the system writes, and the WorkTracker's Parquet state, so it
works on a laptop after the fact and on the head node while jobs run:
`--watch SECONDS` rewrites the page that often (and the page reloads itself)
until Ctrl-C.

Without a flag, a source is read where `actors.main` puts it by default (the
examples' folders, the AutoResearch workspace, the tracker's state file) when it
exists there, and left out otherwise; a path given on the command line that
does not exist is an error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from actors.research.config import DEFAULT_WORKSPACE
from actors.shared.cli import UserError, fail

DEFAULT_EXPERIMENTS = Path("examples/experiments")  # actors.main's default


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m actors.report",
        description="Write one static HTML page of what the cluster did: scaled experiments, research, sweeps "
        "and scaling laws, claims and spend. Reads only the files the system writes.",
    )
    p.add_argument("--out", type=Path, required=True, help="folder to write index.html (and img/) into")
    p.add_argument("--experiments", type=Path, default=None,
                   help=f"the MVE folders (default: {DEFAULT_EXPERIMENTS} when it exists)")
    p.add_argument("--code", type=Path, default=None, help="where NNN_scaled folders are (default: beside --experiments)")
    p.add_argument("--ledger", type=Path, default=None, help="the ledger (default: EXPERIMENTS/EXPERIMENTS.md)")
    p.add_argument("--research", type=Path, default=None, metavar="REPO",
                   help=f"the AutoResearch repository (default: {DEFAULT_WORKSPACE} when it exists)")
    p.add_argument("--sweeps", type=Path, default=None,
                   help="a folder of sweep and study outputs (tune.hw_scaling's --out, studies' --out, fit JSONs)")
    p.add_argument("--state", type=Path, default=None,
                   help="the WorkTracker's Parquet state (default: $RAY_AUTORESEARCH_STATE or "
                   "~/.ray-autoresearch/work_tracker.parquet when it exists)")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="rewrite the page every SECONDS until Ctrl-C")
    return p.parse_args(argv)


def _given(path: Path | None, flag: str, folder: bool = True) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    if not path.exists():
        raise UserError(f"{flag}: {path} does not exist")
    if folder and not path.is_dir():
        raise UserError(f"{flag}: {path} is not a folder")
    if not folder and path.is_dir():
        raise UserError(f"{flag}: {path} is a folder, not a file")
    return path.resolve()


def _default(path: Path) -> Path | None:
    path = path.expanduser()
    return path.resolve() if path.exists() else None


def resolve_inputs(args: argparse.Namespace):
    """The ReportInputs the flags (and the defaults that exist) name; UserError for a bad flag."""
    from actors.reporting.page import ReportInputs
    from actors.tracker.actor import default_state_path
    from actors.tracker.store import StatePathError, check_state_path

    experiments = _given(args.experiments, "--experiments") or _default(DEFAULT_EXPERIMENTS)
    code = _given(args.code, "--code")
    if code is None and experiments is not None:
        code = experiments.parent / "code"
    ledger = _given(args.ledger, "--ledger", folder=False)
    if ledger is None and experiments is not None:
        ledger = experiments / "EXPERIMENTS.md"
    state = _given(args.state, "--state", folder=False) or _default(default_state_path())
    if state is not None:
        try:
            check_state_path(state, writable=False)
        except StatePathError as exc:
            raise UserError(f"--state: {exc}") from None
    if args.watch is not None and args.watch <= 0:
        raise UserError("--watch must be a positive number of seconds")
    out = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file, not a folder")
    return ReportInputs(
        experiments=experiments, code=code, ledger=ledger,
        research=_given(args.research, "--research") or _default(DEFAULT_WORKSPACE),
        sweeps=_given(args.sweeps, "--sweeps"), state=state,
    )


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends --watch as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        inputs = resolve_inputs(args)
    except UserError as exc:
        return fail(str(exc), exc.exit_code)
    from actors.reporting.page import build_report

    out = args.out.expanduser().resolve()
    try:
        page = build_report(inputs, out, refresh_s=args.watch)
    except OSError as exc:  # the output folder cannot be written
        return fail(f"cannot write the report in {out}: {exc.strerror or exc}", 1)
    print(page, flush=True)
    if args.watch is None:
        return 0
    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(args.watch)
            build_report(inputs, out, refresh_s=args.watch)
            print(f"{time.strftime('%H:%M:%S')} rewrote {page}", flush=True)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
