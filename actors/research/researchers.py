"""Who proposes the AutoResearch loop's next experiment.

- `OfflineResearcher`: no model; `actors.research.knobs` changes one numeric
  hyperparameter default.
- `ClaudeResearcher`: Claude, through the shared LLM client (tool use for the
  structured reply, prompt caching, the SDK's retries, accounting); it is also
  asked for a trivial fix when a run crashes. Tests run it over `ScriptedLLM`.

Whoever proposes, `actors.research.proposals.apply_proposal` checks the result.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from actors.research import knobs as offline
from actors.research.changes import fingerprint
from actors.research.proposals import (
    TOOL_NAME,
    ProposalRejected,
    ResearchContext,
    ResearchProposal,
    Researcher,
    apply_proposal,
)
from actors.research.rules import normalise_direction
from actors.shared.llm import LLMClient, LLMError, ReplyRejected, make_llm
from actors.shared.pricing import Usage

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- offline

# Knobs that change the model's shape or the schedule: what the offline proposer
# can offer when a structural change is called for.
_STRUCTURAL_MARKERS = ("DIM", "LAYER", "HEADS", "DEPTH", "WIDTH", "HIDDEN", "MLP", "EMBED", "MULT",
                       "WARMUP", "WARMDOWN", "COOLDOWN", "SEQ", "BATCH")


def _is_structural_knob(name: str) -> bool:
    return any(m in name.upper() for m in _STRUCTURAL_MARKERS)


class OfflineResearcher:
    """One numeric default per experiment, chosen by `actors.research.knobs`'s rules."""

    name = "offline"
    can_fix_crashes = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def propose(self, context: ResearchContext) -> tuple[ResearchProposal, Usage]:
        # A knob exported into every run would mask its own default: never propose those.
        knobs = [k for k in offline.find_knobs(context.source) if k.name not in context.env]
        dead = {(k.name, d) for k in knobs for d in ("up", "down")
                if normalise_direction(f"{k.name} {d}") in context.dead_ends}
        history = []
        for r in context.rows:
            if not r.is_experiment:
                continue
            knob, _, d = r.direction.partition(" ")
            history.append({"description": r.description, "knob": knob or None, "direction": d or None,
                            "status": r.status, "val_bpb": r.val_bpb})
        free = {k.name for k in knobs}
        structural = {n for n in free if _is_structural_knob(n)} if context.structural else set()
        # A change another researcher ran or runs is refused: step over those.
        for _ in range(2 * len(knobs) + 1):
            try:
                p = offline.propose(context.source, history, dead, seed=self.seed,
                                    only=(structural or free).__contains__)
            except ValueError as exc:
                raise ProposalRejected(str(exc)) from None
            if fingerprint(context.source, p.source) not in context.taken:
                break
            dead = dead | {(p.knob, p.direction)}
        else:
            raise ProposalRejected("every one-knob change the offline proposer can make was already run")
        kind = "structural" if context.structural and _is_structural_knob(p.knob) else "tweak"
        reasoning = dict(_split_reasoning(p.reasoning))
        untried = [k.name for k in knobs if k.name not in {h["knob"] for h in history} and k.name != p.knob]
        proposal = ResearchProposal(
            hypothesis=reasoning.get("Hypothesis", p.description),
            evidence=reasoning.get("Evidence", "none"),
            risk=reasoning.get("Risk", "none"),
            description=p.description,
            direction=f"{p.knob} {p.direction}",
            kind=kind,
            edit_format="file",
            content=p.source,
            ideas=[f"try {name}" for name in untried[:8]],
        )
        return proposal, Usage()

    def fix_crash(self, context, proposal, log_tail):
        raise LLMError("the offline researcher cannot fix a crash")


def _split_reasoning(block: str) -> Iterable[tuple[str, str]]:
    for line in block.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("Hypothesis", "Evidence", "Risk"):
            yield key, value.strip()


# --------------------------------------------------------------------------- Claude

SYSTEM_PROMPT = f"""\
You are an ML researcher running an autonomous keep/discard loop on one training \
script (OpenAI Parameter Golf style). Each experiment changes the script once; it \
is committed, run under a fixed wall-clock budget, and kept only if the final \
round-trip val_bpb improves by more than the noise floor while the artifact (code \
bytes + int8+zlib model bytes) stays under the cap. Otherwise it is discarded and \
the branch goes back to the kept head.

Submit exactly one experiment with the `{TOOL_NAME}` tool:
- change one thing, so the result says what that change did;
- REASONING: a hypothesis, evidence that cites earlier experiments by number \
(results.tsv, notes.md), and the risk;
- `direction` names what the change pushes on; reuse the same words for the same \
direction. Directions listed as dead ends are refused;
- `edit_format` "diff" (a unified diff with ---/+++ headers of the file, preferred \
for small changes) or "file" (the whole new file). The result must be valid Python \
that still prints the same result lines;
- keep the script self-contained and deterministic given its seed; never remove the \
wall-clock cap; never change a protected file (the evaluation harness) nor the \
way results are scored;
- other researchers work in parallel from the same results: a change that was \
already run, or is running, is refused;
- `ideas`: what you would try next, best first.
"""

