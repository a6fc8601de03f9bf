"""K researchers on one branch: the team that opens the repository, starts them
and stops them.

`AutoResearchTeam.run` (a Ray actor on the repository's node, started by
`start_autoresearch`) opens the repository on `autoresearch/<tag>`, claims the
branch in the WorkTracker, gives each researcher a git worktree, starts K
researcher actors (`actors.research.loop.AutoResearch`, one CPU slot or
`--gpus` GPUs per training run) and waits for them. Cancelling its task
(`ray.cancel`, as Ctrl-C in `actors.main` does) cancels theirs: each stops its
training run within seconds, releases its claims as abandoned and leaves its
unmeasured commit for `--resume`. A researcher that dies is reported and the
others go on; the tracker hands its claims to whoever takes the work next.

`run_local_team` is the same team in one process (threads, no Ray), for tests
and library use.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from actors.research.config import ResearchConfig, ResearchError
from actors.research.coordinator import LocalClaims, open_team, release_branch
from actors.research.loop import AutoResearch, Cancelled, summarise
from actors.research.memory import read_results
from actors.research.proposals import Researcher
from actors.shared.pricing import Usage

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0  # how long cancelled researchers get to stop before they are killed


def _researcher_list(config: ResearchConfig, researchers) -> list:
    if researchers is None or not isinstance(researchers, (list, tuple)):
        return [researchers if i == 0 else None for i in range(config.researchers)] if researchers is not None \
            else [None] * config.researchers
    if len(researchers) != config.researchers:
        raise ValueError(f"{len(researchers)} researchers given for --researchers {config.researchers}")
    return list(researchers)


def team_summary(config, info, results: list[dict], seconds: float, stop_reason: str) -> dict:
    from pathlib import Path

    from actors.research.workspace import _git

    rows = read_results(Path(info.root) / "results.tsv")
    usage = Usage()
    proposers = sorted({r["proposer"] for r in results}) or ["-"]
    repo = _git().Repo(info.root)
    try:
        head = repo.head.commit.hexsha
    finally:
        repo.close()
    out = summarise(rows, config, head, seconds, proposer=", ".join(proposers), usage=usage,
                    stop_reason=stop_reason, root=Path(info.root))
    out["llm_tokens"] = sum(r.get("llm_tokens", 0) for r in results)
    out["llm_cost_usd"] = sum(r.get("llm_cost_usd", 0.0) for r in results)
    return out


class AutoResearchTeam:
    """The team as a Ray actor: see the module's docstring."""

    def __init__(self, config: ResearchConfig, researchers=None, name: str = "", on_phase=None) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.researchers = _researcher_list(config, researchers)
        self.name = name or f"autoresearch-{config.tag}"
        self.on_phase = on_phase  # picklable: it travels to each researcher actor

    def run(self, iterations: int) -> dict:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        t0 = time.time()
        cfg = self.config
        info, branch = open_team(cfg, cfg.owner or f"autoresearch@actor:{cfg.tracker_namespace}/{self.name}")
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        cls = ray.remote(AutoResearch)
        actors, refs = {}, {}
        stop_reason, error = "", None
        try:
            for i, researcher in enumerate(self.researchers):
                # num_cpus=0: a researcher waits; its training runs hold the CPU or GPUs.
                actor = cls.options(name=f"{self.name}-r{i}", namespace=cfg.tracker_namespace, num_cpus=0,
                                    max_restarts=0, max_task_retries=0, scheduling_strategy=here
                                    ).remote(cfg, researcher, on_phase=self.on_phase, index=i, team=info)
                actors[i] = actor
                refs[actor.run.remote(iterations)] = i
            results = []
            while refs:
                if ray.get_runtime_context().is_canceled():
                    stop_reason = "cancelled"
                    self._stop(refs, actors)
                    raise Cancelled("the AutoResearch team was cancelled")
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                for ref in ready:
                    i = refs.pop(ref)
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.as_instanceof_cause()
                        if isinstance(cause, ResearchError):  # every researcher would hit it: stop them all
                            error = cause
                            self._stop(refs, actors)
                            refs.clear()
                            break
                        log.error("researcher r%d failed: %s", i, str(exc).strip().splitlines()[-1][:300])
                        stop_reason = f"researcher r{i} failed"
                    except ray.exceptions.RayActorError as exc:
                        log.error("researcher r%d died (%s); its claims go to whoever takes the work, and "
                                  "--resume runs its unmeasured commit", i, type(exc).__name__)
                        stop_reason = f"researcher r{i} died"
            if error is not None:
                raise error
            summary = team_summary(cfg, info, results, time.time() - t0, stop_reason)
        except BaseException as exc:
            release_branch(branch, f"stopped by {type(exc).__name__}: {exc}")
            raise
        finally:
            for actor in actors.values():
                ray.kill(actor, no_restart=True)
        release_branch(branch, "finished its iterations")
        return summary

    @staticmethod
    def _stop(refs: dict, actors: dict) -> None:
        """Cancel every researcher's task; they stop their runs and release their claims."""
        import ray

        for ref in refs:
            ray.cancel(ref)
        deadline = time.time() + STOP_GRACE_S
        pending = list(refs)
        while pending and time.time() < deadline:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)


