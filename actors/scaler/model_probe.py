"""The child process that imports an MVE's code: `python -m actors.scaler.model_probe REQUEST.json`.

Only `actors.scaler.model_port` starts it, with the sandbox's environment (no
secrets, no GPU) and a timeout: the MVE's code is someone else's, and importing
it runs it. It prints one JSON object on its last line of output.

- `{"op": "port", ...}`: import each file of the MVE's code, find the
  `nn.Module` language models (a constructor with a vocabulary and a width
  argument, by the names in `model_port.ROLES`, or a config dataclass with
  them), check on CPU at a small size that `model(idx)` gives logits
  [B, T, vocab] (or a tuple, dict or object holding them), choose the size
  arguments that meet the parameter target (counted on the meta device), and
  design the plan with `OfflinePlanner`. The answer holds the plan (paths
  relative to the scaled folder, the copied files in `files`) and its estimate.
- `{"op": "fits", "spec": {...}}`: `check_fits` of a spec whose model file is
  under the working directory: the estimate, or the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from actors.scaler.model_port import (CANONICAL, adapter_source, local_imports, role_of, root_of,
                                      source_files)

SMALL_WIDTH = 64
ALIGN = 64  # widths are searched in multiples of 64 (tensor-core friendly; 64-wide heads) ...
FINE = 8  # ... then refined in multiples of 8
HEAD_SIZE = 64


@dataclasses.dataclass
class Candidate:
    file: Path
    module: str  # the name it was imported under (dotted for package modules)
    cls: type
    config_cls: type | None  # a config dataclass the constructor takes, or None
    args: dict[str, inspect.Parameter]  # what the sizes are passed as (constructor or config fields)
    roles: dict[str, str]  # role -> argument name

    @property
    def name(self) -> str:
        return self.cls.__name__

    def build(self, kwargs: dict) -> nn.Module:
        return self.cls(self.config_cls(**kwargs)) if self.config_cls else self.cls(**kwargs)


# --------------------------------------------------------------------------- finding models


def _import(file: Path, root: Path) -> tuple[Any, str]:
    """Import `file` with its folder and the code root on sys.path; as a package
    module (`pkg.mod`) when its folder is a package, so relative imports work."""
    for p in (str(root), str(file.parent)):
        if p not in sys.path:
            sys.path.insert(0, p)
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    pkg_depth = 0
    folder = file.parent
    while folder != root and (folder / "__init__.py").is_file():
        pkg_depth += 1
        folder = folder.parent
    name = ".".join(parts[len(parts) - 1 - pkg_depth:]) if pkg_depth else file.stem
    return importlib.import_module(name), name


def _params_of(cls: type) -> tuple[dict[str, inspect.Parameter], type | None]:
    """The size arguments of `cls`: its constructor's keyword parameters, or the
    fields of the config dataclass its one required parameter takes."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return {}, None
    params = {n: p for n, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = [p for p in params.values() if p.default is p.empty]
    if len(required) == 1 and not role_of(required[0].name):
        config = _dataclass_of(cls, required[0])
        if config is not None:
            fields = {f.name: inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                                default=_field_default(f)) for f in dataclasses.fields(config)}
            return fields, config
    return params, None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return inspect.Parameter.empty


def _dataclass_of(cls: type, param: inspect.Parameter) -> type | None:
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations of someone else's code may not resolve
        hints = {}
    hint = hints.get(param.name, param.annotation)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    module = sys.modules.get(cls.__module__)
    configs = [v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
               and any(role_of(f.name) == "vocab" for f in dataclasses.fields(v))] if module else []
    return configs[0] if len(configs) == 1 else None


def find_candidates(folders: list[Path], notes: list[str]) -> list[Candidate]:
    found: list[Candidate] = []
    roots = [f.resolve() for f in folders]
    for file in source_files(folders):
        file = file.resolve()
        root = root_of(file, roots)
        try:
            module, name = _import(file, root)
        except BaseException as exc:  # noqa: BLE001 - their code; SystemExit and all
            notes.append(f"{file.relative_to(root)}: importing it failed: {type(exc).__name__}: {exc}"[:300])
            continue
        for obj in list(vars(module).values()):
            if not (isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__):
                continue
            args, config = _params_of(obj)
            roles = {}
            for arg in args:
                role = role_of(arg)
                if role and role not in roles:
                    roles[role] = arg
            if "vocab" in roles and "width" in roles:
                found.append(Candidate(file, name, obj, config, args, roles))
    found.sort(key=lambda c: -len(c.roles))  # most size roles first; `port` puts parts after wholes
    return found


