"""Load a model from a Python file (the "custom" model family).

A scaled experiment brings its own model code (code/NNN_scaled/models/*.py). We
import that file under a unique module name and build the model from it:

1. ``class_name`` if given;
2. else a top-level ``build_model(...)`` function if the file defines one;
3. else the single nn.Module subclass defined in the file itself.

Every failure a user can cause (missing file, syntax error, no such class, a
constructor that raises, a factory that returns no module) ends in one
ModelLoadError whose message names the file and the problem.

Ray Train workers run in a directory of their own, possibly on another node, so
they never read the user's path: `pack_model_files` reads the file and the .py
files beside it (which it may import) where the job is launched, they travel with
the job's config, and `unpack_model_files` writes them to a folder on the worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import os
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from torch import nn

# Each load gets a fresh module name, so loading an edited file again (the
# autoresearch loop does) never returns the stale module from sys.modules.
_load_counter = itertools.count()


class ModelLoadError(ValueError):
    """A custom model file could not be loaded or built; the message says why."""


# What may travel with a job: a model's folder is code, not data.
MAX_PACKED_BYTES = 4 * 2**20


def pack_model_files(path: str | Path) -> dict:
    """The custom model file and the .py files beside it, as text, for the workers:
    {"entry": file name, "files": {name: text}}."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ModelLoadError(f"custom model file {file} does not exist" if not file.exists()
                             else f"custom model path {file} is not a file")
    siblings = sorted(p for p in file.parent.glob("*.py") if p.is_file())
    if file not in siblings:
        siblings.append(file)
    files, total = {}, 0
    for p in siblings:
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            if p == file:
                raise ModelLoadError(f"custom model file {file} cannot be read: {exc}") from None
            continue  # a sibling the model cannot be importing as Python anyway
        total += len(text.encode())
        if total > MAX_PACKED_BYTES:
            raise ModelLoadError(f"{file.parent} holds more than {MAX_PACKED_BYTES // 2**20} MB of .py files, which "
                                 "would all travel to the workers with the model; keep the model in a folder of its own")
        files[p.name] = text
    return {"entry": file.name, "files": files}


def unpack_model_files(packed: dict) -> Path:
    """Write packed model files to a folder of their own on this machine (named
    by their content, so workers of one job share it); return the entry file."""
    digest = hashlib.sha1(repr(sorted(packed["files"].items())).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "ray-autoresearch-models" / digest
    if not (folder / packed["entry"]).is_file():
        staging = folder.with_name(f".{digest}-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        for name, text in packed["files"].items():
            (staging / Path(name).name).write_text(text)
        try:
            os.replace(staging, folder)
        except OSError:  # another worker put the same files there first
            for p in staging.iterdir():
                p.unlink()
            staging.rmdir()
    return folder / packed["entry"]


def load_custom_model(path: str | Path, *, vocab_size: int, seq_len: int, class_name: str | None = None,
                      kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Import `path` and build the model it defines (see the module docstring).

    vocab_size and seq_len are passed to the constructor/factory when its
    signature names them or takes **kwargs; `kwargs` are passed as given.
    Relative paths are resolved against the current directory.
    """
    file = Path(path).expanduser().resolve()
    if not file.exists():
        raise ModelLoadError(f"custom model file {file} does not exist")
    if not file.is_file():
        raise ModelLoadError(f"custom model path {file} is not a file")

    module = _import_file(file)
    factory, what = _pick_factory(module, file, class_name)
    call_kwargs = _with_sizes(factory, file, dict(kwargs or {}), vocab_size=vocab_size, seq_len=seq_len)
    try:
        model = factory(**call_kwargs)
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in call_kwargs.items())
        raise ModelLoadError(f"{file}: {what}({args}) raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{file}: {what} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_file(file: Path) -> ModuleType:
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:10]
    name = f"_custom_model_{file.stem}_{digest}_{next(_load_counter)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{file} cannot be imported as a Python module (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing so that dataclasses, pickling and
    # typing.get_type_hints, which look the module up by name, work inside it.
    sys.modules[name] = module
    # The file's folder goes on sys.path while it runs, so it can import its
    # sibling files (a scaled experiment's models/ folder often has several).
    folder = str(file.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        where = "" if exc.filename in (None, str(file)) else f" (in {exc.filename})"
        raise ModelLoadError(f"{file}: syntax error at line {exc.lineno}{where}: {exc.msg}") from exc
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise ModelLoadError(f"{file}: importing it failed: {type(exc).__name__}: {exc}") from exc
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:  # the file removed it itself; nothing to undo
            pass
    return module


def _module_classes(module: ModuleType) -> list[str]:
    """Names of the nn.Module subclasses defined in the file (not imported into it)."""
    return sorted(
        name for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
    )


def _pick_factory(module: ModuleType, file: Path, class_name: str | None) -> tuple[Callable[..., Any], str]:
    classes = _module_classes(module)
    if class_name is not None:
        obj = getattr(module, class_name, None)
        if obj is None:
            raise ModelLoadError(
                f"{file} has no class {class_name!r}; nn.Module classes defined there: {classes or 'none'}"
            )
        if not callable(obj):
            raise ModelLoadError(f"{file}: {class_name!r} is a {type(obj).__name__}, not a class")
        return obj, class_name
    build = getattr(module, "build_model", None)
    if callable(build):
        return build, "build_model"
    if len(classes) == 1:
        return getattr(module, classes[0]), classes[0]
    if not classes:
        raise ModelLoadError(f"{file} defines no torch.nn.Module subclass and no build_model function")
    raise ModelLoadError(
        f"{file} defines several torch.nn.Module subclasses ({', '.join(classes)}) and no build_model "
        f"function; say which one with class_name"
    )


def _with_sizes(factory: Callable[..., Any], file: Path, call_kwargs: dict[str, Any],
                **sizes: int) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some C-implemented callables have none
        return call_kwargs
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in sizes.items():
        if key in call_kwargs:
            # Two different values for one size is a config mistake; say so
            # rather than silently picking one.
            if call_kwargs[key] != value:
                raise ModelLoadError(
                    f"{file}: kwargs sets {key}={call_kwargs[key]!r} but the model config says {key}={value!r}"
                )
            continue
        param = params.get(key)
        named = param is not None and param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)
        if named or takes_any:
            call_kwargs[key] = value
    return call_kwargs
