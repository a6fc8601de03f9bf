"""The git side of the AutoResearch loop: the repository, its branch, one git
worktree per researcher, one commit per experiment, discard tags and resets.
Nothing here is ever pushed.

`check_repository` looks without touching anything (so that a refused run leaves
the repository exactly as it was); `Workspace.open` then checks the branch out
in the repository's own checkout (the branch always points at the best kept
commit) and sets up the untracked files the loop keeps beside the code. Each
researcher commits in a detached worktree of its own under
`.autoresearch/worktrees/<tag>/r<i>` (git's own worktrees, which share the
object store), so K researchers never touch each other's files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from actors.research.config import TEMPLATE_DIR, TEMPLATE_HARNESS, TEMPLATE_RESCORE, ResearchConfig, ResearchError
from actors.research.memory import NOTES_FILE, PLOT_FILE, RESULTS_FILE
from actors.research.proposals import ResearchProposal

log = logging.getLogger(__name__)

STATE_DIR = ".autoresearch"  # run logs, worktrees, parked files: untracked
MAX_SHIPPED_FILE = 8_000_000  # larger tracked files (data) are not sent with a run
MAX_SHIPPED_TOTAL = 64_000_000
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
    protected: tuple[str, ...] = ()  # --protect, plus prepare.py when the repository has one
    rescore: str | None = None  # --rescore, or the template harness's


def _harness_defaults(cfg: ResearchConfig, tree) -> tuple[tuple[str, ...], str | None]:
    """What is protected and how kept artifacts are re-scored: `--protect` and
    `--rescore` as given, plus karpathy/autoresearch's convention (a `prepare.py`
    beside the research file is the read-only harness) and the golf template's
    re-score command when its harness is the one in the repository."""
    protected = list(cfg.protect)
    try:
        harness = tree / TEMPLATE_HARNESS
    except KeyError:
        harness = None
    if harness is not None and TEMPLATE_HARNESS != cfg.file and TEMPLATE_HARNESS not in protected:
        protected.append(TEMPLATE_HARNESS)
    rescore = cfg.rescore
    if rescore is None and harness is not None and b"python prepare.py rescore" in harness.data_stream.read():
        rescore = TEMPLATE_RESCORE
    return tuple(protected), rescore or None


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
        for p in cfg.protect:
            try:
                start.tree / p
            except KeyError:
                raise ResearchError(f"--protect {p}: not in {root} at the starting commit") from None
        protected, rescore = _harness_defaults(cfg, start.tree)
        return RepositoryCheck(root, exists, resume, protected, rescore)
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


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Workspace:
    """The research repository: its own checkout on the loop's branch (which always
    points at the best kept commit), the shared untracked files, and the commits."""

    def __init__(self, cfg: ResearchConfig, check: RepositoryCheck):
        self.cfg = cfg
        self.root = check.root
        self.repo = _git().Repo(self.root)
        self.resumed = check.resume
        self.protected = check.protected
        self.rescore = check.rescore

    @classmethod
    def open(cls, cfg: ResearchConfig) -> "Workspace":
        """Check, then check out the branch (new, or existing with resume)."""
        root = Path(cfg.repo).resolve() if cfg.repo else make_workspace(cfg.workspace)
        ws = cls(cfg, check_repository(cfg, root))
        exclude(ws.repo, [RESULTS_FILE, NOTES_FILE, PLOT_FILE, STATE_DIR + "/"])
        if cfg.branch in [h.name for h in ws.repo.heads]:
            ws.repo.heads[cfg.branch].checkout()
        else:
            ws.repo.create_head(cfg.branch, ws.repo.head.commit).checkout()
        ws._switch_files()
        return ws

    @classmethod
    def attach(cls, cfg: ResearchConfig, root: Path, protected: tuple[str, ...], rescore: str | None) -> "Workspace":
        """The workspace another process opened (a researcher joining its team)."""
        return cls(cfg, RepositoryCheck(Path(root), True, True, tuple(protected), rescore))

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

    @property
    def plot_path(self) -> Path:
        return self.root / PLOT_FILE

    def state(self, kind: str) -> Path:
        """`.autoresearch/KIND/TAG/`: logs, status, artifacts, worktrees, state of this branch."""
        path = self.root / STATE_DIR / kind / self.cfg.tag
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, name: str) -> Path:
        return self.state("logs") / f"{name}.log"

    def read(self, name: str) -> str:
        path = self.root / name
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def source(self) -> str:
        return self.file.read_text(encoding="utf-8")

    # -- git -------------------------------------------------------------------

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def reset(self, commit: str) -> None:
        """Move the branch (checked out here) and its files to `commit`."""
        self.repo.head.reset(commit, index=True, working_tree=True)

    def tag(self, name: str, commit: str) -> str:
        tag = f"autoresearch/{self.cfg.tag}/{name}"
        existing = {t.name: t.commit.hexsha for t in self.repo.tags if t.name.startswith(tag)}
        if existing.get(tag) == commit:
            return tag
        if tag in existing:
            tag = f"{tag}-{commit[:8]}"
            if tag in existing:
                return tag
        self.repo.create_tag(tag, ref=commit)
        return tag

    def tagged(self, commit: str) -> bool:
        prefix = f"autoresearch/{self.cfg.tag}/"
        return any(t.name.startswith(prefix) and t.commit.hexsha == commit for t in self.repo.tags)

    def files_at(self, commit: str) -> dict[str, bytes]:
        """The tracked files of `commit` a run needs: all of them but large data files
        (over 8 MB each) and symlinks, up to 64 MB in all."""
        out: dict[str, bytes] = {}
        total = 0
        needed = {self.cfg.file, *self.protected}
        for blob in self.repo.commit(commit).tree.traverse():
            if blob.type != "blob" or blob.mode == 0o120000:
                continue
            if blob.size > MAX_SHIPPED_FILE and blob.path not in needed:
                log.debug("not sending %s (%d bytes) with the runs", blob.path, blob.size)
                continue
            total += blob.size
            if total > MAX_SHIPPED_TOTAL:
                raise ResearchError(f"the tracked files of {self.root} add up to more than {MAX_SHIPPED_TOTAL:,} "
                                    "bytes: keep data out of git (untracked, or in a path the run reads)")
            out[blob.path] = blob.data_stream.read()
        return out

    def source_at(self, commit: str) -> str:
        return (self.repo.commit(commit).tree / self.cfg.file).data_stream.read().decode("utf-8")

    def protected_hashes(self, commit: str) -> dict[str, str]:
        tree = self.repo.commit(commit).tree
        return {p: file_hash((tree / p).data_stream.read()) for p in self.protected}

    def worktree_path(self, index: int) -> Path:
        return self.state("worktrees") / f"r{index}"

    def ensure_worktree(self, index: int, commit: str) -> Path:
        """Researcher `index`'s worktree (detached; created at `commit` when missing)."""
        path = self.worktree_path(index)
        registered = {Path(line[len("worktree "):]).resolve()
                      for line in self.repo.git.worktree("list", "--porcelain").splitlines()
                      if line.startswith("worktree ")}
        if path.resolve() in registered and (path / ".git").exists():
            return path
        self.repo.git.worktree("prune")
        if path.exists():
            shutil.rmtree(path)
        self.repo.git.worktree("add", "--detach", "--force", str(path), commit)
        return path

    def _switch_files(self) -> None:
        """results.tsv, notes.md and progress.png at the top belong to one branch at a time
        (named in .autoresearch/current); another branch's are parked under .autoresearch/branches/."""
        state = self.root / STATE_DIR
        marker = state / "current"
        current = marker.read_text().strip() if marker.exists() else None
        names = (RESULTS_FILE, NOTES_FILE, PLOT_FILE)
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


