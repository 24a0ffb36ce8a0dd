"""One Ray Serve deployment per served model: it loads the model once and generates batches of requests.

Each replica holds one :class:`~arfm.serving.models.LoadedModel` and calls ``Generator.generate`` on batches
formed by ``@serve.batch``. A request is checked and converted on its own first (:meth:`ModelServer._prepare`:
its sampling, length, controls, reference audio, and ``Generator.check``), so a bad request is answered with the
field at fault and never fails the batch it would have joined. Requests then queue by what the generator can run
together: same kind (generation or inpainting with one span and mode), same number of frames and same sampling
configuration; each kind of request has its own ``@serve.batch`` queue, created on first use, with the
deployment's batch settings (``user_config``, changeable on live replicas). Every request keeps its own seed, so
its audio does not depend on its batch.

Generation runs on one worker thread of the replica, off its event loop (which keeps accepting, batching and
cancelling requests meanwhile). A request cancelled while queued (its client went away, or the ingress gave up
after ``limits.request_timeout_s``) is dropped by Serve when its batch starts, so it takes no batch slot.
``check_health`` generates a short clip when no request succeeded for ``health_probe_s`` (or a batch failed),
and fails when the model cannot generate.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from ray import serve

from arfm.config import SampleConfig, merge_sample
from arfm.generate import GenerationError, GenerationRequest
from arfm.models.solvers import FIXED_STEP
from arfm.serving import inputs
from arfm.serving.config import BatchSettings, Limits, ModelSpec
from arfm.serving.inputs import FieldError

# GenerationError names the Generator's fields; the API's names for them
_API_FIELDS = {"caption": "prompt", "inpaint_span": "end", "inpaint_mode": "mode", "inpaint_audio": "audio"}
MAX_QUEUES = 64  # idle batch queues beyond this are dropped (a queue per request kind seen)


@dataclass
class Job:
    request: GenerationRequest
    sample: SampleConfig
    key: tuple
    cancelled: bool = False  # its caller went away: generate nothing for it


def api_field(message: str) -> tuple[str, str]:
    """``"requests[0].caption: ..."`` -> ``("prompt", "...")``: a GenerationError's field in the API's terms."""
    field, _, text = message.partition(": ")
    field = field.split("].", 1)[-1]
    head, _, rest = field.partition(".")
    return ".".join(p for p in (_API_FIELDS.get(head, head), rest) if p), text


@serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 1})
class ModelServer:
    def __init__(self, spec: dict[str, Any], limits: dict[str, Any]) -> None:
        import torch

        from arfm.serving.models import LoadedModel

        self.spec = ModelSpec.model_validate(spec)
        self.limits = Limits.model_validate(limits)
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        self.model = LoadedModel(self.spec)
        self.batch = self.spec.batch
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._turn = asyncio.Lock()  # one batch generates at a time, whatever its queue
        self._queues: dict[tuple, Any] = {}
        self._waiting: Counter = Counter()
        self.batch_sizes: Counter = Counter()
        self.served = self.cancelled = self.running = 0
        self.last_ok = time.monotonic()
        self.last_failure: str | None = None

    # ------------------------------------------------------------------------------------- settings
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.batch = BatchSettings.model_validate(user_config or {})
        for fn in self._queues.values():
            fn.set_max_batch_size(self.batch.max_batch_size)
            fn.set_batch_wait_timeout_s(self.batch.batch_wait_timeout_s)

    async def info(self) -> dict[str, Any]:
        return self.model.info()

    async def stats(self) -> dict[str, Any]:
        """Batch sizes formed (``{size: count}``), requests served and cancelled, the last failure."""
        return {"batch_sizes": dict(self.batch_sizes), "served": self.served, "cancelled": self.cancelled,
                "last_failure": self.last_failure}

    async def health(self) -> dict[str, Any]:
        return {"ok": self.last_failure is None, "last_failure": self.last_failure}

    # ------------------------------------------------------------------------------------- requests
    async def generate(self, body: dict[str, Any], audio: bytes | None = None) -> dict[str, Any]:
        """One request (a validated API body; ``audio``: an inpainting upload) -> ``{"wav", "info"}`` or
        ``{"error": {"field", "message"}}``."""
        try:
            job = await asyncio.to_thread(self._prepare, body, audio)
        except FieldError as exc:
            return {"error": {"field": exc.field, "message": exc.message}}
        queue = self._queue(job.key)
        self._waiting[job.key] += 1
        try:
            result = await queue(job)
        except asyncio.CancelledError:
            job.cancelled = True
            self.cancelled += 1
            raise
        finally:
            self._waiting[job.key] -= 1
        self.served += 1
        info = {**result.info, "sample_rate": result.sample_rate, "seconds": len(result.audio) / result.sample_rate}
        return {"wav": inputs.encode_wav(result.audio, result.sample_rate), "info": info}

    def _prepare(self, body: dict[str, Any], audio: bytes | None) -> Job:
        gen, m = self.model.gen, self.model
        sample = self._sample(body.get("sample"))
        if audio is not None:  # inpainting: the clip sets the length
            ref = inputs.decode_audio(audio, gen.sample_rate, "audio", m.max_seconds)
            seconds = len(ref) / gen.sample_rate
            if body["end"] > seconds + 1e-6:
                raise FieldError("end", f"{body['end']:g} s is past the end of the {seconds:.3f} s clip")
            req = GenerationRequest(body["prompt"], seconds=seconds, seed=body.get("seed"), inpaint_audio=ref,
                                    inpaint_span=(float(body["start"]), float(body["end"])),
                                    inpaint_mode=body.get("mode"))
        else:
            seconds = float(body.get("seconds") or gen.cfg.data.segment_seconds)
            if seconds > m.max_seconds:
                raise FieldError("seconds", f"{seconds:g} s is above this model's limit of {m.max_seconds:g} s")
            req = GenerationRequest(body["prompt"], seconds=seconds, seed=body.get("seed"))
            req.controls = self._controls(body.get("controls") or {}, gen.n_frames(seconds))
        try:
            n = gen.check(req)
        except GenerationError as exc:
            raise FieldError(*api_field(str(exc))) from None
        span = req.inpaint_span
        key = ("inpaint" if span else "generate", n, span, req.inpaint_mode, sample.model_dump_json())
        return Job(req, sample, key)

    def _sample(self, overrides: dict[str, Any] | None) -> SampleConfig:
        """The model's default sampling with the request's overrides, within the server's limits."""
        try:
            sc = SampleConfig.model_validate(merge_sample(self.model.sample.model_dump(), overrides or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise FieldError(".".join(["sample", *map(str, err["loc"])]), err["msg"]) from None
        lim = self.limits
        if sc.solver in FIXED_STEP and sc.steps > lim.max_steps:
            raise FieldError("sample.steps", f"{sc.steps} is above this server's limit of {lim.max_steps}")
        if sc.solver == "dopri5":
            for name in ("rtol", "atol"):
                if getattr(sc, name) < lim.min_tolerance:
                    raise FieldError(f"sample.{name}", f"{getattr(sc, name):g} is below this server's limit of "
                                     f"{lim.min_tolerance:g}")
        if sc.cfg > lim.max_cfg:
            raise FieldError("sample.cfg", f"{sc.cfg:g} is above this server's limit of {lim.max_cfg:g}")
        for name, w in sc.control_cfg.items():
            if not 0 <= w <= lim.max_cfg:
                raise FieldError(f"sample.control_cfg.{name}", f"{w:g} is outside [0, {lim.max_cfg:g}]")
        return sc

    def _controls(self, given: dict[str, Any], n: int) -> dict[str, list[int]] | None:
        gen = self.model.gen
        takes = list(gen.cfg.model.controls)
        out: dict[str, list[int]] = {}
        for name, value in given.items():
            if value is None:
                continue
            if name not in takes:
                raise FieldError(f"controls.{name}", f"this model takes no {name} control (it takes "
                                 f"{takes or 'none'})")
            if name == "chords":
                out[name] = inputs.chords_to_frames(value, gen.frame_rate, n)
            elif name == "melody":
                out[name] = inputs.melody_to_frames(value, gen.frame_rate, n)
            else:
                data = inputs.decode_base64(value["audio_base64"], "controls.drums.audio_base64")
                clip = inputs.decode_audio(data, gen.sample_rate, "controls.drums.audio_base64",
                                           self.model.max_seconds)
                out[name] = inputs.drums_from_audio(gen, clip, n)
        return out or None

    # ------------------------------------------------------------------------------------- batching
    def _queue(self, key: tuple):
        fn = self._queues.get(key)
        if fn is None:
            if len(self._queues) >= MAX_QUEUES:  # forget idle queues (Serve stops a queue's task with it)
                for k in [k for k in self._queues if not self._waiting[k]]:
                    del self._queues[k], self._waiting[k]

            async def run(jobs: list[Job]) -> list[Any]:
                return await self._run_batch(jobs)

            fn = serve.batch(max_batch_size=self.batch.max_batch_size,
                             batch_wait_timeout_s=self.batch.batch_wait_timeout_s)(run)
            self._queues[key] = fn
        return fn

    async def _run_batch(self, jobs: list[Job]) -> list[Any]:
        """Generate a batch once the replica is free; requests cancelled meanwhile are left out (Serve drops the
        ones cancelled before their batch was formed, this the ones cancelled while it waited for another)."""
        async with self._turn:
            live = [j for j in jobs if not j.cancelled]
            if not live:
                return [None] * len(jobs)
            self.batch_sizes[len(live)] += 1
            self.running += 1
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._pool, self._generate, live)
            except Exception as exc:
                self.last_failure = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self.running -= 1
        self.last_ok, self.last_failure = time.monotonic(), None
        by_job = dict(zip(map(id, live), results))
        return [by_job.get(id(j)) for j in jobs]

    def _generate(self, jobs: list[Job]) -> list[Any]:
        return self.model.gen.generate([j.request for j in jobs], sample=jobs[0].sample, batch_size=len(jobs))

    # ------------------------------------------------------------------------------------- health
    async def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy (Serve replaces it)."""
        if self.running:
            return  # busy generating: a probe would only queue behind it
        if self.last_failure is None and time.monotonic() - self.last_ok < self.spec.health_probe_s:
            return
        await asyncio.get_running_loop().run_in_executor(self._pool, self._probe)

    def _probe(self) -> None:
        gen = self.model.gen
        probe = GenerationRequest("health check", seconds=2 / gen.frame_rate, seed=0)
        sample = self.model.sample.model_copy(update={"steps": 1, "solver": "euler"})
        try:
            out = gen.generate([probe], sample=sample)[0].audio
            if not (len(out) and np.isfinite(out).all()):
                raise RuntimeError("the audio holds NaN or infinite samples")
        except Exception as exc:
            self.last_failure = f"{type(exc).__name__}: {exc}"
            raise RuntimeError(f"model {self.spec.name!r} cannot generate: {self.last_failure}") from exc
        self.last_ok, self.last_failure = time.monotonic(), None
