"""Scale the MVE's own model: the parent's side of porting it.

When the MVE's code (`code/NNN/`, or the MVE folder itself) holds a trainable
`nn.Module` language model, the scaled experiment trains that model, not a GPT
in its place. The code is someone else's, so it is only ever imported in a
child process (`python -m actors.scaler.model_probe`) that gets the sandbox's
environment (no secrets, no GPU) and a timeout. The child finds the model,
checks that it maps token ids to logits, chooses its size arguments so that
the parameter count (counted exactly on the meta device) meets the target, and
designs the plan with the offline planner's rules.

This side reads files only as text: where the MVE's code is, which local
modules a model file imports (parsed with `ast`, never run), the adapter the
engine needs when the model is not `model(idx) -> logits` with keyword sizes,
and the exchange with the child. The model's role names (width, depth, ...)
live here so that both sides, and the laptop rehearsal, read them the same way.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actors.scaler.sandboxed import PROBE_TIMEOUT_S, ProbeFailed, probe

log = logging.getLogger(__name__)

MAX_SOURCE_FILES = 60
MAX_SOURCE_BYTES = 512_000

# What constructor arguments are called, by role (compared lower-case). A model
# whose width is `dim`, depth `n_layer` and vocabulary `n_vocab` is sized the
# same way as one that says d_model, n_layers and vocab_size.
ROLES: dict[str, tuple[str, ...]] = {
    "vocab": ("vocab_size", "n_vocab", "vocab", "num_tokens", "ntoken", "ntokens", "vocab_len", "n_tokens"),
    "width": ("d_model", "dim", "hidden", "hidden_size", "hidden_dim", "d_hidden", "n_embd", "n_embed",
              "embed_dim", "emb_dim", "embedding_dim", "width", "n_hidden", "nhid", "d_embed", "model_dim",
              "d_emb", "n_embd_dim"),
    "depth": ("n_layers", "num_layers", "n_layer", "depth", "layers", "nlayers", "num_blocks", "n_blocks",
              "n_block", "num_hidden_layers"),
    "heads": ("n_heads", "num_heads", "n_head", "heads", "nhead", "num_attention_heads"),
    "seq": ("seq_len", "max_seq_len", "block_size", "context_length", "max_len", "n_ctx", "seq_length",
            "max_position_embeddings", "context_len", "max_seq_length", "ctx_len", "max_length"),
    "ffn": ("d_ff", "ffn_dim", "mlp_dim", "d_inner", "ffn_hidden", "intermediate_size", "dim_feedforward",
            "ff_dim", "d_mlp", "mlp_hidden", "ffn_hidden_size", "hidden_ff"),
}
CANONICAL = {"width": "d_model", "depth": "n_layers", "heads": "n_heads", "vocab": "vocab_size", "seq": "seq_len"}
# Where MVE notes keep model settings, besides the top level of results.json.
NESTED_SETTINGS = ("model", "config", "model_config", "hparams", "hyperparameters", "model_kwargs", "model_args",
                   "args")
CONFIG_FILES = ("config.yaml", "config.yml", "config.json", "model_config.json", "hparams.yaml")
# Words in code or notes that say what an MVE without a model is.
_BENCHMARK_WORDS = re.compile(r"\btriton\b|torch\.utils\.benchmark|cuda\.Event|elapsed_time|\btflops\b|"
                              r"\bgb/s\b|\bspeedup\b|\blatency\b|\bkernel\b|timeit", re.IGNORECASE)


def role_of(name: str) -> str | None:
    low = name.lower()
    return next((role for role, names in ROLES.items() if low in names), None)


class NoModel(Exception):
    """The MVE's code holds no language model the engine can train, or it could
    not be ported; the message says why, for the MVE's outcome."""


@dataclass
class Port:
    """What the child designed: the plan (as a dict, model.family custom, the
    files it needs in `files`), its estimate, and where the model came from."""

    plan: dict
    estimate: dict
    source: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- where the code is


