"""How well the scan classifies a research folder whose answers are known.

    python scripts/scan_accuracy.py [CORPUS ...] [--json OUT.json]

A corpus is a research folder (experiments/, code/, proposals/) with an
`expected.yaml` mapping each number to the status a careful reader gives it.
Prints one row per number (expected, found, the judge, the reason) and the
accuracy; writes the same as JSON. Default: the corpora under
tests/unit/scaler/corpus/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.scaler.discovery import scan  # noqa: E402
from actors.shared.cli import format_table  # noqa: E402

DEFAULT_CORPORA = sorted(p.parent for p in (ROOT / "tests/unit/scaler/corpus").glob("*/expected.yaml"))


def measure(corpus: Path) -> dict:
    expected = yaml.safe_load((corpus / "expected.yaml").read_text())
    result = scan(corpus / "experiments", corpus / "code", corpus / "proposals")
    found = {}
    for m in result.mves:
        found.setdefault(m.id, m)
    cases = []
    for mve_id, want in sorted(expected.items()):
        m = found.get(mve_id)
        got = m.status if m else "(not found)"
        cases.append({"id": mve_id, "expected": want["status"], "found": got, "ok": got == want["status"],
                      "judge": m.judge if m else "-", "style": want.get("style", ""),
                      "reason": m.reason if m else ""})
    extra = sorted(set(found) - set(expected))
    ok = sum(c["ok"] for c in cases)
    return {"corpus": str(corpus.relative_to(ROOT) if corpus.is_relative_to(ROOT) else corpus),
            "cases": cases, "correct": ok, "total": len(cases), "accuracy": ok / len(cases) if cases else 0.0,
            "unexpected_ids": extra, "files_read": result.files_read, "files_seen": result.files_seen,
            "unreadable": [str(p.name) for p, _ in result.unreadable]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="*", type=Path, default=DEFAULT_CORPORA)
    parser.add_argument("--json", type=Path, default=Path("runs/scan_accuracy.json"))
    args = parser.parse_args(argv)
    reports = [measure(c.resolve()) for c in args.corpora]
    for r in reports:
        rows = [(c["id"], c["expected"], c["found"], "ok" if c["ok"] else "WRONG", c["reason"][:90])
                for c in r["cases"]]
        print(f"# {r['corpus']}: {r['correct']}/{r['total']} correct ({100 * r['accuracy']:.0f}%), "
              f"{r['files_read']} files read of {r['files_seen']}, unreadable: {', '.join(r['unreadable']) or '-'}")
        print(format_table(("ID", "EXPECTED", "FOUND", "", "REASON"), rows))
        if r["unexpected_ids"]:
            print(f"numbers found but not expected: {', '.join(r['unexpected_ids'])}")
        print()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
