"""Proposals for the AutoResearch loop: validation, the offline researcher on both
styles of training script, and Claude through the real SDK on a mock transport."""

from __future__ import annotations

import ast
import difflib
import json

import httpx2
import pytest

from actors.research.config import TEMPLATE_DIR
from actors.research.workspace import commit_message, proposal_from_commit
from actors.shared.llm import LLMClient
from actors.research.knobs import find_knobs
from actors.research.rules import ResultRow
from actors.research.proposals import (
    TOOL_NAME,
    ProposalRejected,
    ResearchContext,
    ResearchProposal,
    apply_diff,
    apply_proposal,
)
from actors.research.researchers import ClaudeResearcher, OfflineResearcher

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

AUTORESEARCH_STYLE = '''"""nanochat-style script."""
import torch

DEPTH = 8
ASPECT_RATIO = 64
MATRIX_LR = 0.04
WEIGHT_DECAY = 0.0
WARMUP_RATIO = 0.0
TIME_BUDGET = 300
SEED = 42


def main():
    return DEPTH * ASPECT_RATIO
'''

GOLF = (TEMPLATE_DIR / "train_gpt.py").read_text()


def proposal(content, edit_format="file", direction="x up", kind="tweak"):
    return ResearchProposal(hypothesis="h", evidence="e", risk="r", description="d", direction=direction,
                            kind=kind, edit_format=edit_format, content=content)


def diff_of(old, new, a="a/train_gpt.py", b="b/train_gpt.py"):
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), a, b))


def knob_values(src):
    return {k.name: k.value for k in find_knobs(src)}


@pytest.mark.parametrize("source", [AUTORESEARCH_STYLE, GOLF], ids=["constants", "environ"])
def test_offline_researcher_changes_exactly_one_default_and_still_parses(source):
    ctx = ResearchContext(file="train_gpt.py", source=source)
    p, usage = OfflineResearcher().propose(ctx)
    new = apply_proposal(p, ctx)
    ast.parse(new)
    before, after = knob_values(source), knob_values(new)
    changed = [k for k in before if before[k] != after[k]]
    assert len(changed) == 1 and p.direction.startswith(changed[0] + " ")
    diff = [line for line in difflib.ndiff(source.splitlines(), new.splitlines()) if line[:1] in "+-"]
    assert len(diff) == 2  # one line out, one line in
    assert p.reasoning_block().startswith("REASONING\nHypothesis:") and usage.cost_usd == 0


def test_offline_researcher_leaves_environment_fixed_knobs_alone_and_goes_structural():
    ctx = ResearchContext(file="train_gpt.py", source=GOLF, env={"LEARNING_RATE": "0.01", "MODEL_DIM": "64"})
    for _ in range(3):
        p, _ = OfflineResearcher().propose(ctx)
        assert not p.direction.startswith(("LEARNING_RATE", "MODEL_DIM"))
        ctx.rows.append(ResultRow(len(ctx.rows) + 1, "c", 3.0, 0.6, "discard", "tweak", p.direction, p.description))
    ctx.structural = True
    p, _ = OfflineResearcher().propose(ctx)
    assert p.kind == "structural" and p.direction.split()[0] in {"NUM_LAYERS", "NUM_HEADS", "MLP_MULT",
                                                                  "SEQ_LEN", "BATCH_SIZE", "WARMUP_STEPS"}


def test_dead_end_directions_are_refused_and_never_proposed_offline():
    ctx = ResearchContext(file="train_gpt.py", source=GOLF, dead_ends={"learning_rate up": [1, 2, 3]})
    new = GOLF.replace('"LEARNING_RATE", 3e-3', '"LEARNING_RATE", 5e-3')
    with pytest.raises(ProposalRejected, match="dead end"):
        apply_proposal(proposal(new, direction="LEARNING_RATE  Up"), ctx)
    for seed in range(5):
        assert OfflineResearcher(seed).propose(ctx)[0].direction.lower() != "learning_rate up"


def test_a_structural_change_is_required_after_a_plateau():
    ctx = ResearchContext(file="train_gpt.py", source=GOLF, structural=True)
    new = GOLF.replace('"NUM_LAYERS", 3', '"NUM_LAYERS", 4')
    with pytest.raises(ProposalRejected, match="structural"):
        apply_proposal(proposal(new), ctx)
    assert apply_proposal(proposal(new, kind="structural"), ctx) == new


def test_diffs_apply_with_git_and_bad_ones_are_refused():
    new = GOLF.replace('"NUM_LAYERS", 3', '"NUM_LAYERS", 4')
    ctx = ResearchContext(file="train_gpt.py", source=GOLF)
    assert apply_proposal(proposal(diff_of(GOLF, new), "diff"), ctx) == new
    assert apply_diff(GOLF, "train_gpt.py", diff_of(GOLF, new, "train_gpt.py", "train_gpt.py")) == new  # -p0
    with pytest.raises(ProposalRejected, match="only train_gpt.py"):
        apply_proposal(proposal(diff_of(GOLF, new, "a/other.py", "b/other.py"), "diff"), ctx)
    stale = diff_of(GOLF.replace("NUM_LAYERS", "N_LAYERS"), new.replace("NUM_LAYERS", "N_LAYERS"))
    with pytest.raises(ProposalRejected, match="does not apply"):
        apply_proposal(proposal(stale, "diff"), ctx)
    with pytest.raises(ProposalRejected, match="no ---"):
        apply_proposal(proposal("just some text", "diff"), ctx)


