"""Start one `python -m tune.hw_scaling` subprocess per hardware shape.

    python scripts/launch_hw_sweeps.py --gpu-counts 1 2 4 8 --node-counts 1 2 \\
        [--sequential] [--delay 30] [--out runs/hw_scaling] [any tune.hw_scaling option ...]

Each (g, n) pair gets its own process, `--gpu-counts g --node-counts n`, with
every other option forwarded unchanged (--max-trials, --set key=value,
--local, --resume, --recipe, ...) and its output in OUT/logs/hs_g{g}n{n}.log.
By default the processes run side by side, started --delay seconds apart;
with --sequential each starts when the one before has ended. When all have
ended the report is written once over every shape
(`python -m tune.hw_scaling analyze OUT`). The exit status is 0 when every
pair succeeded, else that of the first that did not.

Side by side, the sweeps should share one Ray cluster (a GPU cluster, or
`ray start --head` on a laptop); without one, each subprocess starts a local
Ray of its own, each believing it has the whole machine: use --sequential.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(gpu_counts: list[int], node_counts: list[int], out: Path, forwarded: list[str]) -> list[tuple[str, list[str]]]:
    """(name, argv) of the sweep of each pair; argv runs with this Python."""
    cmds = []
    for n in sorted(set(node_counts)):
        for g in sorted(set(gpu_counts)):
            cmds.append((f"hs_g{g}n{n}", [
                sys.executable, "-m", "tune.hw_scaling", "--gpu-counts", str(g), "--node-counts", str(n),
                "--out", str(out), "--no-analyze", *forwarded,
            ]))
    return cmds


def _env() -> dict[str, str]:
    """This repository first on the subprocesses' import path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/launch_hw_sweeps.py",
        description="One tune.hw_scaling subprocess per GPUs-per-node x nodes pair; options it does not know "
        "are passed on to every one of them.",
    )
    parser.add_argument("--gpu-counts", type=int, nargs="+", required=True, metavar="G")
    parser.add_argument("--node-counts", type=int, nargs="+", default=[1], metavar="N")
    parser.add_argument("--sequential", action="store_true", help="start each sweep when the one before has ended")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between starting two sweeps (default 0)")
    parser.add_argument("--out", type=Path, default=Path("runs/hw_scaling"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args, forwarded = parser.parse_known_args(argv)
    if any(v < 1 for v in args.gpu_counts + args.node_counts):
        print("error: --gpu-counts and --node-counts must be at least 1", file=sys.stderr)
        return 2
    if args.delay < 0:
        print("error: --delay must be >= 0", file=sys.stderr)
        return 2

    cmds = commands(args.gpu_counts, args.node_counts, args.out, forwarded)
    if args.dry_run:
        for _, argv_ in cmds:
            print(" ".join(argv_))
        return 0
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: list[tuple[str, subprocess.Popen, object]] = []
    codes: dict[str, int] = {}

    def wait(name: str, proc: subprocess.Popen, log) -> None:
        codes[name] = proc.wait()
        log.close()
        print(f"{name}: {'done' if codes[name] == 0 else f'exit {codes[name]}'} (log {logs / (name + '.log')})",
              flush=True)

    try:
        for i, (name, argv_) in enumerate(cmds):
            if i and args.delay:
                time.sleep(args.delay)
            log = open(logs / f"{name}.log", "w")
            print(f"{name}: {' '.join(argv_[1:])}", flush=True)
            proc = subprocess.Popen(argv_, cwd=Path.cwd(), stdout=log, stderr=subprocess.STDOUT,
                                    env=_env())
            if args.sequential:
                wait(name, proc, log)
            else:
                running.append((name, proc, log))
        for name, proc, log in running:
            wait(name, proc, log)
    except KeyboardInterrupt:
        for name, proc, log in running:
            if proc.poll() is None:
                proc.send_signal(2)  # each sweep saves its state; rerun with --resume
        for name, proc, log in running:
            proc.wait()
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        return 130

    failed = [name for name, code in codes.items() if code != 0]
    if len(failed) < len(codes):
        analyze = [sys.executable, "-m", "tune.hw_scaling", "analyze", str(args.out)]
        for opt in ("--target-performance", "--wandb-project"):
            if opt in forwarded:
                analyze += [opt, forwarded[forwarded.index(opt) + 1]]
        subprocess.run(analyze, env=_env())
    if failed:
        print(f"failed: {', '.join(failed)} (see their logs)", file=sys.stderr)
        return codes[failed[0]]
    return 0


if __name__ == "__main__":
    sys.exit(main())
