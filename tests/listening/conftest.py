"""Fixtures for the listening-study tests: a study of short synthetic clips stored without MLflow.

``make_study(root, ...)`` writes clips (tones whose middle span differs per system) through the study's own
media writer and stores the study; it returns ``(store, study, admin_token)``. System names are chosen to be
findable in any text: a leak of one into a URL, a file name or the page is a plain substring match.
"""

from __future__ import annotations

import numpy as np
import pytest

SR = 8000
SYSTEMS = ("GroundTruthSys", "AutoRegSys", "FlowMatchSys", "ZeroShotSys")


def _tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.minimum(1, 20 * t)).astype(np.float32)


def build(root, name="s1", task="inpainting", systems=SYSTEMS, n_prompts=3, seconds=1.0, url=None, **settings):
    from arfm.listening import media
    from arfm.listening.spec import StudySettings
    from arfm.listening.store import Store

    rng = np.random.default_rng(0)
    media_dir = root / "media"
    store = Store(url or f"sqlite:///{root / 'study.db'}")
    cfg = StudySettings(task=task, **settings)
    span = (0.3 * seconds, 0.7 * seconds) if task == "inpainting" else None
    prompts, clips = [], []

    def clip(audio, prompt, system, kind, caption=""):
        return {"prompt": prompt, "system": system, "kind": kind, "file": media.write_clip(media_dir, audio, SR),
                "seconds": len(audio) / SR, "caption_shown": caption, "peaks": media.peaks(audio)}

    for p in range(n_prompts):
        key, caption = f"p{p}", f"prompt number {p}, calm piano"
        ref = _tone(220.0 * (1 + p), seconds)
        prompts.append({"key": key, "caption": caption, "span": span})
        for k, sname in enumerate(systems):
            audio = ref.copy()
            if span and k:
                a, b = int(span[0] * SR), int(span[1] * SR)
                audio[a:b] = _tone(220.0 * (1 + p) * (1 + 0.1 * k), (b - a) / SR)
            clips.append(clip(audio, key, sname, "test", caption if task == "quality" else ""))
        if cfg.anchors_per_rater:
            clips.append(clip(ref, key, None, "reference"))
            bad = media.degrade_span(ref, span, SR, rng) if span else media.degrade_clip(ref, SR, rng)
            clips.append(clip(bad, key, None, "degraded"))
    token = store.create_study(name, cfg, [(s, f"source of {s}") for s in systems], prompts, clips, media_dir)
    return store, store.study(name), token


@pytest.fixture
def make_study():
    """``make_study(root, name="s1", task="inpainting", systems=SYSTEMS, n_prompts=3, seconds=1.0, **settings)``."""
    return build


@pytest.fixture(scope="session")
def system_names():
    return SYSTEMS