def test_unparsable_or_unchanged_files_are_refused():
    ctx = ResearchContext(file="train_gpt.py", source=GOLF)
    with pytest.raises(ProposalRejected, match="does not parse: line"):
        apply_proposal(proposal(GOLF + "\ndef broken(:\n"), ctx)
    with pytest.raises(ProposalRejected, match="unchanged"):
        apply_proposal(proposal(GOLF), ctx)


def test_commit_message_round_trip():
    p = proposal("x", direction="MATRIX_LR up", kind="structural")
    n, back = proposal_from_commit(commit_message(7, p), "src")
    assert n == 7 and (back.direction, back.kind, back.hypothesis, back.content) == ("MATRIX_LR up", "structural",
                                                                                     "h", "src")


# --------------------------------------------------------------------------- Claude on a mock transport


class FakeAPI:
    def __init__(self, *bodies):
        self.bodies = list(bodies)
        self.requests = []

    def __call__(self, request):
        self.requests.append(json.loads(request.content))
        return httpx2.Response(200, json=self.bodies.pop(0))


def tool_reply(tool_input, name=TOOL_NAME):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 3000, "output_tokens": 500, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 9000}}


@pytest.fixture
def researcher_over(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-0123")

    def make(api):
        transport = httpx2.Client(transport=httpx2.MockTransport(api))
        llm = LLMClient("claude-sonnet-4-5", max_retries=0, http_client=transport)
        return ClaudeResearcher(llm)

    return make


def test_claude_proposes_a_diff_through_tool_use(researcher_over):
    new = GOLF.replace('"NUM_LAYERS", 3', '"NUM_LAYERS", 4')
    reply = {"hypothesis": "depth helps", "evidence": "exp 3 kept a wider model", "risk": "slower steps",
             "description": "NUM_LAYERS 3 -> 4", "direction": "deeper", "kind": "structural",
             "edit_format": "diff", "content": diff_of(GOLF, new), "ideas": ["tie embeddings"]}
    api = FakeAPI(tool_reply(reply))
    researcher = researcher_over(api)
    ctx = ResearchContext(file="train_gpt.py", source=GOLF, program="# program", results_tsv="n\tcommit\n",
                          notes_md="## Dead Ends", dead_ends={"lr up": [1, 2, 3]}, structural=True,
                          noise_floor=0.002, best_bpb=3.28, env={"MAX_WALLCLOCK_SECONDS": "30"})
    p, usage = researcher.propose(ctx)
    assert apply_proposal(p, ctx) == new and p.ideas == ["tie embeddings"]
    assert usage.input_tokens == 3000 and usage.cost_usd > 0
    body = api.requests[0]
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    text = "\n".join(c["text"] for c in body["messages"][0]["content"])
    for expected in ("# program", "results.tsv", "Dead ends (refused): lr up", "structural change",
                     "Noise floor: 0.0020", "MAX_WALLCLOCK_SECONDS=30", 'os.environ.get("NUM_LAYERS", 3)'):
        assert expected in text


def test_claude_reply_without_the_tool_or_with_bad_fields_is_rejected(researcher_over):
    # Each proposal gets one retry with the rejection as feedback; two bad replies are refused.
    api = FakeAPI(tool_reply({"description": "x"}), tool_reply({"description": "x"}),
                  tool_reply({}, name="other_tool"), tool_reply({}, name="other_tool"))
    researcher = researcher_over(api)
    ctx = ResearchContext(file="train_gpt.py", source=GOLF)
    with pytest.raises(ProposalRejected, match="hypothesis") as exc:
        researcher.propose(ctx)
    assert exc.value.usage.requests == 2 and exc.value.usage.input_tokens == 6000  # both replies billed
    with pytest.raises(ProposalRejected, match="no `submit_experiment` tool call"):
        researcher.propose(ctx)
    assert len(api.requests) == 4


def test_a_proposal_that_does_not_apply_is_sent_back_with_the_reason(researcher_over):
    new = GOLF.replace('"NUM_LAYERS", 3', '"NUM_LAYERS", 4')
    stale = diff_of(GOLF.replace("NUM_LAYERS", "N_LAYERS"), new.replace("NUM_LAYERS", "N_LAYERS"))
    good = {"hypothesis": "h", "evidence": "e", "risk": "r", "description": "NUM_LAYERS 3 -> 4",
            "direction": "deeper", "kind": "tweak", "edit_format": "diff"}
    api = FakeAPI(tool_reply({**good, "content": stale}), tool_reply({**good, "content": diff_of(GOLF, new)}))
    researcher = researcher_over(api)
    ctx = ResearchContext(file="train_gpt.py", source=GOLF)
    p, usage = researcher.propose(ctx)
    assert apply_proposal(p, ctx) == new and usage.requests == 2
    feedback = api.requests[1]["messages"][-1]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["is_error"]
    assert "does not apply to the current train_gpt.py" in feedback["content"]


def test_claude_is_asked_to_fix_a_crash_with_the_log_tail(researcher_over):
    fixed = GOLF.replace("def main():", "def main():  # fixed", 1)
    reply = {"hypothesis": "h", "evidence": "e", "risk": "r", "description": "fix typo", "direction": "x",
             "kind": "tweak", "edit_format": "file", "content": fixed}
    api = FakeAPI(tool_reply(reply))
    researcher = researcher_over(api)
    ctx = ResearchContext(file="train_gpt.py", source=GOLF)
    p, _ = researcher.fix_crash(ctx, proposal("x"), "Traceback ...\nAttributeError: manual_seeed")
    assert p.content == fixed
    text = "\n".join(c["text"] for c in api.requests[0]["messages"][0]["content"])
    assert "AttributeError: manual_seeed" in text and "crashed" in text
