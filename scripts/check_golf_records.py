"""Check the log parser against Parameter Golf records: does it read each record's score?

    python scripts/check_golf_records.py RECORDS_DIR [--txt] [--metric REGEX] [--json OUT]

RECORDS_DIR is the `records/` folder of openai/parameter-golf (or any tree like it):
every folder holding a `submission.json` is a record; its train logs are the `*.log`
files in it (with --txt, also its `*.txt` files other than requirements). Every log
under RECORDS_DIR is parsed with `actors.research.logparse.parse_log` (a folder of logs
without a submission.json is listed as not compared). Byte-identical copies of a log
count once. The mean of a record's parsed scores is compared with the submission's
`val_bpb` (else `mean_val_bpb`) to the precision the record uses: one unit in the last
decimal of the coarser of the submission's value and the logs' printed scores (a mean
of rounded seeds, rounded again, is off by up to that).

For a record not read as recorded it says why: logs called crashes; the submission is
one log's score rather than the mean; a log's run reports another score last than the
one the record counts (its line is named: pin it with --metric); or no log prints the
record's numbers at all. Exit 0 whatever the counts (it is a report); 2 on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from actors.research.loglines import clean, decimals, default_score, pinned_score
from actors.research.logparse import MetricError, compile_metric, parse_log
from actors.shared.cli import fail, format_table

SUBMISSION = "submission.json"
_SKIP_TXT = ("requirements",)
_JSON_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?")


@dataclass
class LogResult:
    path: str
    val_bpb: float | None
    text: str | None  # the score as printed
    crashed: bool
    error: str | None
    line_no: int | None
    line: str | None
    duplicate_of: str | None = None


@dataclass
class RecordResult:
    path: str
    submission_bpb: float | None
    logs: list[LogResult] = field(default_factory=list)
    mean: float | None = None
    recorded: bool = False
    category: str = ""
    why: str = ""

    @property
    def distinct(self) -> list[LogResult]:
        return [lg for lg in self.logs if lg.duplicate_of is None]


def _close(a: float, b: float, places: int) -> bool:
    return abs(a - b) <= 10.0 ** -places + 1e-12


def _read_submission(path: Path) -> tuple[float | None, str | None, list[str], str]:
    """(score, its text as written, every decimal number in the file as written, problem)."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
        data = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        return None, None, [], f"{SUBMISSION} unreadable: {exc}"
    numbers = _JSON_FLOAT.findall(raw)
    if isinstance(data, dict):
        for key in ("val_bpb", "mean_val_bpb"):
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                # json reads "1.22440" as 1.2244: the precision is in the text
                m = re.search(rf'"{key}"\s*:\s*(-?[0-9.eE+-]+)', raw)
                return float(value), (m.group(1) if m else repr(value)), numbers, ""
    return None, None, numbers, f"no val_bpb in {SUBMISSION}"


def _parse(path: Path, root: Path, metric) -> tuple[LogResult, str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    r = parse_log(text, metric=metric)
    printed = None
    if not r["crashed"]:
        line = r["metric_line"]
        printed = (pinned_score(metric, line, 0) if metric else default_score(line, 0))[0].text
    return LogResult(path=str(path.relative_to(root)), val_bpb=r["val_bpb"], text=printed, crashed=r["crashed"],
                     error=r["error"], line_no=r["metric_line_no"], line=r["metric_line"]), text


def _score_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, value as printed, line) of every score line that is not progress."""
    out = []
    for no, raw in enumerate(text.split("\n"), 1):
        line = clean(raw)
        score, progress = default_score(line, no)
        if score is not None and not progress:
            out.append((no, score.text, line))
    return out


def _explain(rec: RecordResult, sub_text: str, numbers: list[str], texts: dict[str, str]) -> tuple[str, str]:
    """Why the mean is not the submission's score: (category, reason)."""
    places = min([decimals(sub_text)] + [decimals(lg.text) for lg in rec.distinct])
    one = [lg for lg in rec.distinct if _close(lg.val_bpb, rec.submission_bpb, places)]
    each = ", ".join(f"{Path(lg.path).name}={lg.text}" for lg in rec.distinct)
    if one and len(rec.distinct) > 1:
        return "one run", (f"the submission is {Path(one[0].path).name}'s score {one[0].text}, not the mean "
                           f"{rec.mean:.{places}f} of {len(rec.distinct)} logs ({each})")
    # A log whose last score is none of the record's numbers, while another of its lines is.
    for lg in rec.distinct:
        if any(_close(lg.val_bpb, float(n), decimals(n)) for n in numbers):
            continue
        for no, value, line in reversed(_score_lines(texts[lg.path])):
            if any(_close(float(value), float(n), min(decimals(value), decimals(n))) for n in numbers):
                return "another line", (f"{Path(lg.path).name}: the run reports line {lg.line_no} last "
                                        f"({lg.line[:60]}), the record counts line {no} ({line[:60]}); pin it "
                                        f"with --metric")
    return "not in the logs", (f"no log prints the record's score {sub_text}: mean {rec.mean:.{places}f} of "
                               f"{len(rec.distinct)} logs ({each})")


