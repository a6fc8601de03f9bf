"""The experiments ledger: what a reader of EXPERIMENTS.md sees, and the run checks."""

import multiprocessing as mp
import re

import pytest

from train.ledger import SECTIONS, LedgerEntry, append_entry, observe, render_entry

TS = 1_735_732_800.0  # 2025-01-01T12:00:00Z


def _entry(title="008_scaled: GPT 25M on WikiText-103", **overrides) -> LedgerEntry:
    fields = dict(
        title=title,
        config={"model": {"d_model": 512, "n_layer": 8}, "optim": {"lr": 3e-4, "name": "adamw"}, "seed": 0},
        gpu_allocation=[
            {"node": "10.0.0.5", "gpu_ids": [0, 1], "role": "rank 0"},
            {"node": "10.0.0.6", "gpu_ids": [0], "role": "rank 1"},
        ],
        results={"steps": 2000, "tokens_per_s": 151234.5, "val_loss": 3.21, "val_bpb": 1.2243657,
                 "cost_usd": 12.5, "stop_reason": "budget"},
        observations=["val loss still falling at the end", "throughput steady"],
        artifacts={"checkpoint": "runs/008/ckpt.pt", "wandb": "https://wandb.ai/x/y/runs/abc"},
        command="python -m train.run code/008_scaled/config.yaml",
        timestamp=TS,
    )
    fields.update(overrides)
    return LedgerEntry(**fields)


def _sections(markdown: str) -> dict[str, str]:
    """Split one entry into {section heading: body}."""
    parts = re.split(r"^### (.+)$", markdown, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def _table(body: str) -> dict[str, list[str]]:
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]  # drop header and rule
    cells = [re.split(r"(?<!\\)\|", row)[1:-1] for row in rows]
    return {c[0].strip(): [x.strip() for x in c[1:]] for c in cells}


def test_new_ledger_gets_a_title_and_a_complete_entry(tmp_path):
    path = tmp_path / "experiments" / "EXPERIMENTS.md"
    written = append_entry(path, _entry())
    text = path.read_text()
    assert text == written
    assert text.startswith("# Experiments\n\n## 008_scaled: GPT 25M on WikiText-103 (2025-01-01T12:00:00Z)\n")
    sections = _sections(text)
    assert list(sections) == list(SECTIONS)

    config = _table(sections["Configuration"])
    assert config["model.d_model"] == ["512"] and config["optim.lr"] == ["0.0003"] and config["seed"] == ["0"]
    gpus = _table(sections["GPU allocation"])
    assert gpus["10.0.0.5"] == ["0, 1", "rank 0"] and gpus["10.0.0.6"] == ["0", "rank 1"]
    results = _table(sections["Results"])
    assert results["val_bpb"] == ["1.22437"] and results["stop_reason"] == ["budget"]
    assert sections["Observations"].splitlines() == ["- val loss still falling at the end", "- throughput steady"]
    assert "- checkpoint: `runs/008/ckpt.pt`" in sections["Artifacts"]
    assert "- wandb: https://wandb.ai/x/y/runs/abc" in sections["Artifacts"]
    assert sections["Command"] == "```bash\npython -m train.run code/008_scaled/config.yaml\n```"


def test_second_entry_appends_after_the_first(tmp_path):
    path = tmp_path / "EXPERIMENTS.md"
    path.write_text("# Experiments\n\nsome hand-written notes")  # no trailing newline
    append_entry(path, _entry("009_a"))
    append_entry(path, _entry("010_b"))
    text = path.read_text()
    assert text.count("# Experiments") == 1 and "some hand-written notes\n\n## 009_a" in text
    assert re.findall(r"^## (\S+)", text, flags=re.M) == ["009_a", "010_b"]


def test_pipes_and_newlines_stay_inside_their_cell():
    md = render_entry(_entry(config={"filter": "a|b", "note": "two\nlines"}, results={"expr": "x | y"}))
    config = _table(_sections(md)["Configuration"])
    assert config["filter"] == ["a\\|b"] and config["note"] == ["two<br>lines"]
    assert _table(_sections(md)["Results"])["expr"] == ["x \\| y"]


def test_empty_allocation_says_cpu_only_and_empty_lists_say_none():
    md = render_entry(_entry(gpu_allocation=[], observations=[], artifacts={}))
    s = _sections(md)
    assert _table(s["GPU allocation"]) == {"local": ["none", "CPU only"]}
    assert s["Observations"] == "- (none)" and s["Artifacts"] == "- (none)"


def test_command_with_backticks_gets_a_longer_fence():
    md = render_entry(_entry(command="echo ```x```"))
    assert "````bash\necho ```x```\n````" in md


