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
    "VAL_BYTES": "8192", "DATA_MAX_BYTES": "300000", "WARMUP_STEPS": "5", "VAL_EVERY": "0",
}


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
    (path / "train_gpt.py").write_text(source)
    (path / "program.md").write_text((TEMPLATE_DIR / "program.md").read_text())
    repo = git.Repo.init(path, initial_branch="main")
    repo.index.add(["train_gpt.py", "program.md"])
    who = git.Actor("test", "test@localhost")
    repo.index.commit("small golf template", author=who, committer=who)
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
