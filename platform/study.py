"""The study matrix: groups of axes -> cells -> one resolved :class:`~arfm.config.JobConfig` per cell.

A cell is named from its axes (``ar-50hz-10s-b256-text``; ``fm-50hz-10s-b256-text-vae`` on the VAE latent) and
the name is the ``study_cell`` tag of its MLflow run, so a rerun can find what already finished. Cells that
share a frame rate share one codec (and one VAE when some cell asks for it), and cells that share frame rate and
duration share one set of shards (holding the VAE latents too when one of those cells is on the VAE).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arfm.config import ConfigError, JobConfig, resolve

AXES = ("paradigm", "frame_rate", "duration", "batch_size", "conditioning")
OPTIONAL_AXES = {"representation": ["encodec"]}  # axis -> its default values
CONDITIONINGS = ("text", "controls", "inpainting")
REPRESENTATIONS = ("encodec", "vae")


def home() -> Path:
    """Where runs, data, codecs, shards and the MLflow store live: ``$ARFM_HOME`` or ``./runs``."""
    return Path(os.environ.get("ARFM_HOME", "runs")).resolve()


@dataclass(frozen=True)
class Cell:
    group: str
    paradigm: str
    frame_rate: int
    duration: float
    batch_size: int
    conditioning: str
    representation: str = "encodec"

    @property
    def name(self) -> str:
        return (f"{self.paradigm}-{self.frame_rate}hz-{self.duration:g}s-b{self.batch_size}-"
                f"{self.conditioning}" + ("-vae" if self.representation == "vae" else ""))


@dataclass
class Study:
    name: str
    preset: str
    experiment: str
    cells: list[Cell]
    data: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    paradigm_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"fm": {"train.lr": 1e-2}}
    group_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # a group's own `set`
    codec_budget_s: float | None = None
    vae_budget_s: float | None = None
    train_budget_s: float | None = None
    search: dict[str, Any] = field(default_factory=dict)  # the tune stage: {"cells": [...], "spaces": {ar, fm}}
    # fine-tuning: {group: {"group": source group, "paradigms": [...]}}: those cells start from the weights of
    # the source group's text cell with the same paradigm, frame rate, duration and batch size
    init_from: dict[str, dict[str, Any]] = field(default_factory=dict)
    all_cells: list[Cell] = field(default_factory=list)  # before --only: a source may be outside the selection

    def source_cell(self, cell: Cell) -> Cell | None:
        """The cell whose trained model ``cell`` fine-tunes from, or None (trained from scratch)."""
        rule = self.init_from.get(cell.group)
        if not rule or cell.paradigm not in rule.get("paradigms", ("ar", "fm")):
            return None
        for c in self.all_cells or self.cells:
            if (c.group == rule["group"] and c.conditioning == "text" and
                    (c.paradigm, c.frame_rate, c.duration, c.batch_size, c.representation) ==
                    (cell.paradigm, cell.frame_rate, cell.duration, cell.batch_size, cell.representation)):
                return c
        raise ConfigError(f"studies.{self.name}.init_from.{cell.group}: no text cell of group {rule['group']!r} "
                          f"matches {cell.name} (same paradigm, frame rate, duration and batch size)")

    def train_waves(self, cells: list[Cell]) -> list[list[Cell]]:
        """``cells`` in the order training may run them: first those that start from scratch (or from a cell
        outside ``cells``), then those that fine-tune from a cell of the first wave."""
        names = {c.name for c in cells}
        later = [c for c in cells if (src := self.source_cell(c)) is not None and src.name in names]
        first = [c for c in cells if c not in later]
        return [w for w in (first, later) if w]

    @property
    def frame_rates(self) -> list[int]:
        return sorted({c.frame_rate for c in self.cells})

    @property
    def shard_keys(self) -> list[tuple[int, float]]:
        return sorted({(c.frame_rate, c.duration) for c in self.cells})

    @property
    def vae_frame_rates(self) -> list[int]:
        """Frame rates at which some cell trains on the VAE latent (one VAE is trained per such rate)."""
        return sorted({c.frame_rate for c in self.cells if c.representation == "vae"})


def load_study(path: str | Path, name: str, only: list[str] | None = None) -> Study:
    """Read study ``name`` from the YAML matrix, expand its groups and keep the cells matching ``only``
    (a cell name, a group name, or a substring such as ``fm-`` or ``50hz``)."""
    p = Path(path)
    doc = yaml.safe_load(p.read_text()) or {}
    studies = doc.get("studies") or {}
    if name not in studies:
        raise ConfigError(f"--preset: unknown study {name!r} in {p}; choose one of {', '.join(studies)}")
    spec = studies[name]
    cells: list[Cell] = []
    group_sets: dict[str, dict[str, Any]] = {}
    for group, axes in (spec.get("groups") or {}).items():
        axes = dict(axes)
        if not isinstance(axes.get("set", {}), dict):
            raise ConfigError(f"studies.{name}.groups.{group}.set: a mapping of dotted keys to values")
        group_sets[group] = axes.pop("set", None) or {}
        missing = [a for a in AXES if a not in axes]
        unknown = [a for a in axes if a not in AXES and a not in OPTIONAL_AXES]
        if missing or unknown:
            raise ConfigError(f"studies.{name}.groups.{group}: axes must be exactly {', '.join(AXES)}, optionally "
                              f"{', '.join(OPTIONAL_AXES)} and set (missing {missing or '-'}, unknown "
                              f"{unknown or '-'})")
        names = (*AXES, *OPTIONAL_AXES)
        for values in itertools.product(*(axes.get(a, OPTIONAL_AXES.get(a)) for a in names)):
            cell = Cell(group, *values)
            if cell.conditioning not in CONDITIONINGS:
                raise ConfigError(f"studies.{name}.groups.{group}.conditioning: {cell.conditioning!r} is not one of"
                                  f" {', '.join(CONDITIONINGS)}")
            if cell.representation not in REPRESENTATIONS:
                raise ConfigError(f"studies.{name}.groups.{group}.representation: {cell.representation!r} is not "
                                  f"one of {', '.join(REPRESENTATIONS)}")
            if cell.representation == "vae" and cell.paradigm != "fm":
                raise ConfigError(f"studies.{name}.groups.{group}.representation: the VAE latent has no tokens, "
                                  "so only fm cells can use it; give ar cells representation [encodec]")
            if all(c.name != cell.name for c in cells):
                cells.append(cell)
    all_cells = list(cells)
    if only:
        cells = [c for c in cells if any(o == c.group or o in c.name for o in only)]
        if not cells:
            raise ConfigError(f"--only {' '.join(only)}: no cell of study {name!r} matches")
    init_from = spec.get("init_from") or {}
    for group, rule in init_from.items():
        where = f"studies.{name}.init_from.{group}"
        if not isinstance(rule, dict) or "group" not in rule:
            raise ConfigError(f"{where}: expected {{group: SOURCE_GROUP, paradigms: [ar]}}")
        known = {c.group for c in all_cells}
        if group not in known or rule["group"] not in known:
            raise ConfigError(f"{where}: groups {group!r} and {rule['group']!r} must both be in the study")
    per_paradigm = spec.get("paradigm_set") or {}
    unknown = sorted(set(per_paradigm) - {"ar", "fm"})
    if unknown:
        raise ConfigError(f"studies.{name}.paradigm_set: {unknown} are not paradigms (ar, fm)")
    study = Study(name=name, preset=spec.get("preset", name), experiment=spec.get("experiment", f"arfm-{name}"),
                  cells=cells, data=spec.get("data") or {}, overrides=spec.get("set") or {},
                  paradigm_overrides=per_paradigm, group_overrides=group_sets,
                  codec_budget_s=spec.get("codec_budget_s"), vae_budget_s=spec.get("vae_budget_s"),
                  train_budget_s=spec.get("train_budget_s"),
                  init_from=init_from, all_cells=all_cells,
                  search=_search(spec.get("search") or {}, name))
    for cell in all_cells:
        study.source_cell(cell)  # every fine-tuned cell has its source (raises naming the rule otherwise)
    return study


def _search(search: dict[str, Any], name: str) -> dict[str, Any]:
    """The study's ``search`` section, its spaces checked now (before any stage runs)."""
    from arfm.tune.space import spec_from_dict

    unknown = sorted(set(search) - {"cells", "spaces"})
    bad = sorted(set(search.get("spaces") or {}) - {"ar", "fm"})
    if unknown or bad:
        raise ConfigError(f"studies.{name}.search: keys are cells and spaces (got {unknown}); spaces are per "
                          f"paradigm, ar and fm (got {bad})")
    for paradigm, space in (search.get("spaces") or {}).items():
        spec_from_dict(space, where=f"studies.{name}.search.spaces.{paradigm}")
    return search


