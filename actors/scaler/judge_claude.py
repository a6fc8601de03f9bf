"""ClaudeJudge: Claude reads an MVE's results and says what they decided.

One forced tool call (`submit_judgement`, through `actors.shared.llm`'s `ask`)
returns the verdict, each success criterion (met, not met, soft fail, not
tested; whether it counts as a criterion of the idea), the blockers, and
verbatim quotes. Every quote is checked against the file it names, and the
verdict must be quoted from a results file, not a log: a reply that fails is
sent back once with the reason (the client's one retry), then the heuristics
decide and the scan says so.

Answers are cached by the hash of the files read (and the model and this
prompt's version) in `~/.ray-autoresearch/judge_cache/` (or
$RAY_AUTORESEARCH_JUDGE_CACHE), outside the user's folders, so a rescan of
unchanged notes costs nothing. A structured verdict still wins over Claude's
reading of the prose, and logs still only inform: the rules of
`actors.scaler.judge` apply to Claude's answer as to the heuristics'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from actors.scaler.judge import HeuristicJudge, Judgement, MVEFiles, apply_structured, log_notes
from actors.scaler.verdicts import Verdict
from actors.shared.llm import LLMClient, LLMError, make_llm
from analysis.files import atomic_write_json

log = logging.getLogger(__name__)

CACHE_ENV = "RAY_AUTORESEARCH_JUDGE_CACHE"
JUDGE_VERSION = "1"  # part of every cache key: change it when the prompt or the schema changes
TOOL_NAME = "submit_judgement"
MAX_FILE_CHARS = 40_000
PARALLEL = 4  # MVEs judged at once on a first scan

SYSTEM_PROMPT = f"""\
You judge the outcome of a minimum viable experiment (MVE) from its research notes, \
written by people and agents in many styles. Answer only through the `{TOOL_NAME}` tool.

