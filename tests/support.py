"""Helpers shared by the tests."""

from __future__ import annotations


class FakeClock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Defaults that make examples/golf/train_gpt.py train in about 4 s on 2 CPU cores
# while a learning-rate change still moves val_bpb far beyond run-to-run noise.
SMALL_GOLF_DEFAULTS = {
    "ITERATIONS": "30", "LEARNING_RATE": "1e-3", "MODEL_DIM": "64", "NUM_LAYERS": "2",
    "WARMUP_STEPS": "5", "VAL_EVERY": "0",
}
# ... and the harness's data sizes (constants of examples/golf/prepare.py).
SMALL_GOLF_HARNESS = {"DATA_MAX_BYTES": "300_000", "VAL_BYTES": "8192", "HOLDOUT_BYTES": "8192"}


def set_constant(source: str, name: str, value: str) -> str:
    """Rewrite a module-level `NAME = value` line."""
    import re

    new, count = re.subn(rf"^{re.escape(name)} = [^#\n]*?(\s*#.*)?$",
                         lambda m: f"{name} = {value}" + (m.group(1) or ""), source, flags=re.M)
    if count != 1:
        raise ValueError(f"{name}: {count} constants found")
    return new


def set_environ_default(source: str, name: str, value: str) -> str:
    """Rewrite the default of `os.environ.get("NAME", default)` in a training script."""
    import re

    pattern = re.compile(r'(os\.environ\.get\(\s*["\']' + re.escape(name) + r'["\']\s*,\s*)([^)]+)(\))')
    new, count = pattern.subn(lambda m: m.group(1) + value + m.group(3), source)
    if count != 1:
        raise ValueError(f"{name}: {count} environ defaults found")
    return new


def make_golf_repo(path, defaults: dict[str, str] | None = None):
    """A git repository holding the golf template with small defaults, one commit on main."""
    from pathlib import Path

    import git

    from actors.research.config import TEMPLATE_DIR

    path = Path(path)
    path.mkdir(parents=True)
    source = (TEMPLATE_DIR / "train_gpt.py").read_text()
    for name, value in (SMALL_GOLF_DEFAULTS if defaults is None else defaults).items():
        source = set_environ_default(source, name, value)
    harness = (TEMPLATE_DIR / "prepare.py").read_text()
    for name, value in SMALL_GOLF_HARNESS.items():
        harness = set_constant(harness, name, value)
    (path / "train_gpt.py").write_text(source)
    (path / "prepare.py").write_text(harness)
    (path / "program.md").write_text((TEMPLATE_DIR / "program.md").read_text())
    repo = git.Repo.init(path, initial_branch="main")
    repo.index.add(["train_gpt.py", "prepare.py", "program.md"])
    who = git.Actor("test", "test@localhost")
    repo.index.commit("small golf template", author=who, committer=who)
    return repo


TOY_HARNESS = '''"""A toy harness in the shape of examples/golf/prepare.py: it owns the score lines
and the held-out re-score; the research file only computes a number."""
import os
import sys

HOLDOUT_PENALTY = 0.02


def finish(score, research_file):
    code = os.path.getsize(research_file) + os.path.getsize(__file__)
    with open("final_model.int8.ptz", "w") as f:
        f.write(repr(score))
    print(f"Serialized model int8+zlib: 1000 bytes")
    print(f"Total submission size int8+zlib: {1000 + code} bytes")
    print(f"final_int8_zlib_roundtrip val_loss:{score * 0.6931:.4f} val_bpb:{score:.4f}")
    print(f"final_int8_zlib_roundtrip_exact val_loss:{score * 0.6931:.8f} val_bpb:{score:.8f}")


if __name__ == "__main__" and sys.argv[1:2] == ["rescore"]:
    score = float(open(sys.argv[2]).read()) + HOLDOUT_PENALTY
    print(f"holdout_int8_zlib_roundtrip_exact val_loss:{score * 0.6931:.8f} val_bpb:{score:.8f}")
'''

TOY_RESEARCH = '''"""A toy research file: val_bpb is a bowl over its knobs plus seeded noise."""
import math
import os
import random

import prepare

SEED = int(os.environ.get("SEED", 1))
LEARNING_RATE = float(os.environ.get("LEARNING_RATE", 0.01))
WIDTH = int(os.environ.get("WIDTH", 64))
DEPTH = int(os.environ.get("DEPTH", 2))
WARMUP = int(os.environ.get("WARMUP", 10))
bonus = 0.0
noise = 0.01


def main():
    rng = random.Random(SEED)
    score = (2.0 + 0.2 * math.log(LEARNING_RATE / 0.03) ** 2 + 0.1 * math.log(WIDTH / 128) ** 2
             + 0.05 * (DEPTH - 3) ** 2 + 0.001 * abs(WARMUP - 10) - bonus + rng.gauss(0, noise))
    print(f"step:1/1 train_loss:{score:.4f}")
    prepare.finish(score, __file__)


if __name__ == "__main__":
    main()
'''


def make_toy_repo(path, research: str = TOY_RESEARCH, harness: str = TOY_HARNESS, file: str = "train.py"):
    """A repository holding the toy research file (`train.py`) and its harness `prepare.py`:
    runs take a fraction of a second, val_bpb has a known optimum and seed noise of 0.01."""
    from pathlib import Path

    import git

    path = Path(path)
    path.mkdir(parents=True)
    (path / file).write_text(research)
    (path / "prepare.py").write_text(harness)
    (path / "program.md").write_text("# Toy program\n\nLower val_bpb. prepare.py is read-only.\n")
    repo = git.Repo.init(path, initial_branch="main")
    repo.index.add([file, "prepare.py", "program.md"])
    who = git.Actor("test", "test@localhost")
    repo.index.commit("toy research repository", author=who, committer=who)
    return repo


_PRISTINE: "Path | None" = None


def pristine_examples():
    """The shipped examples as git tracks them, copied once per test session.

    Running the main job (README command 1) writes code/NNN_scaled/ folders into
    the checkout's examples (git-ignored); tests must see the examples as shipped,
    whatever was run in this checkout before."""
    import atexit
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    global _PRISTINE
    if _PRISTINE is not None:
        return _PRISTINE
    root = Path(__file__).resolve().parents[1]
    dst = Path(tempfile.mkdtemp(prefix="pristine-")) / "examples"
    atexit.register(shutil.rmtree, dst.parent, True)
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--", "examples"], cwd=root, capture_output=True,
                                 check=True).stdout.decode()
        files = [f for f in listing.split("\0") if f and (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if files:
        for f in files:
            target = dst.parent / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, target)
    else:  # not a git checkout: take the folder as it is
        shutil.copytree(root / "examples", dst)
    _PRISTINE = dst
    return dst