def _paths(root: Path, frame_rate: int, duration: float) -> dict[str, str]:
    return {
        "data.dataset": str(root / "data" / "synth"),
        "data.shards": str(root / "shards" / f"{frame_rate}hz-{duration:g}s"),
        "codec.path": str(root / "codec" / f"{frame_rate}hz"),
        "vae.path": str(root / "vae" / f"{frame_rate}hz"),
    }


def base_overrides(study: Study, root: Path) -> list[str]:
    items = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in study.overrides.items()]
    items.append(f"tracking.experiment={study.experiment}")
    items.append(f"tracking.uri={os.environ.get('MLFLOW_TRACKING_URI') or 'sqlite:///' + str(root / 'mlflow.db')}")
    if "clips" in study.data:
        items.append(f"data.synth_clips={study.data['clips']}")
    if "seconds" in study.data:
        items.append(f"data.synth_seconds={study.data['seconds']}")
    return items


def codec_config(study: Study, frame_rate: int, root: Path, extra: list[str] | None = None) -> JobConfig:
    sets = base_overrides(study, root)
    sets += [f"{k}={v}" for k, v in _paths(root, frame_rate, study.cells[0].duration).items()]
    sets += [f"codec.frame_rate={frame_rate}", f"name=codec-{frame_rate}hz", f"study_cell=codec-{frame_rate}hz"]
    if study.codec_budget_s:
        sets.append(f"codec.time_budget_s={study.codec_budget_s}")
    return resolve(preset=study.preset, overrides=sets + list(extra or []))


