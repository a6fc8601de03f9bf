"""The "Sweeps and scaling laws" section: what the analyses under --sweeps wrote.

Any folder under the given one (a few levels deep) is read for:

- a hardware-scaling report (`python -m tune.hw_scaling`): `hardware_scaling.csv`
  gives the recommended shape per priority (`recommended_<priority>` = 1) with its
  Figure of Merit (`fom_<priority>`) and a row per configuration; `report.md` is linked;
- fits: any JSON object with an `r2` field (`power_law_fit.json` of a study,
  `fit.to_json(...)` of `analysis.scaling_laws`): the law, its numbers and intervals;
- a study's `summary_report.json`: its yes/no findings;
- the PNG plots these write, shown as they are.

The Tune trial folders (`hs_g*n*/`) and a study's per-run folders are not walked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.reporting.readers import Notes, number, read_json_object, read_table

MAX_DEPTH = 3
# Tune's and the trainers' own folders: thousands of files, none of them a result to show.
SKIP_DIRS = re.compile(r"^(hs_g\d+n\d+|ntasks_\d+_seed_\d+|ray_results|tensorboard|wandb|checkpoint.*|\..*)$")


@dataclass
class Recommendation:
    priority: str
    config: str
    fom: float | None


@dataclass
class Fit:
    file: Path
    law: str | None
    values: list[tuple[str, float]]                  # name -> value, r2 among them
    intervals: list[tuple[str, float | None, float | None]]


@dataclass
class SweepFolder:
    path: Path
    report_md: Path | None = None
    recommendations: list[Recommendation] = field(default_factory=list)
    configs: list[dict[str, str]] = field(default_factory=list)  # hardware_scaling.csv rows
    fits: list[Fit] = field(default_factory=list)
    findings: list[tuple[str, bool]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    trials: int = 0                   # trials.csv rows
    gpu_hours: float | None = None    # their GPU-hours (nominal GPUs with --local) and dollars, summed
    cost_usd: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.report_md or self.recommendations or self.fits or self.findings or self.images)


@dataclass
class SweepsSection:
    root: Path | None
    folders: list[SweepFolder] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)


def _hardware(folder: SweepFolder, notes: Notes) -> None:
    rows = read_table(folder.path / "hardware_scaling.csv", ",", notes)
    folder.configs = rows
    priorities = [c[len("recommended_"):] for c in (rows[0] if rows else {}) if c.startswith("recommended_")]
    for p in priorities:
        chosen = next((r for r in rows if r.get(f"recommended_{p}", "").strip() == "1"), None)
        folder.recommendations.append(Recommendation(p, chosen["config"] if chosen else "none reached the target",
                                                     number(chosen.get(f"fom_{p}")) if chosen else None))
    trials = read_table(folder.path / "trials.csv", ",", notes)
    folder.trials = len(trials)
    # Each trial's last report holds its running time and cost (tune.hw_scaling's _TargetTracker).
    hours = [number(t.get("total_gpus")) * number(t.get("time_s")) / 3600 for t in trials
             if number(t.get("total_gpus")) is not None and number(t.get("time_s")) is not None]
    costs = [number(t.get("cost")) for t in trials if number(t.get("cost")) is not None]
    folder.gpu_hours = sum(hours) if hours else None
    folder.cost_usd = sum(costs) if costs else None


def _fit(path: Path, data: dict) -> Fit:
    values = [(k, float(v)) for k, v in data.items()
              if k not in ("n_points", "n_bootstrap_ok", "confidence") and number(v) is not None
              and not isinstance(v, bool)]
    intervals = []
    for name, iv in (data.get("intervals") or {}).items() if isinstance(data.get("intervals"), dict) else []:
        if isinstance(iv, (list, tuple)) and len(iv) == 2:
            intervals.append((name, number(iv[0]), number(iv[1])))
    law = data.get("law") if isinstance(data.get("law"), str) else None
    return Fit(path, law, values, intervals)


def _read_folder(path: Path, files: list[str], notes: Notes) -> SweepFolder:
    folder = SweepFolder(path)
    if "report.md" in files:
        folder.report_md = path / "report.md"
    if "hardware_scaling.csv" in files:
        _hardware(folder, notes)
    for name in sorted(files):
        if name.endswith(".json"):
            # Many tools leave JSON here; only a fit's or a summary's being unreadable is worth a note.
            ours = "fit" in name or name == "summary_report.json"
            data = read_json_object(path / name, notes if ours else None)
            if data is None:
                continue
            if "r2" in data:
                folder.fits.append(_fit(path / name, data))
            elif name == "summary_report.json":
                folder.findings = [(k.replace("_", " "), v) for k, v in data.items() if isinstance(v, bool)]
        elif name.lower().endswith(".png"):
            folder.images.append(path / name)
    return folder


def sweeps_section(root: Path | None) -> SweepsSection:
    section = SweepsSection(root)
    if root is None:
        return section
    if not root.is_dir():
        section.notes.add(f"no sweeps folder at {root}")
        return section
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not SKIP_DIRS.match(d) and depth < MAX_DEPTH)
        folder = _read_folder(here, filenames, section.notes)
        if not folder.empty:
            section.folders.append(folder)
    if not section.folders:
        section.notes.add(f"nothing under {root} that a sweep or a scaling-law fit writes "
                          "(hardware_scaling.csv, report.md, *.json fits, PNG plots)")
    return section