def start_autoresearch(config: ResearchConfig, researcher: Researcher | list | None = None, name: str | None = None,
                       on_phase=None):
    """The team as a Ray actor on this node (the repository lives here). Returns the handle;
    `handle.run.remote(iterations)` runs it and returns the summary. `researcher`: one for
    every researcher (or a list, one each; None: Claude or offline, as the keys allow)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = name or f"autoresearch-{config.tag}-{uuid.uuid4().hex[:6]}"
    owner = config.owner or f"autoresearch@actor:{config.tracker_namespace}/{name}"
    config = config.model_copy(update={"owner": owner})
    here = ray.get_runtime_context().get_node_id()
    cls = ray.remote(AutoResearchTeam)
    return cls.options(
        name=name, namespace=config.tracker_namespace, num_cpus=0, max_restarts=0, max_task_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(config, researcher, name, on_phase)


def run_local_team(config: ResearchConfig, iterations: int, researchers=None, *, runner=None,
                   on_phase=None) -> dict:
    """The team in this process: K researcher threads, claims in a shared table."""
    t0 = time.time()
    info, branch = open_team(config, config.owner or "autoresearch")
    claims = LocalClaims()
    loops = [AutoResearch(config, r, on_phase=on_phase, index=i, team=info, claims=claims.for_owner(f"r{i}"),
                          runner=runner) for i, r in enumerate(_researcher_list(config, researchers))]
    propose_lock = threading.Lock()
    for loop in loops:
        loop.propose_lock = propose_lock
    results: list[dict] = []
    errors: list[BaseException] = []

    def work(loop: AutoResearch) -> None:
        try:
            results.append(loop.run(iterations))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            for other in loops:
                other.stop_event.set()

    threads = [threading.Thread(target=work, args=(loop,), name=loop.name) for loop in loops]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        release_branch(branch, "finished" if not errors else f"stopped by {type(errors[0]).__name__}")
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if real:
        raise real[0]
    return team_summary(config, info, results, time.time() - t0, "")


def research_progress(config: ResearchConfig) -> str:
    """The researchers' progress line, read from the repository's files (for `actors.main`)."""
    from pathlib import Path

    from actors.research.progress import STATUS_KIND, progress_line, read_statuses
    from actors.research.workspace import STATE_DIR

    root = Path(config.repo).resolve() if config.repo else Path(config.workspace).expanduser().resolve()
    try:
        return progress_line(read_results(root / "results.tsv"),
                             read_statuses(root / STATE_DIR / STATUS_KIND / config.tag))
    except Exception as exc:  # noqa: BLE001 - a progress line never stops the job
        return f"autoresearch: no progress yet ({type(exc).__name__})"