def test_secrets_never_reach_the_ledger(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123456789")
    md = render_entry(_entry(config={"llm": {"api_key": "fake-anthropic-key-abcdefgh"}, "tokens_per_s_target": 5},
                             command="WANDB_API_KEY=wandb-secret-0123456789 python -m train.run c.yaml"))
    assert "fake-anthropic-key-abcdefgh" not in md and "wandb-secret-0123456789" not in md
    config = _table(_sections(md)["Configuration"])
    assert config["llm.api_key"] == ["[REDACTED]"] and config["tokens_per_s_target"] == ["5"]


def test_bad_entries_fail_before_touching_the_file(tmp_path):
    path = tmp_path / "EXPERIMENTS.md"
    with pytest.raises(ValueError, match="title"):
        append_entry(path, _entry(title="  "))
    with pytest.raises(ValueError, match=r"gpu_allocation\[0\] lacks role"):
        append_entry(path, _entry(gpu_allocation=[{"node": "n", "gpu_ids": [0]}]))
    assert not path.exists()


def _append_many(path, writer, n, start):
    start.wait()
    for i in range(n):
        # Large entries make a torn or interleaved write easy to see.
        append_entry(path, _entry(f"{writer}_{i:02d}", observations=[f"{writer} {i} " + "x" * 20_000]))


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "EXPERIMENTS.md"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 20, start)) for w in ("A", "B")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0

    text = path.read_text()
    assert text.count("# Experiments\n") == 1
    entries = re.split(r"^(?=## )", text, flags=re.M)[1:]
    titles = [re.match(r"## (\S+)", e).group(1) for e in entries]
    assert len(entries) == 40 and sorted(titles) == sorted(f"{w}_{i:02d}" for w in "AB" for i in range(20))
    for title, entry in zip(titles, entries):
        writer, i = title.split("_")
        sections = _sections(entry)
        assert list(sections) == list(SECTIONS), title
        assert sections["Observations"] == f"- {writer} {int(i)} " + "x" * 20_000, title
    # Each writer's own entries keep their order.
    for w in "AB":
        assert [t for t in titles if t.startswith(w)] == [f"{w}_{i:02d}" for i in range(20)]


# ---------------------------------------------------------------- observe

def _healthy(n=40):
    return [{"step": 10 * i, "train_loss": 5.0 / (1 + 0.1 * i), "val_loss": 5.2 / (1 + 0.1 * i),
             "tokens_per_s": 1_000.0 if i == 0 else 100_000.0 + 50 * (i % 3)} for i in range(n)]


def test_healthy_run_has_no_anomalies():
    assert observe(_healthy()) == ["no anomalies"]


def test_constant_loss():
    h = [dict(r, train_loss=2.5) for r in _healthy()]
    assert any(f.startswith("loss exactly constant") for f in observe(h))


def test_zero_loss_names_the_step():
    h = _healthy()
    h[7]["train_loss"] = 0.0
    assert "loss is exactly 0.0 at step 70 (train_loss)" in observe(h)


def test_nan_is_found_with_its_step():
    h = _healthy()
    h[12]["train_loss"] = float("nan")
    h[13]["train_loss"] = float("inf")
    findings = observe(h)
    assert any(f.startswith("NaN/inf loss at step 120 ") for f in findings), findings


def test_no_improvement_uses_val_loss_then_train_loss():
    h = _healthy()
    h[-1]["val_loss"] = h[0]["val_loss"] + 0.1
    assert "no improvement: final val_loss 5.3 >= first 5.2" in observe(h)
    train_only = [{"step": r["step"], "train_loss": 4.0 + 0.01 * i} for i, r in enumerate(_healthy(10))]
    assert "no improvement: final train_loss 4.09 >= first 4" in observe(train_only)


def test_throughput_collapse_ignores_the_warm_up_step():
    h = _healthy()
    for r in h[30:]:
        r["tokens_per_s"] = 30_000.0
    assert "throughput collapse: tokens/s fell from 1e+05 to 3e+04" in observe(h)
    # The slow first step alone is warm-up, not a collapse in reverse or otherwise.
    assert observe(_healthy()) == ["no anomalies"]


def test_rows_without_step_or_with_junk_are_refused():
    with pytest.raises(ValueError, match=r"history\[1\] has no 'step'"):
        observe([{"step": 0, "train_loss": 1.0}, {"train_loss": 0.5}])
    with pytest.raises(ValueError, match="train_loss='oops'"):
        observe([{"step": 0, "train_loss": "oops"}])