def code_folders(*candidates: Path | None) -> list[Path]:
    """The MVE's code folders, in order (`code/NNN/` first, the layout most
    teams use, then the MVE's own folder when its code sits beside its notes),
    each once, those that exist."""
    out: list[Path] = []
    for folder in candidates:
        if folder is not None and Path(folder).is_dir() and Path(folder).resolve() not in [f.resolve() for f in out]:
            out.append(Path(folder))
    return out


def source_files(folders: list[Path]) -> list[Path]:
    """The Python files of the MVE's code, in a stable order, without tests,
    caches, hidden folders and files too big to be a model definition."""
    files: list[Path] = []
    for root in folders:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if any(p.startswith((".", "__pycache__")) for p in rel.parts) or path.name.startswith("test_"):
                continue
            if len(rel.parts) > 4 or not path.is_file() or path.stat().st_size > MAX_SOURCE_BYTES:
                continue
            files.append(path)
            if len(files) >= MAX_SOURCE_FILES:
                return files
    return files


def may_hold_language_model(folders: list[Path]) -> bool:
    """Whether the MVE's code defines a class that derives from something and
    names a vocabulary argument (read with `ast`, not run): only then is the
    probe worth starting. A component (an MLP, a kernel) names no vocabulary."""
    classes = vocab = False
    for path in source_files(folders):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            classes = classes or (isinstance(node, ast.ClassDef) and bool(node.bases))
            name = node.arg if isinstance(node, ast.arg) else (
                node.target.id if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) else None)
            vocab = vocab or (name is not None and role_of(name) == "vocab")
        if classes and vocab:
            return True
    return False


def known_settings(facts: dict, folders: list[Path]) -> dict[str, Any]:
    """The model settings the MVE recorded: config files in its code, then the
    nested sections of results.json, then its top level (which wins)."""
    merged: dict[str, Any] = {}

    def take(section: Any) -> None:
        if isinstance(section, dict):
            for key, value in section.items():
                if isinstance(key, str) and isinstance(value, (int, float, str, bool, list)) and value is not None:
                    merged[key] = value

    for root in folders:
        for name in CONFIG_FILES:
            path = root / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
            except (OSError, ValueError, yaml.YAMLError):
                continue
            if isinstance(data, dict):
                take(data)
                for key in NESTED_SETTINGS:
                    take(data.get(key))
    for key in NESTED_SETTINGS:
        take(facts.get(key))
    take(facts)
    return merged


def describe_without_model(folders: list[Path], facts: dict) -> str:
    """What an MVE with no language model is, in words for a decline reason."""
    texts = []
    for path in source_files(folders):
        try:
            texts.append(path.read_text(errors="replace"))
        except OSError:
            continue
    words = sorted({m.group(0).lower() for t in texts + [json.dumps(facts)] for m in _BENCHMARK_WORDS.finditer(t)})
    if words:
        return f"it looks like a kernel benchmark ({', '.join(words[:5])})"
    if texts:
        return "its code defines no nn.Module language model (an analysis or a component, not a model to train)"
    return "it has no code (an analysis), and results.json names no model family"


# --------------------------------------------------------------------------- what a model file needs