Rules:
- The RESULTS files (results documents, write-ups, results.json/yaml) state the \
outcome and govern. LOG files (running logs, update logs) only inform: never take the \
verdict from a log. "**Result**: ✅ Success" in a log is usually a local smoke test.
- A structured verdict (`verdict:` in results.json/yaml or front matter) wins over prose.
- verdict: proceed (PROCEED, GO, scale up, SHIP IT), proceed_with_caveats ("PROCEED \
(with caveats)"), debug (DEBUG, needs fixing or more runs before deciding), abandon \
(ABANDON, DO NOT PROCEED, KILL, negative result), pending (results not in yet: TBD, \
awaiting results), ambiguous (the notes contradict themselves or the author did not \
decide, e.g. "Mixed"), no_verdict (results without any decision).
- A later dated update in the same document supersedes an earlier decision.
- criteria: every success-criterion row. counts=false when the document says the row \
is a baseline expectation, a sanity check of the setup or a stretch goal rather than \
a criterion of the idea. A row marked not tested has status not_tested, not not_met.
- blockers: critical=true only for what must be fixed before scaling; resolved=true \
when the notes say it was fixed.
- Every quote must be copied verbatim from the file it names (a short phrase is fine); \
verdict_quote comes from a RESULTS file. Do not guess: when genuinely unsure, answer \
ambiguous and quote what conflicts.
"""


class Quote(BaseModel):
    file: str = Field(description="the file name exactly as given in the prompt")
    quote: str = Field(min_length=1, max_length=400, description="text copied verbatim from that file")


class CriterionAnswer(BaseModel):
    criterion: str = Field(max_length=300)
    status: Literal["met", "not_met", "soft_fail", "not_tested"]
    counts: bool = Field(True, description="False for a baseline expectation, sanity check or stretch goal")
    quote: Quote


class BlockerAnswer(BaseModel):
    blocker: str = Field(max_length=400)
    critical: bool
    resolved: bool = False
    quote: Quote


class JudgeAnswer(BaseModel):
    verdict: Literal["proceed", "proceed_with_caveats", "debug", "abandon", "pending", "ambiguous", "no_verdict"]
    verdict_quote: Quote | None = Field(None, description="the words that state the verdict, from a RESULTS file")
    criteria: list[CriterionAnswer] = Field(default_factory=list)
    blockers: list[BlockerAnswer] = Field(default_factory=list)
    evidence: list[Quote] = Field(default_factory=list, max_length=8)
    explanation: str = Field("", max_length=800)


LABELS = {"proceed": "positive", "proceed_with_caveats": "positive", "debug": "negative", "abandon": "negative",
          "pending": "pending", "ambiguous": "ambiguous", "no_verdict": "unknown"}


def _normal(text: str) -> str:
    """Text as compared for quotes: no markdown emphasis, one space, case-folded."""
    return re.sub(r"\s+", " ", re.sub(r"[*_`~>#|]", " ", text)).strip().casefold()


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".ray-autoresearch" / "judge_cache"


class ClaudeJudge:
    """The judge with a key. `llm` is the shared client (or `ScriptedLLM` in tests)."""

    def __init__(self, llm: LLMClient, cache_dir: Path | None = None, parallel: int = PARALLEL):
        self.llm = llm
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.parallel = parallel
        self.name = f"claude:{llm.model}"
        self.calls = 0  # answers asked of Claude (not from the cache)

    def __repr__(self) -> str:
        return f"ClaudeJudge({self.llm!r}, cache={self.cache_dir})"

    # -- the prompt -------------------------------------------------------------------

    @staticmethod
    def _blocks(files: MVEFiles) -> list[tuple[str, str, str]]:
        """(role, name, text) of everything Claude reads, in a fixed order (it is hashed)."""
        out = [("RESULTS", n, t[:MAX_FILE_CHARS]) for n, t in files.results + files.structured]
        out += [("LOG", n, t[:MAX_FILE_CHARS]) for n, t in files.logs]
        if files.mentions:
            by_file: dict[str, list[str]] = {}
            for name, line in files.mentions:
                by_file.setdefault(name, []).append(line)
            out += [("LOG", n, "\n".join(lines)) for n, lines in by_file.items()]
        return out

    def cache_key(self, files: MVEFiles) -> str:
        digest = hashlib.sha256()
        head = {"version": JUDGE_VERSION, "model": self.llm.model, "mve": files.id,
                "prompt": hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()}
        digest.update(json.dumps(head, sort_keys=True).encode())
        for role, name, text in self._blocks(files):
            digest.update(f"\0{role}\0{name}\0{hashlib.sha256(text.encode()).hexdigest()}".encode())
        return digest.hexdigest()

    def _content(self, files: MVEFiles) -> list[dict]:
        parts = [f"MVE {files.id}. Judge its outcome from these files."]
        for role, name, text in self._blocks(files):
            parts.append(f'<file role="{role}" name="{name}">\n{text}\n</file>')
        return [{"type": "text", "text": "\n\n".join(parts)}]

    def _check(self, files: MVEFiles):
        texts = {name: _normal(text) for _, name, text in self._blocks(files)}
        results = {n for n, _ in files.results + files.structured}

        def check(answer: JudgeAnswer) -> str | None:
            quotes = [("verdict_quote", answer.verdict_quote)] if answer.verdict_quote else []
            quotes += [(f"criteria[{i}].quote", c.quote) for i, c in enumerate(answer.criteria)]
            quotes += [(f"blockers[{i}].quote", b.quote) for i, b in enumerate(answer.blockers)]
            quotes += [(f"evidence[{i}]", q) for i, q in enumerate(answer.evidence)]
            for where, q in quotes:
                if q.file not in texts:
                    return f"{where}: no file named {q.file!r}; the files are: {', '.join(sorted(texts))}"
                if _normal(q.quote) not in texts[q.file]:
                    return f"{where}: {q.quote!r} is not in {q.file} verbatim; quote the file's own words"
            if answer.verdict not in ("pending", "no_verdict") and answer.verdict_quote is None:
                return "verdict_quote: quote the words that state the verdict"
            if answer.verdict_quote is not None and answer.verdict_quote.file not in results and \
                    answer.verdict not in ("pending", "no_verdict"):
                return (f"verdict_quote: {answer.verdict_quote.file} is a log; the verdict comes from a RESULTS "
                        f"file ({', '.join(sorted(results))}), or answer pending")
            return None

        return check

    # -- judging ------------------------------------------------------------------------

    def judge(self, files: MVEFiles) -> Judgement:
        key = self.cache_key(files)
        path = self.cache_dir / f"{key}.json"
        cached = self._load(path)
        if cached is not None:
            return self._judgement(cached, files, f"{self.name} (cached)")
        try:
            answer, usage = self.llm.ask(system=[{"type": "text", "text": SYSTEM_PROMPT,
                                                  "cache_control": {"type": "ephemeral"}}],
                                         content=self._content(files), tool_name=TOOL_NAME, output=JudgeAnswer,
                                         description="Submit the judgement of this MVE's outcome.",
                                         check=self._check(files), max_tokens=2048)
        except LLMError as exc:  # no answer, or two invalid ones: the heuristics decide, and say why
            log.warning("Claude could not judge MVE %s (%s): the heuristics decide", files.id, exc)
            fallback = HeuristicJudge().judge(files)
            return replace(fallback, notes=fallback.notes + (
                f"Claude could not judge it ({str(exc)[:200]}); the heuristics decided",))
        self.calls += 1
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"answer": answer.model_dump(mode="json"), "model": self.llm.model,
                                     "mve": files.id, "files": [n for _, n, _ in self._blocks(files)],
                                     "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "usage": {"input_tokens": usage.input_tokens,
                                               "output_tokens": usage.output_tokens, "cost_usd": usage.cost_usd}})
        except OSError as exc:  # a read-only home: judge on, without a cache
            log.warning("could not write the judge cache %s: %s", path, exc)
        return self._judgement(answer, files, self.name)

    def judge_many(self, many: list[MVEFiles]) -> list[Judgement]:
        """Several MVEs at once (a first scan of a large folder): the SDK client is thread-safe."""
        if len(many) <= 1 or self.parallel <= 1:
            return [self.judge(f) for f in many]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(self.judge, many))

    @staticmethod
    def _load(path: Path) -> JudgeAnswer | None:
        try:
            return JudgeAnswer.model_validate(json.loads(path.read_text(encoding="utf-8"))["answer"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: ask again

    @staticmethod
    def _judgement(answer: JudgeAnswer, files: MVEFiles, judge: str) -> Judgement:
        q = answer.verdict_quote
        verdict = Verdict(LABELS[answer.verdict], q.quote if q else answer.verdict, q.file if q else "")
        counted = [c for c in answer.criteria if c.counts]
        failed = [c for c in counted if c.status == "not_met"]
        if failed:
            c = failed[0]
            summary = f"success criteria not met ({c.criterion!r}: {c.quote.quote!r} in {c.quote.file})"
        elif answer.criteria:
            extra = [f"{n} {what}" for n, what in (
                (sum(c.status == "soft_fail" for c in counted), "soft fail"),
                (sum(c.status == "not_tested" for c in answer.criteria), "not tested"),
                (sum(not c.counts and c.status == "not_met" for c in answer.criteria), "not required, missed")) if n]
            met = sum(c.status == "met" for c in counted)
            summary = f"success criteria met ({met}/{len(counted)}{'; ' + ', '.join(extra) if extra else ''})"
        else:
            summary = "no success-criteria section"
        open_blockers = [b for b in answer.blockers if b.critical and not b.resolved]
        blocker = f"{open_blockers[0].quote.quote} (in {open_blockers[0].quote.file})" if open_blockers else None
        evidence = tuple(f"{e.file}: {e.quote}" for e in ([q] if q else []) + list(answer.evidence))
        notes = (f"{judge}: {answer.explanation}",) if answer.explanation else ()
        judgement = Judgement(verdict, not failed, summary, blocker, evidence, notes, judge)
        judgement = apply_structured(judgement, files)
        return replace(judgement, notes=judgement.notes + tuple(log_notes(judgement.verdict, files)))


def make_judge(model: str | None = None, *, offline: bool = False, cache_dir: Path | None = None,
               llm: LLMClient | None = None) -> ClaudeJudge | HeuristicJudge:
    """Claude (`ClaudeJudge`) when ANTHROPIC_API_KEY is set (or `llm` is given)
    and not `offline`; the heuristics otherwise."""
    if offline:
        return HeuristicJudge()
    if llm is None:
        llm = make_llm(model)
    return HeuristicJudge() if llm is None else ClaudeJudge(llm, cache_dir=cache_dir)
