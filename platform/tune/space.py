"""A sampling search as data: the space, the searcher, the objective, the prompts and the trials' resources.

A search file (YAML, read with ``yaml.safe_load``) holds one :class:`SearchSpec`; the paper's spaces of appendix D
ship as presets (``spaces/ar.yaml``, ``spaces/fm.yaml``; ``arfm tune --space ar|fm|FILE.yaml``). Each entry of
``space`` names a setting of the ``sample`` section and how it is searched:

- a list (or ``{grid: [...]}``): every value, in a grid (the ``grid`` searcher) or as a categorical choice (the
  ``optuna`` searcher). A value may be a mapping of several sample settings that go together, e.g. the
  truncation ``{top_p: 0.8, top_k: 0}`` or the solver ``{solver: euler, steps: 50}``: such an entry is then
  searched over the labels of its mappings (``top_p=0.8,top_k=0``), which are what MLflow and the report show.
- ``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (``hi``
  excluded): Ray Tune's sampling domains, for a searcher that samples (``optuna``).

A trial's sample settings are the evaluation's own (the model run's ``sample`` section, then the user's
``--set sample.*``) with the trial's values on top (:meth:`SearchSpec.decode`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arfm.config import ConfigError, SampleConfig, format_validation_error, load_yaml

SPACES_DIR = Path(__file__).with_name("spaces")
PRESETS = ("ar", "fm")
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
AR_ONLY = {"temperature", "top_k", "top_p"}
FM_ONLY = {"solver", "steps", "time_shift", "rtol", "atol"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Section):
    """What a trial is scored by: a weighted sum of evaluation metrics (``eval/<name>`` of ``arfm evaluate``)."""

    metrics: dict[str, float] = Field(default_factory=lambda: {"fad": 1.0},
                                      description="metric name -> weight; the objective is the weighted sum")
    mode: Literal["min", "max"] = "min"

    @model_validator(mode="after")
    def _check(self) -> "Objective":
        if not self.metrics:
            raise ValueError("objective.metrics: name at least one metric, e.g. {fad: 1.0}")
        from arfm.evaluate.results import METRICS

        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"objective.metrics: {unknown} are not evaluation metrics ({', '.join(METRICS)})")
        return self

    def describe(self) -> str:
        terms = [name if w == 1 else f"{w:g}·{name}" for name, w in self.metrics.items()]
        return f"{' + '.join(terms)} ({self.mode}imized)"


class EarlyStopping(_Section):
    """ASHA over the prompts: a trial is scored on its first ``slice`` prompts, then on each next slice (the
    objective over every prompt generated so far), and stopped at a rung when it is in the worst part of the
    trials that reached that rung (``reduction_factor``); "prompts scored" is ASHA's time unit."""

    slice: int = Field(ge=1, description="prompts per step; the first rung is after one slice")
    reduction_factor: int = Field(2, ge=2)