def local_imports(file: Path, roots: list[Path]) -> list[Path]:
    """`file` and every module of the MVE's code it imports, directly or not,
    found by parsing (`import x`, `from x import y`, `from .x import y`)."""
    roots = [r.resolve() for r in roots]
    seen: list[Path] = []
    todo = [file.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (OSError, SyntaxError):
            continue
        for node in ast.walk(tree):
            names: list[tuple[str, int]] = []
            if isinstance(node, ast.Import):
                names = [(a.name, 0) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [(base, node.level)] + [(f"{base}.{a.name}" if base else a.name, node.level)
                                                for a in node.names]
            for name, level in names:
                found = _module_file(name, level, path, roots)
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def _module_file(name: str, level: int, importer: Path, roots: list[Path]) -> Path | None:
    parts = [p for p in name.split(".") if p]
    if level:
        bases = [importer.parent.parents[level - 2] if level > 1 else importer.parent]
    else:
        bases = [importer.parent, *roots]
    for base in bases:
        if not parts:
            candidate = base / "__init__.py"
        else:
            stem = base.joinpath(*parts)
            candidate = stem.with_suffix(".py") if stem.with_suffix(".py").is_file() else stem / "__init__.py"
        candidate = candidate.resolve()
        if candidate.is_file() and any(r == candidate.parent or r in candidate.parents for r in roots):
            return candidate
    return None


def root_of(file: Path, roots: list[Path]) -> Path:
    file = file.resolve()
    return next(r.resolve() for r in roots if r.resolve() in file.parents)


def adapter_source(*, module: str, cls: str, wrapper: str, args: list[str], config_cls: str | None,
                   call_kw: str | None, output: str, why: str) -> str:
    """A models/ file the engine builds (`wrapper(**kwargs)`) that builds the
    MVE's class from its unchanged, copied module and returns its logits."""
    construct = f"_module.{config_cls}(**sizes)" if config_cls else "**sizes"
    call = f"self.inner(idx, {call_kw}=idx)" if call_kw else "self.inner(idx)"
    take = {"tensor": "out", "first": "out[0]", "dict": 'out["logits"]', "attr": "out.logits"}[output]
    params = ", ".join(args)
    return f'''"""Generated by ray-autoresearch: the training engine builds `{wrapper}(**kwargs)` and calls
`model(idx) -> logits [B, T, vocab]`. It builds `{cls}` from the MVE's module `{module}`, copied
unchanged beside this file, because {why}."""

import importlib
import sys
from pathlib import Path

from torch import nn

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
_module = importlib.import_module({module!r})


class {wrapper}(nn.Module):
    def __init__(self, *, {params}):
        super().__init__()
        sizes = dict({", ".join(f"{a}={a}" for a in args)})
        self.inner = _module.{cls}({construct})

    def forward(self, idx):
        out = {call}
        return {take}
'''


# --------------------------------------------------------------------------- the child


def port_offline(*, mve_id: str, folders: list[Path], facts: dict, target_params: int, batch_size: int,
                 timeout_s: float = PROBE_TIMEOUT_S) -> Port:
    """The MVE's own model from its code `folders`, sized to `target_params`
    and planned; NoModel when its code holds none (or it cannot be ported),
    saying why."""
    if not source_files(folders):
        raise NoModel(describe_without_model(folders, facts))
    try:
        answer = probe({"op": "port", "mve_id": mve_id, "folders": [str(f.resolve()) for f in folders],
                        "facts": facts, "settings": known_settings(facts, folders), "target_params": target_params,
                        "batch_size": batch_size}, timeout_s=timeout_s)
    except ProbeFailed as exc:
        raise NoModel(str(exc)) from None
    if not answer.get("ok"):
        why = answer.get("error") or "no language model found"
        if answer.get("no_model"):
            why = f"{describe_without_model(folders, facts)}; {why}"
        raise NoModel(why)
    return Port(plan=answer["plan"], estimate=answer["estimate"], source=answer["source"],
                notes=list(answer.get("notes") or []))


# --------------------------------------------------------------------------- the laptop rehearsal


def rehearsal_kwargs(kwargs: dict, width: int = 128, depth: int = 2) -> dict:
    """A custom model's size arguments cut down for a CPU rehearsal: width at
    most `width` (heads and feed-forward sizes follow), depth at most `depth`."""
    out = dict(kwargs)
    by_role = {role_of(k): k for k in kwargs if role_of(k)}
    w_key, old_w = by_role.get("width"), None
    if w_key and isinstance(kwargs[w_key], int):
        old_w = kwargs[w_key]
        out[w_key] = min(old_w, width)
    if by_role.get("depth") and isinstance(kwargs[by_role["depth"]], int):
        out[by_role["depth"]] = min(kwargs[by_role["depth"]], depth)
    h_key = by_role.get("heads")
    if h_key and w_key and isinstance(kwargs[h_key], int):
        heads = max(1, min(kwargs[h_key], out[w_key] // 32))
        while out[w_key] % heads:
            heads -= 1
        out[h_key] = heads
    if old_w:
        for key in kwargs:
            if role_of(key) == "ffn" and isinstance(kwargs[key], int):
                out[key] = max(8, kwargs[key] * out[w_key] // old_w)
    return out
