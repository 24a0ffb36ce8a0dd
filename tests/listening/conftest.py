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


@pytest.fixture(scope="session")
def make_study():
    """``make_study(root, name="s1", task="inpainting", systems=SYSTEMS, n_prompts=3, seconds=1.0, **settings)``."""
    return build


@pytest.fixture(scope="session")
def system_names():
    return SYSTEMS


class Server:
    """``arfm study serve`` in a subprocess (the real command, bound to its default host)."""

    def __init__(self, db_url: str, study: str, home, port: int | None = None):
        self.db_url, self.study, self.home = db_url, study, home
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 60.0) -> "Server":
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        if getattr(self, "log", None):
            self.log.close()
        self.log = open(self.home / f"server-{self.port}.log", "ab")
        env = {**os.environ, "ARFM_HOME": str(self.home)}
        self.proc = subprocess.Popen([sys.executable, "-c", "from arfm.cli import main; main()", "study", "serve",
                                      self.study, "--db", self.db_url, "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                urllib.request.urlopen(f"{self.url}/static/rate.css", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not answer in {timeout} s: {self.output()}")

    def output(self) -> str:
        return (self.home / f"server-{self.port}.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_cls():
    return Server
