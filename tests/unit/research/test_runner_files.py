"""A run in its repository: the files beside the script travel with it (a
karpathy-style train.py imports prepare.py), and the compressed model it writes is
measured as its artifact when its log says nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from actors.research.runner import repo_files, run_script


def git_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", *files], cwd=root, check=True)
    return root


def test_the_script_runs_beside_the_repository_files(tmp_path):
    root = git_repo(tmp_path / "r", {"prepare.py": "BUDGET = 7\n", "lib/util.py": "X = 2\n",
                                     "train.py": "raise SystemExit('the committed one is never run')\n"})
    (root / "untracked.py").write_text("secret\n")
    files = repo_files(root, "train.py")
    assert sorted(files) == ["lib/util.py", "prepare.py"]  # tracked, not the research file
    source = ("import sys; sys.path.insert(0, 'lib')\nfrom prepare import BUDGET\nfrom util import X\n"
              "print(f'val_bpb: {BUDGET * X}')\n")
    result = run_script(source, "train.py", files=files, timeout_s=60)
    assert result.returncode == 0, result.log
    assert result.log.strip() == "val_bpb: 14" and result.artifact_bytes is None


def test_a_compressed_model_the_run_writes_is_its_artifact(tmp_path):
    source = ("import zlib\nopen('final_model.pt', 'wb').write(b'r' * 5000)\n"
              "open('final_model.int8.ptz', 'wb').write(zlib.compress(bytes(range(256)) * 40))\n")
    result = run_script(source, "train_gpt.py", timeout_s=60)
    import zlib

    model = len(zlib.compress(bytes(range(256)) * 40))
    assert result.artifact_file == "final_model.int8.ptz"
    assert result.artifact_bytes == len(source.encode()) + model