class Worktree:
    """One researcher's detached checkout: it moves onto the best before each
    proposal and commits its experiments here."""

    def __init__(self, path: Path, file: str):
        self.path = Path(path)
        self.file_name = file
        self.repo = _git().Repo(self.path)

    @property
    def file(self) -> Path:
        return self.path / self.file_name

    def source(self) -> str:
        return self.file.read_text(encoding="utf-8")

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def parents(self) -> list[str]:
        return [p.hexsha for p in self.repo.head.commit.parents]

    def reset(self, commit: str) -> None:
        self.repo.head.reset(commit, index=True, working_tree=True)

    def commit(self, n: int, proposal: ResearchProposal, source: str, amend: bool = False, fix: str = "") -> str:
        """Write and commit the experiment; `amend` replaces the experiment's own commit (a crash fix)."""
        self.file.write_text(source, encoding="utf-8")
        self.repo.index.add([self.file_name])
        parents = list(self.repo.head.commit.parents) if amend else None
        # skip_hooks: GitPython passes the message of a commit with hooks through the one
        # COMMIT_EDITMSG that all worktrees share, and researchers that commit at once race on it.
        c = self.repo.index.commit(commit_message(n, proposal, fix), author=signature(), committer=signature(),
                                   parent_commits=parents, head=True, skip_hooks=True)
        return c.hexsha

    def head_experiment(self) -> tuple[int, ResearchProposal] | None:
        """The experiment the head commit holds, if it is one of ours."""
        return proposal_from_commit(self.repo.head.commit.message, self.source())