class Resources(_Section):
    """What one trial asks Ray for (``tune.with_resources``): its generator and its metrics run inside it."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="a fraction lets several trials share one GPU, e.g. 0.25")


class SearchSpec(_Section):
    name: str = Field(description="names the search (its Tune experiment and MLflow parent run)")
    paradigm: Literal["ar", "fm"] | None = Field(None, description="the paradigm the space is for, if one")
    searcher: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1, description="grid: repeats of the grid; optuna: number of trials")
    multi_objective: bool = Field(False, description="optuna only: also minimize seconds per sample (cost)")
    seed: int = Field(0, description="the optuna sampler's seed")
    prompts: int = Field(32, ge=2, description="validation prompts every trial generates (same prompts, seeds)")
    metrics: list[str] = Field(default_factory=list, description="secondary metrics scored beside the objective")
    objective: Objective = Field(default_factory=Objective)
    early_stopping: EarlyStopping | None = None
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int | None = Field(None, ge=1, description="trials at a time (default: from the cluster)")
    space: dict[str, Any]

    @model_validator(mode="after")
    def _check(self) -> "SearchSpec":
        from arfm.evaluate.results import METRICS

        if not self.space:
            raise ValueError("space: name at least one sample setting to search")
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"metrics: {unknown} are not evaluation metrics ({', '.join(METRICS)})")
        if self.multi_objective and self.searcher != "optuna":
            raise ValueError("multi_objective: only the optuna searcher optimizes several objectives")
        if self.early_stopping and self.early_stopping.slice >= self.prompts:
            raise ValueError(f"early_stopping.slice ({self.early_stopping.slice}) must be smaller than prompts "
                             f"({self.prompts})")
        for key, entry in self.space.items():
            _domain(key, entry, self.searcher)
        return self

    # ------------------------------------------------------------------------------------------------
    def param_space(self) -> dict[str, Any]:
        """Ray Tune's ``param_space``: one entry per searched setting (labels for grouped settings)."""
        from ray import tune

        out: dict[str, Any] = {}
        for key, entry in self.space.items():
            kind, values = _domain(key, entry, self.searcher)
            if kind in ("grid", "choice"):
                labels = [_label(v) for v in values]
                out[key] = tune.grid_search(labels) if kind == "grid" and self.searcher == "grid" else \
                    tune.choice(labels)
            elif kind == "randint":
                out[key] = tune.randint(int(values[0]), int(values[1]))
            else:
                out[key] = getattr(tune, kind)(float(values[0]), float(values[1]))
        return out

    def decode(self, config: dict[str, Any]) -> dict[str, Any]:
        """A trial's config -> its sample settings (grouped labels expanded, e.g. ``steps`` and ``solver``)."""
        sample: dict[str, Any] = {}
        for key, entry in self.space.items():
            kind, values = _domain(key, entry, self.searcher)
            value = config[key]
            if kind in ("grid", "choice") and any(isinstance(v, dict) for v in values):
                match = [v for v in values if _label(v) == value]
                if not match:
                    raise ValueError(f"space.{key}: {value!r} is not one of its values")
                sample.update(match[0])
            else:
                sample[key] = value
        return sample

    def grid_size(self) -> int | None:
        """Trials of a grid search (grid entries multiplied, times ``num_samples``); None when it samples."""
        if self.searcher != "grid":
            return None
        n = 1
        for key, entry in self.space.items():
            kind, values = _domain(key, entry, self.searcher)
            n *= len(values) if kind == "grid" else 1
        return n * self.num_samples

    def slices(self) -> list[int]:
        """How many prompts have been scored at each report of a trial: one report without early stopping."""
        if self.early_stopping is None:
            return [self.prompts]
        step = self.early_stopping.slice
        return sorted({*range(step, self.prompts, step), self.prompts})

    def check_sample(self, base: SampleConfig, paradigm: str) -> None:
        """Every combination of the space's fixed values validates as a sample config of ``paradigm``."""
        wrong = (AR_ONLY if paradigm == "fm" else FM_ONLY) & self.settings()
        if wrong:
            raise ConfigError(f"space: {sorted(wrong)} do not act on a {paradigm.upper()} model")
        if self.paradigm and self.paradigm != paradigm:
            raise ConfigError(f"space {self.name!r} is for {self.paradigm.upper()} models, the model is "
                              f"{paradigm.upper()}")
        choices = []
        for key, entry in self.space.items():
            kind, values = _domain(key, entry, self.searcher)
            choices.append([v if isinstance(v, dict) else {key: v} for v in values]
                           if kind in ("grid", "choice") else [{key: values[0]}, {key: values[1]}])
        for combo in itertools.islice(itertools.product(*choices), 10_000):
            merged = {k: v for part in combo for k, v in part.items()}
            try:
                SampleConfig.model_validate({**base.model_dump(), **merged})
            except ValidationError as exc:
                raise ConfigError("space: " + format_validation_error(exc).replace("\n", " ")) from None

    def settings(self) -> set[str]:
        """The ``sample`` fields the space sets."""
        out = set()
        for key, entry in self.space.items():
            kind, values = _domain(key, entry, self.searcher)
            dicts = [v for v in values if isinstance(v, dict)] if kind in ("grid", "choice") else []
            out |= {k for d in dicts for k in d} if dicts else {key}
        return out


def _label(value: Any) -> Any:
    """A grouped value's label (``solver=euler,steps=50``); plain values are their own label."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return value


def _domain(key: str, entry: Any, searcher: str) -> tuple[str, list[Any]]:
    """``(kind, values)`` of one space entry, or a ConfigError naming it."""
    if isinstance(entry, list):
        kind, values = "grid", entry
    elif isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in DOMAINS:
        kind, values = next(iter(entry.items()))
    else:
        raise ValueError(f"space.{key}: a list of values or one of {{{', '.join(k + ': ...' for k in DOMAINS)}}} "
                         f"(got {entry!r})")
    if not isinstance(values, list) or not values:
        raise ValueError(f"space.{key}.{kind}: a non-empty list (got {values!r})")
    if kind in ("uniform", "loguniform", "randint"):
        if searcher == "grid":
            raise ValueError(f"space.{key}: {kind} samples values; the grid searcher needs a list (use "
                             "searcher: optuna)")
        if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or values[0] >= values[1]:
            raise ValueError(f"space.{key}.{kind}: [low, high] with low < high (got {values!r})")
    if kind == "choice" and searcher == "grid":
        raise ValueError(f"space.{key}: choice samples values; the grid searcher takes a list of them")
    keys = {key} if not any(isinstance(v, dict) for v in values) else set()
    for v in values:
        if isinstance(v, dict):
            keys |= set(v)
        elif keys != {key}:
            raise ValueError(f"space.{key}: either every value is a mapping of sample settings or none is")
    unknown = sorted(keys - set(SampleConfig.model_fields))
    if unknown:
        raise ValueError(f"space.{key}: {unknown} are not sample settings ({', '.join(SampleConfig.model_fields)})")
    return kind, values


def load_spec(space: str | Path) -> SearchSpec:
    """A preset (``ar``, ``fm``) or a YAML file -> :class:`SearchSpec`; a ConfigError names what is wrong."""
    path = SPACES_DIR / f"{space}.yaml" if str(space) in PRESETS else Path(space)
    if not path.is_file():
        raise ConfigError(f"--space {space}: neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    return spec_from_dict(load_yaml(path, where=f"--space {space}"), where=str(space))


def spec_from_dict(doc: dict[str, Any], where: str = "search") -> SearchSpec:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: the top level must be a mapping (name, space, ...)")
    try:
        return SearchSpec.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{where}: " + format_validation_error(exc)) from None