def check_record(folder: Path, root: Path, txt: bool = False, metric=None) -> RecordResult:
    has_submission = (folder / SUBMISSION).is_file()
    score, sub_text, numbers, problem = (_read_submission(folder / SUBMISSION) if has_submission
                                         else (None, None, [], f"no {SUBMISSION}"))
    rec = RecordResult(path=str(folder.relative_to(root)), submission_bpb=score)
    seen: dict[str, str] = {}
    texts: dict[str, str] = {}
    for path in _logs(folder, txt):
        lg, text = _parse(path, root, metric)
        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        lg.duplicate_of = seen.get(digest)
        seen.setdefault(digest, lg.path)
        texts[lg.path] = text
        rec.logs.append(lg)
    if problem or not rec.logs:
        rec.category, rec.why = "not compared", problem or "no train logs"
        return rec
    crashed = [lg for lg in rec.distinct if lg.crashed]
    if crashed:
        rec.category = "crash"
        rec.why = f"{len(crashed)} of {len(rec.distinct)} logs called crashes"
        return rec
    rec.mean = sum(lg.val_bpb for lg in rec.distinct) / len(rec.distinct)
    places = min([decimals(sub_text)] + [decimals(lg.text) for lg in rec.distinct])
    rec.recorded = _close(rec.mean, score, places)
    if rec.recorded:
        rec.category = "recorded"
    else:
        rec.category, rec.why = _explain(rec, sub_text, numbers, texts)
    return rec


def _logs(folder: Path, txt: bool) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [p for p in files if p.suffix == ".log"
            or (txt and p.suffix == ".txt" and not p.name.lower().startswith(_SKIP_TXT))]


def find_folders(root: Path, txt: bool = False) -> list[Path]:
    """Record folders (a submission.json) and any other folder holding logs."""
    found = {p.parent for p in root.rglob(SUBMISSION)} | {p.parent for p in root.rglob("*.log")}
    if txt:
        found |= {p.parent for p in root.rglob("*.txt") if not p.name.lower().startswith(_SKIP_TXT)}
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", type=Path, help="the records/ folder of openai/parameter-golf")
    ap.add_argument("--txt", action="store_true", help="also read *.txt train logs")
    ap.add_argument("--metric", default=None, help="pin the score line with a regular expression")
    ap.add_argument("--json", type=Path, default=None, help="write every record's result here")
    args = ap.parse_args(argv)
    if not args.records.is_dir():
        return fail(f"{args.records} is not a folder")
    try:
        metric = compile_metric(args.metric)
    except MetricError as exc:
        return fail(str(exc))
    records = [check_record(f, args.records, args.txt, metric) for f in find_folders(args.records, args.txt)]
    if not any((f / SUBMISSION).is_file() for f in find_folders(args.records)):
        return fail(f"no {SUBMISSION} under {args.records}")
    compared = [r for r in records if r.category != "not compared"]
    good = [r for r in compared if r.recorded]
    bad = [r for r in compared if not r.recorded]
    logs = [lg for r in records for lg in r.logs]
    crashes = [lg for lg in logs if lg.crashed]

    print(f"record folders: {len(records)}; with train logs and a val_bpb: {len(compared)}")
    print(f"read as recorded: {len(good)} of {len(compared)}")
    if bad:
        print(f"\nnot read as recorded: {len(bad)}")
        print(format_table(["record", "category", "why"], [(r.path, r.category, r.why) for r in bad]))
    skipped = [r for r in records if r.category == "not compared"]
    if skipped:
        print(f"\nnot compared: {len(skipped)}")
        print(format_table(["folder", "why"], [(r.path, r.why) for r in skipped]))
    dupes = sum(lg.duplicate_of is not None for lg in logs)
    print(f"\nlogs: {len(logs)} ({dupes} byte-identical copies counted once); called crashes: {len(crashes)}")
    if crashes:
        print(format_table(["log", "why"], [(lg.path, lg.error) for lg in crashes]))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in records], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
