"""The git side of the AutoResearch loop: the repository, its branch, one commit
per experiment, discard tags and resets. Nothing here is ever pushed.

`check_repository` looks without touching anything (so that a refused run leaves
the repository exactly as it was); `Workspace.open` then checks the branch out
and sets up the untracked files the loop keeps beside the code.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from actors.research.config import TEMPLATE_DIR, ResearchConfig, ResearchError
from actors.research.memory import NOTES_FILE, RESULTS_FILE
from actors.research.proposals import ResearchProposal

log = logging.getLogger(__name__)

STATE_DIR = ".autoresearch"  # run logs and parked files, untracked
_COMMIT_SUBJECT = re.compile(r"^autoresearch (\d+): (.*)$")


def _git():
    import git  # gitpython is slow to import: only where a repository is opened

    return git


def signature():
    return _git().Actor("AutoResearch", "autoresearch@localhost")


def make_workspace(path: Path, template: Path = TEMPLATE_DIR) -> Path:
    """A fresh git repository holding the template's files, committed once.
    It appears complete or not at all (built beside, then renamed)."""
    git = _git()
    path = Path(path).resolve()
    if (path / ".git").exists():
        return path
    if path.exists() and any(path.iterdir()):
        raise ResearchError(f"workspace {path} exists, is not empty and is not a git repository")
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        for f in sorted(template.iterdir()):
            if f.is_file() and f.suffix in (".py", ".md"):
                shutil.copy2(f, tmp / f.name)
        repo = git.Repo.init(tmp, initial_branch="main")
        repo.index.add([f.name for f in sorted(tmp.iterdir()) if f.is_file()])
        repo.index.commit(f"template: {template.name}", author=signature(), committer=signature())
        repo.close()
        if path.exists():
            path.rmdir()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("made a research workspace from %s at %s", template, path)
    return path


@dataclass(frozen=True)
class RepositoryCheck:
    root: Path
    branch_exists: bool
    resume: bool


def check_repository(cfg: ResearchConfig, root: Path) -> RepositoryCheck:
    """Every mistake in the repository a user can make, found without changing it:
    not a repository, not its top folder, no commit, uncommitted changes, a branch
    that exists without --resume (or is missing with it), the file not there."""
    git = _git()
    root = Path(root).resolve()
    if not root.is_dir():
        raise ResearchError(f"--repo {root} is not a folder")
    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ResearchError(f"--repo {root} is not a git repository (run `git init` and commit "
                            f"{cfg.file} first)") from None
    try:
        if Path(repo.working_tree_dir).resolve() != root:
            raise ResearchError(f"--repo {root} is inside the repository {repo.working_tree_dir}; "
                                "pass the repository's top folder")
        try:
            repo.head.commit
        except ValueError:
            raise ResearchError(f"--repo {root} has no commits yet; commit {cfg.file} first") from None
        if repo.is_dirty(untracked_files=False):
            raise ResearchError(f"{root} has uncommitted changes to tracked files; commit or stash them first "
                                "(the loop resets the working tree after every discard)")
        exists = cfg.branch in [h.name for h in repo.heads]
        resume = (cfg.resume == "auto" and exists) or cfg.resume is True
        if exists and not resume:
            raise ResearchError(f"branch {cfg.branch} already exists in {root}: pass --resume to continue it, "
                                "or --tag to start another")
        if resume and not exists:
            raise ResearchError(f"nothing to resume: {root} has no branch {cfg.branch}")
        start = repo.heads[cfg.branch].commit if exists else repo.head.commit
        try:
            start.tree / cfg.file
        except KeyError:
            where = f"branch {cfg.branch}" if exists else f"the current commit ({repo.active_branch.name})" \
                if not repo.head.is_detached else "the current commit"
            raise ResearchError(f"{cfg.file} is not in {root} at {where}; pass --file with the script "
                                "to improve") from None
        return RepositoryCheck(root, exists, resume)
    finally:
        repo.close()


def exclude(repo, names: list[str]) -> None:
    """List `names` in .git/info/exclude, so they stay untracked and survive resets."""
    path = Path(repo.git_dir) / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text().splitlines() if path.exists() else []
    missing = [n for n in names if n not in existing]
    if missing:
        with open(path, "a") as f:
            if existing and existing[-1] != "":
                f.write("\n")
            f.write("# AutoResearch: kept out of git so that resets never touch them\n")
            f.write("\n".join(missing) + "\n")


def commit_message(n: int, proposal: ResearchProposal, fix: str = "") -> str:
    return (f"autoresearch {n}: {proposal.description}\n\n{proposal.reasoning_block()}\n"
            f"Direction: {proposal.direction}\nKind: {proposal.kind}\n" + (f"Fix: {fix}\n" if fix else ""))


def proposal_from_commit(message: str, source: str) -> tuple[int, ResearchProposal] | None:
    """Read back an experiment commit written by `commit_message`."""
    lines = message.splitlines()
    m = _COMMIT_SUBJECT.match(lines[0]) if lines else None
    if not m:
        return None
    fields = {}
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if sep and key in ("Hypothesis", "Evidence", "Risk", "Direction", "Kind"):
            fields[key] = value.strip()
    try:
        return int(m.group(1)), ResearchProposal(
            hypothesis=fields.get("Hypothesis", "?"), evidence=fields.get("Evidence", "?"),
            risk=fields.get("Risk", "?"), description=m.group(2), direction=fields.get("Direction", "?"),
            kind=fields.get("Kind", "tweak"), edit_format="file", content=source)
    except ValueError:
        return None


class Workspace:
    """The research repository on the loop's branch."""

    def __init__(self, cfg: ResearchConfig, check: RepositoryCheck):
        self.cfg = cfg
        self.root = check.root
        self.repo = _git().Repo(self.root)
        self.resumed = check.resume

    @classmethod
    def open(cls, cfg: ResearchConfig) -> "Workspace":
        """Check, then check out the branch (new, or existing with resume)."""
        root = Path(cfg.repo).resolve() if cfg.repo else make_workspace(cfg.workspace)
        ws = cls(cfg, check_repository(cfg, root))
        exclude(ws.repo, [RESULTS_FILE, NOTES_FILE, STATE_DIR + "/"])
        if cfg.branch in [h.name for h in ws.repo.heads]:
            ws.repo.heads[cfg.branch].checkout()
        else:
            ws.repo.create_head(cfg.branch, ws.repo.head.commit).checkout()
        ws._switch_files()
        return ws

    # -- paths -----------------------------------------------------------------

    @property
    def file(self) -> Path:
        return self.root / self.cfg.file

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def notes_path(self) -> Path:
        return self.root / NOTES_FILE

    def log_path(self, name: str) -> Path:
        path = self.root / STATE_DIR / "logs" / self.cfg.tag / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def read(self, name: str) -> str:
        path = self.root / name
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def source(self) -> str:
        return self.file.read_text(encoding="utf-8")

    # -- git -------------------------------------------------------------------

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def reset(self, commit: str) -> None:
        self.repo.head.reset(commit, index=True, working_tree=True)

    def tag(self, name: str, commit: str) -> str:
        tag = f"autoresearch/{self.cfg.tag}/{name}"
        if tag in [t.name for t in self.repo.tags]:
            tag = f"{tag}-{commit[:8]}"
        self.repo.create_tag(tag, ref=commit)
        return tag

    def commit(self, n: int, proposal: ResearchProposal, source: str, amend: bool = False, fix: str = "") -> str:
        """Write and commit the experiment; `amend` replaces the experiment's own commit (a crash fix)."""
        self.file.write_text(source, encoding="utf-8")
        self.repo.index.add([self.cfg.file])
        parents = list(self.repo.head.commit.parents) if amend else None
        c = self.repo.index.commit(commit_message(n, proposal, fix), author=signature(), committer=signature(),
                                   parent_commits=parents, head=True)
        return c.hexsha

    def head_experiment(self) -> tuple[int, ResearchProposal] | None:
        """The experiment the head commit holds, if it is one of ours."""
        return proposal_from_commit(self.repo.head.commit.message, self.source())

    def head_parents(self) -> list[str]:
        return [p.hexsha for p in self.repo.head.commit.parents]

    def _switch_files(self) -> None:
        """results.tsv and notes.md at the top belong to one branch at a time (named in
        .autoresearch/current); another branch's are parked under .autoresearch/branches/."""
        state = self.root / STATE_DIR
        marker = state / "current"
        current = marker.read_text().strip() if marker.exists() else None
        names = (RESULTS_FILE, NOTES_FILE)
        if current != self.cfg.branch:
            if current:
                park = state / "branches" / current.replace("/", "__")
                park.mkdir(parents=True, exist_ok=True)
                for name in names:
                    if (self.root / name).exists():
                        os.replace(self.root / name, park / name)
            mine = state / "branches" / self.cfg.branch.replace("/", "__")
            for name in names:
                if (mine / name).exists():
                    os.replace(mine / name, self.root / name)
                elif (self.root / name).exists():
                    # Files of unknown origin would be read as this branch's history.
                    state.mkdir(parents=True, exist_ok=True)
                    os.replace(self.root / name, state / f"{name}.{time.strftime('%Y%m%d-%H%M%S')}")
        state.mkdir(parents=True, exist_ok=True)
        marker.write_text(self.cfg.branch + "\n")