# --------------------------------------------------------------------------- values and sizes


class Unfit(Exception):
    """This candidate cannot be trained by the engine; the message says why."""


def base_values(c: Candidate, settings: dict, vocab: int, seq_len: int) -> tuple[dict, dict]:
    """(the arguments that do not change with size, the MVE's own sizes)."""
    fixed: dict[str, Any] = {}
    mve: dict[str, Any] = {}
    for arg, p in c.args.items():
        role = role_of(arg) if c.roles.get(role_of(arg) or "") == arg else None
        if role == "vocab":
            fixed[arg] = vocab
        elif role == "seq":
            fixed[arg] = seq_len
        elif role in ("width", "depth", "heads", "ffn"):
            value = settings.get(arg, settings.get(CANONICAL.get(role, arg), p.default))
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                mve[arg] = value
            elif p.default is p.empty and role in ("width", "depth"):
                mve[arg] = None  # sized below
        elif arg in settings:
            fixed[arg] = settings[arg]
        elif p.default is p.empty:
            raise Unfit(f"{c.name} needs `{arg}`, which neither results.json nor a config file of the MVE gives")
    return fixed, mve


def sizes_at(c: Candidate, mve: dict, width: int, depth: int | None) -> dict:
    r = c.roles
    kw: dict[str, Any] = {r["width"]: width}
    if "depth" in r and depth is not None:
        kw[r["depth"]] = depth
    if "heads" in r:  # about 64 wide, dividing the width
        heads = max(1, width // HEAD_SIZE)
        while width % heads:
            heads -= 1
        kw[r["heads"]] = heads
    if "ffn" in r:
        w0, f0 = mve.get(r["width"]), mve.get(r["ffn"])
        ratio = f0 / w0 if w0 and f0 else 4.0
        kw[r["ffn"]] = max(8, int(round(ratio * width / 8)) * 8)
    return kw


def logits_of(out: Any, batch: int, steps: int, vocab: int) -> tuple[torch.Tensor | None, str]:
    def right(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.dim() == 3 and tuple(t.shape) == (batch, steps, vocab)

    if right(out):
        return out, "tensor"
    if isinstance(out, (tuple, list)) and out and right(out[0]):
        return out[0], "first"
    if isinstance(out, dict) and right(out.get("logits")):
        return out["logits"], "dict"
    if right(getattr(out, "logits", None)):
        return out.logits, "attr"
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    return None, str(shape)


def check_forward(c: Candidate, kwargs: dict, vocab: int, seq_len: int) -> tuple[str, str | None]:
    """(output style, keyword that asks for logits at every position) from a
    real forward and backward pass on CPU at a small size."""
    torch.manual_seed(0)
    try:
        model = c.build(kwargs)
    except Exception as exc:  # noqa: BLE001
        raise Unfit(f"{c.name}({_show(kwargs)}) raised {type(exc).__name__}: {exc}") from None
    steps = min(seq_len, 16)
    idx = torch.randint(0, vocab, (2, steps))
    fwd = inspect.signature(model.forward).parameters
    tries: list[str | None] = [None] + [k for k in ("targets", "labels", "target", "y") if k in fwd]
    seen = ""
    for kw in tries:
        try:
            out = model(idx, **({kw: idx} if kw else {}))
        except Exception as exc:  # noqa: BLE001
            seen = f"{type(exc).__name__}: {exc}"
            continue
        logits, style = logits_of(out, 2, steps, vocab)
        if logits is None:
            seen = f"returned {style}, not logits of shape (2, {steps}, {vocab})"
            continue
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, vocab), idx.reshape(-1))
        loss.backward()
        if not any(p.grad is not None for p in model.parameters()):
            raise Unfit(f"{c.name}: no parameter received a gradient")
        return style, kw
    raise Unfit(f"{c.name}: model(idx) {seen}"[:400])


@contextlib.contextmanager
def no_init():
    """Weight initialisation as a no-op while models are built on the meta
    device to be counted: on meta, torch routes `normal_` and friends through
    decompositions that import torch._dynamo (seconds, once per process, and
    this process is short-lived). What is counted does not change."""
    from torch.nn import init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    methods = {n: getattr(torch.Tensor, n) for n in ("normal_", "uniform_", "fill_", "zero_", "exponential_")}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *a, **k: tensor)
        for n in methods:
            setattr(torch.Tensor, n, lambda self, *a, **k: self)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)
        for n, f in methods.items():
            setattr(torch.Tensor, n, f)


