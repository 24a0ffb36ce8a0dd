"""A listening study from MLflow runs (``arfm study create``).

Each system is a run and a sampling variant (``AR=<run id>:inpaint``) or ``reference`` (the ground truth: the
prompts' own reference clips). Its clips are

- the ones its evaluation logged (``eval/audio/<variant>_<i>.wav`` with ``eval/audio/captions.json``, written by
  :func:`arfm.evaluate.job._log`), on the prompts of the evaluation config it logged (``eval/config.yaml``); or
- with ``generate=True``, new ones made by the evaluation job's own generation (:func:`~arfm.evaluate.job.
  generate_variant` over :meth:`arfm.generate.Generator.load`), on the first ``n`` prompts of that config, with
  the study's seed as the evaluation seed (so every system gets the same inpainted spans).

The prompts (caption, reference audio) come from :func:`~arfm.evaluate.job.load_prompts` on that config, the
inpainted span of prompt ``i`` from :func:`~arfm.evaluate.job.inpaint_spans` (the evaluation's seeded draw,
rounded to the model's latent frames). Every system must share the prompts and spans; otherwise creation stops
and says which run differs. Anchors are made from the reference clips (:mod:`arfm.listening.media`).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arfm.listening import media
from arfm.listening.spec import StudySettings

REFERENCE = "reference"


@dataclass(frozen=True)
class SystemSource:
    label: str
    run_id: str | None  # None: the ground truth (reference clips)
    variant: str = ""  # "" is the run's default sampling

    @property
    def description(self) -> str:
        if self.run_id is None:
            return "ground truth: the prompts' reference clips"
        return f"run {self.run_id} variant {self.variant or 'default'}"


def parse_system(text: str) -> SystemSource:
    """``LABEL=RUN_ID[:VARIANT]`` or ``LABEL=reference``."""
    label, sep, rest = text.partition("=")
    label, rest = label.strip(), rest.strip()
    if not sep or not label or not rest:
        raise ValueError(f"--system {text!r}: write LABEL=RUN_ID[:VARIANT] or LABEL=reference")
    if rest == REFERENCE:
        return SystemSource(label, None)
    run, _, variant = rest.partition(":")
    if not re.fullmatch(r"[0-9a-f]{32}", run):
        raise ValueError(f"--system {text!r}: {run!r} is not an MLflow run id (32 hex digits)")
    return SystemSource(label, run, "" if variant in ("", "default") else variant)


def default_systems(uri: str, experiment: str, task: str) -> list[SystemSource]:
    """Table 5's systems from an experiment's newest finished runs: ground truth, AR and FM inpainting models
    (variant ``inpaint``) and FM zero-shot (a text FM run's ``inpaint_zs``); for ``quality``: ground truth and
    the newest AR and FM text runs (default sampling)."""
    from arfm import tracking

    client = tracking.client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {uri}")

    def newest(paradigm: str, conditioning: str) -> str:
        runs = client.search_runs([exp.experiment_id], f"tags.job = 'train' and tags.paradigm = '{paradigm}' and "
                                  f"tags.conditioning = '{conditioning}' and tags.evaluated = 'true'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise ValueError(f"experiment {experiment!r}: no evaluated {paradigm} run with {conditioning} "
                             "conditioning; name the systems with --system LABEL=RUN_ID[:VARIANT]")
        return runs[0].info.run_id

    if task == "inpainting":
        return [SystemSource("GT", None), SystemSource("AR", newest("ar", "inpainting"), "inpaint"),
                SystemSource("FM", newest("fm", "inpainting"), "inpaint"),
                SystemSource("FM (ZS)", newest("fm", "text"), "inpaint_zs")]
    return [SystemSource("GT", None), SystemSource("AR", newest("ar", "text")),
            SystemSource("FM", newest("fm", "text"))]


def _eval_config(client: Any, run_id: str, tmp: Path) -> Any:
    """The evaluation config the run logged (``eval/config.yaml``), else its model's config."""
    from arfm.config import JobConfig, load_yaml

    for path in ("eval/config.yaml", "model/config.yaml"):
        try:
            local = client.download_artifacts(run_id, path, str(tmp))
        except Exception:  # noqa: BLE001 - not logged: try the next
            continue
        return JobConfig.model_validate(load_yaml(local))
    raise ValueError(f"run {run_id}: neither eval/config.yaml nor model/config.yaml is logged")


def _logged_clips(client: Any, src: SystemSource, tmp: Path) -> tuple[list[np.ndarray], list[str], int]:
    import soundfile as sf

    stem = src.variant or "default"
    try:
        names = [Path(a.path).name for a in client.list_artifacts(src.run_id, "eval/audio")]
    except Exception:  # noqa: BLE001
        names = []
    found = sorted((int(m.group(1)), n) for n in names if (m := re.fullmatch(rf"{re.escape(stem)}_(\d+)\.wav", n)))
    if not found:
        raise ValueError(f"{src.label}: {src.description} has no logged clips eval/audio/{stem}_NN.wav; evaluate it "
                         "with --set eval.audio_samples_logged=N, or create the study with --generate")
    if [i for i, _ in found] != list(range(len(found))):
        raise ValueError(f"{src.label}: the logged clips of {src.description} are not numbered 0..N-1")
    captions = json.loads(Path(client.download_artifacts(src.run_id, "eval/audio/captions.json", str(tmp)))
                          .read_text())
    audio, rates = [], set()
    for _, name in found:
        x, sr = sf.read(client.download_artifacts(src.run_id, f"eval/audio/{name}", str(tmp)), dtype="float32")
        audio.append(x if x.ndim == 1 else x.mean(axis=1))
        rates.add(int(sr))
    if len(rates) != 1:
        raise ValueError(f"{src.label}: logged clips at several sample rates {sorted(rates)}")
    return audio, [captions.get(n, "") for _, n in found], rates.pop()


def _generated_clips(uri: str, src: SystemSource, n: int, seed: int, tmp: Path
                     ) -> tuple[list[np.ndarray], Any, int]:
    """``n`` clips of ``src`` through the evaluation job's generation (its config with ``train.seed = seed``)."""
    from arfm import tracking
    from arfm.evaluate.job import build_variants, generate_variant, load_prompts
    from arfm.generate import Generator

    cfg = _eval_config(tracking.client(uri), src.run_id, tmp)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
    gen = Generator.load(f"runs:/{src.run_id}/model", tracking_uri=uri)
    variants = build_variants(gen, cfg)
    spec = variants.get(src.variant)
    if spec is None:
        raise ValueError(f"{src.label}: run {src.run_id} has no variant {src.variant or 'default'!r}; it has "
                         f"{', '.join(v or 'default' for v in variants)}")
    if "alias" in spec:
        spec = variants[spec["alias"]]
    seconds = float(cfg.sample.seconds or cfg.data.segment_seconds)
    prompts = load_prompts(cfg, n, seconds, gen.sample_rate)
    out = generate_variant(gen, prompts, spec, cfg, seconds)
    return out["audio"], cfg, gen.sample_rate


def build_study(name: str, settings: StudySettings, systems: list[SystemSource], uri: str, media_dir: str | Path,
                n: int | None = None, generate: bool = False,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Collect every system's clips on shared prompts, write them (opaque names) and the anchors to
    ``media_dir``; return ``{"systems", "prompts", "clips", "experiment"}`` for :meth:`Store.create_study`."""
    from arfm import tracking
    from arfm.evaluate.job import inpaint_spans, load_prompts

    say = progress or (lambda _m: None)
    labels = [s.label for s in systems]
    if len(set(labels)) != len(labels) or not systems:
        raise ValueError(f"systems: labels must be distinct and at least one ({labels})")
    runs = [s for s in systems if s.run_id is not None]
    if not runs:
        raise ValueError("systems: name at least one MLflow run")
    if generate and not n:
        raise ValueError("--generate needs --n (the number of prompts)")
    client = tracking.client(uri)
    clips_by: dict[str, list[np.ndarray]] = {}
    captions_by: dict[str, list[str]] = {}
    first_cfg, sample_rate = None, None
    with tempfile.TemporaryDirectory(prefix="arfm-listening-") as tmp:
        tmp = Path(tmp)
        for src in runs:
            say(f"{src.label}: {src.description}" + (" (generating)" if generate else " (logged clips)"))
            if generate:
                audio, cfg, sr = _generated_clips(uri, src, int(n), settings.seed, tmp)
                captions = None
            else:
                audio, captions, sr = _logged_clips(client, src, tmp)
                cfg = _eval_config(client, src.run_id, tmp)
            key = (float(cfg.sample.seconds or cfg.data.segment_seconds), cfg.train.seed, cfg.data.dataset,
                   cfg.eval.prompts)
            if first_cfg is None:
                first_cfg, sample_rate, first_key, first_src = cfg, sr, key, src
            elif sr != sample_rate or key != first_key:
                raise ValueError(f"{src.label} ({src.description}) was evaluated on other prompts or spans than "
                                 f"{first_src.label}: (seconds, seed, dataset, prompts) {key} vs {first_key}, "
                                 f"sample rate {sr} vs {sample_rate}")
            clips_by[src.label] = audio
            captions_by[src.label] = captions or []
        count = min(len(a) for a in clips_by.values())
        count = min(count, int(n)) if n else count
        seconds = float(first_cfg.sample.seconds or first_cfg.data.segment_seconds)
        prompts = load_prompts(first_cfg, count, seconds, sample_rate)
        if len(prompts) < count:
            raise ValueError(f"the evaluation's prompt set holds {len(prompts)} prompts, fewer than the {count} clips")
    for label, caps in captions_by.items():  # logged clips: each caption is its prompt's
        bad = [i for i in range(min(count, len(caps))) if caps[i] != prompts[i]["caption"]]
        if bad:
            raise ValueError(f"{label}: logged clip {bad[0]} has caption {caps[bad[0]]!r}, but prompt {bad[0]} of "
                             f"the evaluation is {prompts[bad[0]]['caption']!r}")
    spans: list[tuple[float, float] | None] = [None] * count
    if settings.task == "inpainting":
        fr = float(first_cfg.codec.frame_rate)
        spans = [(round(a * fr) / fr, round(b * fr) / fr) for a, b in inpaint_spans(count, seconds, first_cfg.train.seed)]
    if any(p["reference"] is None for p in prompts) and (settings.anchors_per_rater or len(runs) < len(systems)):
        raise ValueError("the prompts have no reference audio (a captions file): use --anchors 0 and no reference "
                         "system")
    rng = np.random.default_rng(settings.seed)
    media_dir = Path(media_dir)
    out_prompts, out_clips = [], []
    for i, p in enumerate(prompts[:count]):
        out_prompts.append({"key": p["id"], "caption": p["caption"], "span": spans[i]})
        caption = p["caption"] if settings.task == "quality" else ""
        for src in systems:
            audio = p["reference"] if src.run_id is None else clips_by[src.label][i]
            out_clips.append(_clip(media_dir, audio, sample_rate, p["id"], src.label, "test", caption))
        if settings.anchors_per_rater:
            ref = p["reference"]
            out_clips.append(_clip(media_dir, ref, sample_rate, p["id"], None, "reference", caption))
            if settings.task == "inpainting":
                bad, bad_caption = media.degrade_span(ref, spans[i], sample_rate, rng), ""
            else:
                bad, bad_caption = media.degrade_clip(ref, sample_rate, rng), prompts[(i + 1) % count]["caption"]
            out_clips.append(_clip(media_dir, bad, sample_rate, p["id"], None, "degraded", bad_caption))
    exp = client.get_experiment(client.get_run(runs[0].run_id).info.experiment_id).name
    return {"systems": [(s.label, s.description) for s in systems], "prompts": out_prompts, "clips": out_clips,
            "experiment": exp, "sample_rate": sample_rate}


def _clip(media_dir: Path, audio: np.ndarray, sr: int, prompt: str, system: str | None, kind: str,
          caption: str) -> dict[str, Any]:
    return {"prompt": prompt, "system": system, "kind": kind, "file": media.write_clip(media_dir, audio, sr),
            "seconds": len(audio) / sr, "caption_shown": caption, "peaks": media.peaks(audio)}