FIX_INSTRUCTIONS = """\
The experiment above crashed. If the cause is a trivial bug in the change (a typo, \
a shape, a missing import), submit the fixed experiment with the same direction and \
kind, as a diff against the crashed file shown above or as the whole file. Keep the \
idea; fix only what made it crash."""


class ClaudeResearcher:
    """Claude as the researcher: builds the prompt and asks once through the
    shared `LLMClient` (or its scripted fake). Its answer must be a valid
    `ResearchProposal` that `apply_proposal` accepts; one that is not gets the
    client's single retry, with the reason, in the same conversation."""

    can_fix_crashes = True

    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm
        self.name = f"anthropic:{llm.model}"

    def __repr__(self) -> str:
        return f"ClaudeResearcher({self.llm!r})"

    def content(self, context: ResearchContext, extra: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The user turn. One cache breakpoint on the research file (the system
        prompt has the other): results and notes change every experiment."""
        content: list[dict[str, Any]] = []
        if context.program:
            content.append({"type": "text", "text": f'<document name="program.md">\n{context.program}\n</document>'})
        content.append({"type": "text",
                        "text": f'<document name="{context.file}">\n{context.source}\n</document>',
                        "cache_control": {"type": "ephemeral"}})
        content.append({"type": "text",
                        "text": f'<document name="results.tsv">\n{context.results_tsv}\n</document>\n'
                        f'<document name="notes.md">\n{context.notes_md}\n</document>'})
        fixed = ("Fixed for every run by the environment (changing their defaults has no effect): "
                 + ", ".join(f"{k}={v}" for k, v in sorted(context.env.items())) + ".") if context.env else ""
        rules = [fixed, f"Noise floor: {context.noise_floor:.4f} val_bpb." if context.noise_floor is not None else "",
                 f"Best val_bpb so far: {context.best_bpb:.4f}." if context.best_bpb is not None else "",
                 f"Artifact cap: {context.cap_bytes:,} bytes."]
        if context.dead_ends:
            rules.append("Dead ends (refused): " + "; ".join(context.dead_ends) + ".")
        if context.protected:
            rules.append("Protected, never to be changed (the evaluation harness): "
                         + ", ".join(context.protected) + ".")
        if context.running:
            rules.append("Running now on other researchers (do not propose these again): "
                         + "; ".join(context.running) + ".")
        if context.structural:
            rules.append("The last five experiments each gained less than 0.001: this experiment must be a "
                         "structural change (kind 'structural').")
        task = " ".join(r for r in rules if r) + f"\n\nPropose the next experiment with `{TOOL_NAME}`."
        content.append({"type": "text", "text": task})
        for text in extra:
            content.append({"type": "text", "text": text})
        if context.feedback:
            content.append({"type": "text", "text": f"Your previous proposal was rejected: {context.feedback}\n"
                            "Submit a corrected one."})
        return content

    def _ask(self, context: ResearchContext, extra: Iterable[str] = ()) -> tuple[ResearchProposal, Usage]:
        def applies(proposal: ResearchProposal) -> str | None:
            try:
                apply_proposal(proposal, context)
            except ProposalRejected as exc:
                return str(exc)
            return None

        system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]
        try:
            return self.llm.ask(system=system, content=self.content(context, extra), tool_name=TOOL_NAME,
                                output=ResearchProposal, check=applies,
                                description="Submit the next experiment of the keep/discard loop.")
        except ReplyRejected as exc:  # the loop stops on a proposal it cannot use
            raise ProposalRejected(exc.reason, model=exc.model, usage=exc.usage) from None

    def propose(self, context: ResearchContext) -> tuple[ResearchProposal, Usage]:
        return self._ask(context)

    def fix_crash(self, context: ResearchContext, proposal: ResearchProposal,
                  log_tail: str) -> tuple[ResearchProposal, Usage]:
        extra = [f"The experiment you proposed:\n{proposal.reasoning_block()}\nDescription: {proposal.description}",
                 f"It crashed. The last lines of its log:\n<log>\n{log_tail}\n</log>", FIX_INSTRUCTIONS]
        return self._ask(context, extra)


def make_researcher(*, offline_only: bool = False, model: str | None = None, seed: int = 0) -> Researcher:
    """Claude when ANTHROPIC_API_KEY is set (and not `offline_only`), else the offline researcher."""
    # A whole 10-50 kB file can come back: room for it, and time to write it.
    llm = make_llm(model, offline=offline_only, max_tokens=16000, timeout_s=600)
    if llm is None:
        log.info("AutoResearch proposer: offline")
        return OfflineResearcher(seed=seed)
    researcher = ClaudeResearcher(llm)
    log.info("AutoResearch proposer: %r", researcher)
    return researcher