def count(c: Candidate, kwargs: dict) -> int | None:
    try:
        with torch.device("meta"), no_init():
            model = c.build(kwargs)
    except Exception:  # noqa: BLE001 - a size the model refuses (e.g. not divisible)
        return None
    return sum(p.numel() for p in model.parameters())


def choose_size(c: Candidate, fixed: dict, mve: dict, target: int) -> tuple[dict, int]:
    """Width (multiples of 64) and depth chosen together: depth at the MVE's
    width-to-depth ratio (kept between 32 and 128), then the width that brings
    the exact count closest to the target."""
    r = c.roles
    w0, d0 = mve.get(r["width"]), mve.get(r.get("depth", ""))
    aspect = min(128.0, max(32.0, w0 / d0)) if w0 and d0 else 64.0
    cache: dict[tuple, int | None] = {}

    def params(width: int, depth: int | None) -> int | None:
        if (width, depth) not in cache:
            cache[(width, depth)] = count(c, {**fixed, **sizes_at(c, mve, width, depth)})
        return cache[(width, depth)]

    def gap(p: int | None) -> float:
        return abs(math.log(p / target)) if p else math.inf

    depth: int | None = None
    if "depth" in r:
        best = None
        for d in range(1, 49):
            w = max(ALIGN, int(round(aspect * d / ALIGN)) * ALIGN)
            p = params(w, d)
            if best is None or gap(p) < gap(best[1]):
                best = (d, p)
            if p is not None and p > target:
                break
        depth = best[0]
    lo, hi = 1, 512  # width = ALIGN * k
    while lo < hi:  # the smallest width whose count reaches the target
        mid = (lo + hi) // 2
        p = params(ALIGN * mid, depth)
        if p is not None and p >= target:
            hi = mid
        else:
            lo = mid + 1
    # Then every multiple of FINE around it: the count lands within a few percent.
    widths = [w for w in range(max(FINE, ALIGN * (lo - 1)), ALIGN * (lo + 1) + 1, FINE) if params(w, depth)]
    if not widths:
        raise Unfit(f"{c.name}: no width from {ALIGN} to {ALIGN * 512} builds")
    width = min(widths, key=lambda w: (gap(params(w, depth)), w % ALIGN != 0))
    return {**fixed, **sizes_at(c, mve, width, depth)}, params(width, depth)