def vae_config(study: Study, frame_rate: int, root: Path, extra: list[str] | None = None) -> JobConfig:
    """The VAE training job at ``frame_rate`` (``arfm codec train --kind vae``), beside that rate's codec."""
    sets = base_overrides(study, root)
    sets += [f"{k}={v}" for k, v in _paths(root, frame_rate, study.cells[0].duration).items()]
    sets += [f"codec.frame_rate={frame_rate}", f"vae.frame_rate={frame_rate}", f"name=vae-{frame_rate}hz",
             f"study_cell=vae-{frame_rate}hz"]
    if study.vae_budget_s:
        sets.append(f"vae.time_budget_s={study.vae_budget_s}")
    return resolve(preset=study.preset, overrides=sets + list(extra or []))


def cell_config(study: Study, cell: Cell, root: Path, extra: list[str] | None = None) -> JobConfig:
    sets = base_overrides(study, root)
    sets += [f"{k}={v}" for k, v in _paths(root, cell.frame_rate, cell.duration).items()]
    sets += [
        f"name={cell.name}",
        f"study_cell={cell.name}",
        f"model.paradigm={cell.paradigm}",
        f"codec.frame_rate={cell.frame_rate}",
        f"vae.frame_rate={cell.frame_rate}",
        f"model.representation={cell.representation}",
        f"data.segment_seconds={cell.duration}",
        f"sample.seconds={cell.duration}",
        f"train.batch_size={cell.batch_size}",
    ]
    if cell.conditioning == "controls":
        sets.append("model.controls=[chords, melody, drums]")
    if cell.conditioning == "inpainting":
        sets.append(f"model.inpainting={'fim' if cell.paradigm == 'ar' else 'supervised'}")
    if study.train_budget_s:
        sets.append(f"train.time_budget_s={study.train_budget_s}")
    sets += [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
             for k, v in study.paradigm_overrides.get(cell.paradigm, {}).items()]
    sets += [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
             for k, v in study.group_overrides.get(cell.group, {}).items()]
    # User overrides come last so `--set` on the grid wins over the matrix.
    return resolve(preset=study.preset, overrides=sets + list(extra or []))