def _show(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# --------------------------------------------------------------------------- the port


def port(req: dict) -> dict:
    from actors.scaler.planners import OfflinePlanner
    from train.estimate import vocab_size_of
    from train.spec import DataSpec, ModelSpec

    notes: list[str] = []
    folders = [Path(f) for f in req["folders"]]
    facts, settings = req.get("facts") or {}, req.get("settings") or {}
    planner = OfflinePlanner(target_params=req["target_params"], batch_size=req["batch_size"])
    benchmark, _, seq_len, data_params = planner.read_facts(req["mve_id"], facts)
    vocab = vocab_size_of(DataSpec(benchmark=benchmark, seq_len=seq_len, params=data_params))
    candidates = find_candidates(folders, notes)
    if not candidates:
        return {"ok": False, "no_model": True, "notes": notes,
                "error": "no nn.Module with a vocabulary and a width argument" + (f" ({notes[0]})" if notes else "")}
    refused: list[str] = []
    ready = []
    for c in candidates:
        try:
            fixed, mve = base_values(c, settings, vocab, seq_len)
        except Unfit as exc:
            refused.append(str(exc))
            continue
        depth0 = mve.get(c.roles.get("depth", "")) or 2
        ready.append((c, fixed, mve, {**fixed, **sizes_at(c, mve, SMALL_WIDTH, min(depth0, 2))}))
    # The whole model before its parts: a class whose instances hold another
    # candidate (a Block inside the LM) goes first.
    parts: set[type] = set()
    for c, _, _, small in ready:
        try:
            parts |= {type(m) for m in c.build(small).modules()} - {c.cls}
        except Exception:  # noqa: BLE001 - check_forward says why, below
            pass
    ready.sort(key=lambda r: r[0].cls in parts)
    for c, fixed, mve, small in ready:
        try:
            style, call_kw = check_forward(c, small, vocab, seq_len)
            kwargs, params = choose_size(c, fixed, mve, req["target_params"])
        except Unfit as exc:
            refused.append(str(exc))
            continue
        return _design(req, c, kwargs, params, style, call_kw, folders, planner, facts, notes, benchmark, seq_len,
                       data_params, ModelSpec)
    return {"ok": False, "notes": notes, "error": "; ".join(refused)[:1500]}


def _design(req, c: Candidate, kwargs, params, style, call_kw, folders, planner, facts, notes, benchmark, seq_len,
            data_params, ModelSpec) -> dict:
    roots = [f.resolve() for f in folders]
    root = root_of(c.file, roots)
    files = {}
    # The model's file, the packages it sits in (their __init__ runs when it is
    # imported), and every module of the MVE's code these import.
    seeds = [c.file] + [p / "__init__.py" for p in c.file.parents if root in p.parents and (p / "__init__.py").is_file()]
    for seed in seeds:
        for path in local_imports(seed, [root]):
            files["models/" + path.relative_to(root).as_posix()] = path.read_text()
    why = []
    if style != "tensor":
        why.append("its forward returns its logits inside " + {"first": "a tuple", "dict": "a dict",
                                                                  "attr": "an output object"}[style])
    if call_kw:
        why.append(f"it gives logits at every position only when called with `{call_kw}`")
    if c.config_cls is not None:
        why.append(f"it takes its sizes as a `{c.config_cls.__name__}`")
    if "." in c.module:
        why.append("it lives in a package (its imports are relative to it)")
    if why:
        wrapper = f"Ported{c.name}"
        entry = f"models/ported_{c.name.lower()}.py"
        files[entry] = adapter_source(module=c.module, cls=c.name, wrapper=wrapper, args=sorted(kwargs),
                                      config_cls=c.config_cls.__name__ if c.config_cls else None, call_kw=call_kw,
                                      output=style, why=" and ".join(why))
        spec_kwargs, class_name = dict(kwargs), wrapper
    else:
        entry = "models/" + c.file.relative_to(root).as_posix()
        class_name = c.name
        # vocab_size and seq_len by those names come from the data spec (custom.py passes them).
        spec_kwargs = {k: v for k, v in kwargs.items() if k not in ("vocab_size", "seq_len")}
    r = c.roles
    width, depth = kwargs[r["width"]], kwargs.get(r.get("depth", ""), 1)
    heads = kwargs.get(r.get("heads", ""), 1)
    source = f"{c.file.relative_to(root.parent.parent).as_posix()}:{c.name}"
    with tempfile.TemporaryDirectory(prefix="port-") as tmp:
        for rel, text in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(text)
        os.chdir(tmp)  # the plan's model path is relative to the scaled folder, as it will be there
        model = ModelSpec(family="custom", path=entry, class_name=class_name, kwargs=spec_kwargs,
                          d_model=width, n_layers=depth, n_heads=heads)
        idea = (f"trains the MVE's own model, {source} ({_show(kwargs)}), sized to {params:,} parameters "
                f"(counted on the meta device)")
        from train.estimate import check_fits

        with no_init():  # the estimate builds on the meta device too
            plan = planner.design(req["mve_id"], facts, model=model, idea=idea)
            est = check_fits(plan.to_train_spec())
        os.chdir(Path(tmp).parent)
    plan_json = plan.model_dump(mode="json")
    plan_json["model"]["path"] = entry
    plan_json["files"] = files
    return {"ok": True, "plan": plan_json, "estimate": est.to_dict(), "source": source, "notes": notes}


def fits(req: dict) -> dict:
    from train.estimate import check_fits
    from train.spec import TrainSpec

    try:
        with no_init():
            est = check_fits(TrainSpec.parse(req["spec"], source="plan"))
    except Exception as exc:  # noqa: BLE001 - whatever breaks, the parent gets it as the problem
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:1500]}
    return {"ok": True, "estimate": est.to_dict()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    req = json.loads(Path(args[0]).read_text())
    handler: Callable[[dict], dict] = {"port": port, "fits": fits}[req["op"]]
    try:
        answer = handler(req)
    except Exception as exc:  # noqa: BLE001 - report, do not leave the parent guessing
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:1500]}
    sys.stdout.flush()
    print("\n" + json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
