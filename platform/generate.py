"""The one way to get audio from a trained model: load it once, then ``generate(requests)`` in batches.

Evaluation jobs, Ray Tune trials and Ray Serve replicas all call :class:`Generator`, so every number the
platform reports comes from the same code path::

    gen = Generator.load("runs:/<run_id>/model")           # or a folder, "models:/arfm-fm/3", a run id
    out = gen.generate([GenerationRequest("calm lofi piano, 80 bpm", seconds=10, seed=0)],
                       sample={"solver": "euler", "steps": 50, "cfg": 3.0})
    out[0].audio  # float32 mono at gen.sample_rate

A request may carry temporal controls (per-frame indices at the model's frame rate, see
:mod:`arfm.controls`) and an inpainting job (reference audio and the span to regenerate).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from arfm.config import JobConfig, SampleConfig, merge_sample
from arfm.models.solvers import FIXED_STEP


@dataclass
class GenerationRequest:
    caption: str
    seconds: float | None = None  # default: the model's training segment length
    seed: int | None = None
    controls: dict[str, Sequence[int]] | None = None  # per latent frame; missing controls get the null token
    inpaint_audio: np.ndarray | None = None  # mono reference at the model's sample rate
    inpaint_span: tuple[float, float] | None = None  # seconds [start, end) to regenerate
    inpaint_mode: str | None = None  # fm: "supervised" | "zero_shot"; ar: "fim" (default: the model's own)


@dataclass
class GenerationResult:
    audio: np.ndarray
    sample_rate: int
    caption: str
    info: dict[str, Any] = field(default_factory=dict)


def _each_clip(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` on one clip at a time, concatenated: convolution kernels choose their algorithm by batch size
    (on CPU a batch of one rounds differently), so the codec sees the same shapes whatever the batch."""
    return torch.cat([fn(x[i: i + 1]) for i in range(x.shape[0])])


class GenerationError(ValueError):
    """A request the loaded model cannot serve; the message names the field."""


def _guidance(sc: SampleConfig) -> dict[str, Any]:
    """The model's CFG keywords: text weight, and the nested form's per-control weights or JASCO's ``w_all``."""
    if sc.cfg_form == "jasco":
        return {"cfg": sc.cfg, "cfg_all": sc.cfg_all}
    return {"cfg": sc.cfg, "control_cfg": sc.control_cfg or None}


def _as_sample_config(sample: SampleConfig | Mapping[str, Any] | None, base: SampleConfig) -> SampleConfig:
    if sample is None:
        return base
    if isinstance(sample, SampleConfig):
        return sample
    return SampleConfig.model_validate(merge_sample(base.model_dump(), dict(sample)))


def resolve_source(source: str | Path, tracking_uri: str | None = None) -> Path:
    """A saved-model folder from a local path, ``runs:/ID/model``, ``models:/NAME/VERSION`` or a bare run id."""
    s = str(source)
    if Path(s).is_dir():
        return Path(s)
    if re.fullmatch(r"[0-9a-f]{32}", s):
        s = f"runs:/{s}/model"
    if s.startswith(("runs:/", "models:/")):
        import mlflow

        from arfm import tracking

        uri = tracking_uri or tracking.tracking_uri()
        if s.startswith("models:/"):
            # resolved with a client of this store's registry: MLflow's models:/ download would use the
            # process-wide registry URI, and setting that would redirect every later client of the process
            s = _registered_model_uri(tracking.client(uri), s)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=s, tracking_uri=uri))
    raise GenerationError(f"source: {source!r} is neither a saved-model folder, runs:/RUN_ID/model, "
                          "models:/NAME/VERSION nor an MLflow run id")


def _registered_model_uri(client: Any, uri: str) -> str:
    """``models:/NAME/VERSION`` (or ``NAME/latest``, ``NAME``) -> the artifact URI of that model version."""
    name, _, version = uri.removeprefix("models:/").partition("/")
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise GenerationError(f"source: no registered model named {name!r}")
    if version in ("", "latest"):
        version = str(max(int(v.version) for v in versions))
    if version not in {str(v.version) for v in versions}:
        raise GenerationError(f"source: registered model {name!r} has no version {version}")
    return client.get_model_version_download_uri(name, version)


class Generator:
    def __init__(self, cfg: JobConfig, meta: dict[str, Any], model: torch.nn.Module, codec: Any,
                 text_encoder: Any, device: torch.device) -> None:
        self.cfg, self.meta, self.model, self.codec, self.text = cfg, meta, model, codec, text_encoder
        self.device = device
        self.paradigm = cfg.model.paradigm
        self.sample_rate = int(codec.sample_rate)
        self.frame_rate = float(codec.frame_rate)

    @classmethod
    def load(cls, source: str | Path, device: str | torch.device | None = None, codec: str | None = None,
             tracking_uri: str | None = None) -> "Generator":
        from arfm.latents import load_latent
        from arfm.modeling import load_model_dir
        from arfm.text import build_text_encoder

        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        cfg, meta, model = load_model_dir(resolve_source(source, tracking_uri), dev)
        if meta.get("representation") == "vae":  # FM on the VAE latent: decode with that VAE
            codec_src = codec or meta.get("codec_path") or cfg.vae.path
        else:
            codec_src = codec or cfg.codec.pretrained or meta.get("codec_path") or cfg.codec.path
        try:
            codec_obj = load_latent(codec_src, device=dev)
        except Exception as exc:
            raise GenerationError(f"codec: cannot load {codec_src!r} recorded with the model ({exc}); "
                                  "pass codec=PATH") from exc
        if meta.get("codec") and codec_obj.identity != meta["codec"]:
            raise GenerationError(f"codec: {codec_src} is {codec_obj.identity}, but the model was trained on "
                                  f"{meta['codec']}")
        text = build_text_encoder(cfg.text, device=dev)
        if meta.get("text_encoder") and text.identity != meta["text_encoder"]:
            raise GenerationError(f"text: encoder {text.identity} differs from the training one "
                                  f"{meta['text_encoder']}")
        return cls(cfg, meta, model, codec_obj, text, dev)

    # ------------------------------------------------------------------------------------------------
    def n_frames(self, seconds: float | None) -> int:
        sec = float(seconds or self.cfg.data.segment_seconds)
        if sec <= 0 or sec > 600:
            raise GenerationError(f"seconds: {sec} is outside (0, 600]")
        return self.codec.n_frames(sec)

    def check(self, request: GenerationRequest, index: int = 0) -> int:
        """Everything about one request that can make it fail, checked before it joins a batch (so a bad
        request never fails the others of its batch); returns its number of frames. ``index`` names it."""
        if not request.caption or not isinstance(request.caption, str):
            raise GenerationError(f"requests[{index}].caption: a non-empty text is required")
        n = self.n_frames(request.seconds)
        names = set(self.cfg.model.controls)
        unknown = set(request.controls or {}) - names
        if unknown:
            raise GenerationError(f"controls: {sorted(unknown)} not known to this model (it takes "
                                  f"{sorted(names) or 'none'})")
        if request.controls:
            from arfm.controls import control_vocab

            vocab = control_vocab(int(self.meta["codebook_size"]))
            for name, seq in request.controls.items():
                bad = [int(v) for v in seq or () if not 0 <= int(v) < vocab[name]]
                if bad:
                    raise GenerationError(f"controls.{name}: index {bad[0]} outside [0, {vocab[name]})")
        if request.inpaint_span is not None:
            self._check_inpaint(request, index, n)
        return n

    def _check_inpaint(self, r: GenerationRequest, index: int, n: int) -> None:
        start_s, end_s = r.inpaint_span
        start, end = int(round(start_s * self.frame_rate)), int(round(end_s * self.frame_rate))
        if not 0 <= start < end <= n:
            raise GenerationError(f"inpaint_span: ({start_s}, {end_s}) s must lie inside the {n / self.frame_rate:g} s"
                                  " segment")
        if r.inpaint_audio is None:
            raise GenerationError(f"requests[{index}].inpaint_audio: reference audio is required with inpaint_span")
        mode = r.inpaint_mode
        if self.paradigm == "ar":
            if mode not in (None, "fim"):
                raise GenerationError(f"inpaint_mode: an AR model inpaints with 'fim', not {mode!r}")
            if self.cfg.model.inpainting != "fim":
                raise GenerationError("inpaint_mode: this AR model was trained without fill-in-the-middle "
                                      "(model.inpainting=fim), so it cannot inpaint")
            return
        supervised = self.cfg.model.inpainting == "supervised"
        mode = mode or ("supervised" if supervised else "zero_shot")
        if mode not in ("supervised", "zero_shot") or (mode == "supervised" and not supervised):
            allowed = "'supervised' or 'zero_shot'" if supervised else "'zero_shot' (trained without inpainting)"
            raise GenerationError(f"inpaint_mode: this FM model inpaints with {allowed}, not {mode!r}")

    def _controls(self, reqs: Sequence[GenerationRequest], n: int) -> dict[str, torch.Tensor] | None:
        """Per-frame control indices ``[B, n]`` of requests that passed :meth:`check`."""
        given = {k for r in reqs for k in (r.controls or {})}
        if not given:
            return None
        from arfm.controls import control_vocab

        vocab = control_vocab(int(self.meta["codebook_size"]))
        out = {}
        for name in given:
            rows = []
            for r in reqs:
                seq = [int(v) for v in ((r.controls or {}).get(name) or [])]
                if seq and len(seq) < n:  # hold the last value to the end of the segment
                    seq = seq + [seq[-1]] * (n - len(seq))
                rows.append(seq[:n] if seq else [vocab[name]] * n)  # vocab size is the learned null token
            out[name] = torch.tensor(rows, dtype=torch.long, device=self.device)
        return out

    def _generators(self, reqs: Sequence[GenerationRequest]) -> tuple[list[torch.Generator], list[int]]:
        """One generator per request, seeded with the request's own seed (a fresh random seed when it has none,
        reported in ``info["seed"]``): FM noise and AR sampling of a request draw from its generator only."""
        gens, seeds = [], []
        for r in reqs:
            seed = int(r.seed) if r.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            g = torch.Generator(device=self.device)
            g.manual_seed(seed)
            gens.append(g)
            seeds.append(seed)
        return gens, seeds

    def generate(self, requests: Sequence[GenerationRequest], sample: SampleConfig | Mapping[str, Any] | None = None,
                 batch_size: int = 16, return_entropy: bool = False) -> list[GenerationResult]:
        """Generate one result per request, in order, batching requests of the same length and kind.

        A request's audio depends on the request alone (its caption, controls, seed ...), never on the other
        requests of its batch: each request has its own random generator, captions are encoded padded to the
        encoder's fixed ``max_tokens``, and an FM model with an adaptive solver (``dopri5``, whose step size
        would follow the error of the whole batch) integrates each request on its own. The suite checks this
        bit for bit on CPU (tests/platform/test_generate.py). What stays shape-dependent is the rounding of
        the BLAS library: on CPU a matrix product of 1-3 rows takes another kernel than one of more rows, so an
        AR model's logits (and ``info["entropy"]``) can differ in the last bits between a request alone and in a
        batch, and a GPU library may choose kernels by batch shape too.
        """
        sc = _as_sample_config(sample, self.cfg.sample)
        if self.paradigm == "fm" and sc.solver not in FIXED_STEP:
            batch_size = 1
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            span = tuple(r.inpaint_span) if r.inpaint_span is not None else None
            key = (self.check(r, i), span, r.inpaint_mode)
            groups.setdefault(key, []).append(i)
        for (n, span, _), idx in groups.items():
            for j in range(0, len(idx), batch_size):
                chunk = idx[j: j + batch_size]
                outs = self._run([requests[i] for i in chunk], n, sc, span is not None, return_entropy)
                for i, res in zip(chunk, outs):
                    results[i] = res
        return [r for r in results if r is not None]

    @torch.no_grad()
    def _run(self, reqs: list[GenerationRequest], n: int, sc: SampleConfig, inpaint: bool,
             return_entropy: bool) -> list[GenerationResult]:
        t0 = time.perf_counter()
        # fixed-length text: the encoder and the cross-attention then see the same shapes whatever the batch
        text, mask = self.text.encode([r.caption for r in reqs], pad_to_max=True)
        text, mask = text.to(self.device), mask.to(self.device)
        controls = self._controls(reqs, n)
        gen, seeds = self._generators(reqs)
        info: dict[str, Any] = {"paradigm": self.paradigm, "frames": n, "batch": len(reqs), "cfg": sc.cfg,
                                "cfg_form": sc.cfg_form}
        if sc.cfg_all is not None:
            info["cfg_all"] = sc.cfg_all
        entropy = None
        if inpaint:
            audio = self._inpaint(reqs, n, text, mask, controls, sc, gen, info)
        elif self.paradigm == "ar":
            out = self.model.generate(text, mask, n, controls, temperature=sc.temperature, top_k=sc.top_k,
                                      top_p=sc.top_p, **_guidance(sc), return_entropy=return_entropy, generator=gen)
            codes, entropy = out if return_entropy else (out, None)
            audio = _each_clip(self.codec.decode_tokens, codes)
            info.update(temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p)
        else:
            latent, sinfo = self.model.sample(text, mask, n, controls, solver=sc.solver, steps=sc.steps,
                                              **_guidance(sc), rtol=sc.rtol, atol=sc.atol,
                                              time_shift=sc.time_shift, generator=gen)
            # float32 for the codec whatever the model's precision (bf16 weights on CUDA)
            audio = _each_clip(self.codec.decode_latent, self.codec.unnormalize(latent.float()))
            info.update(sinfo)
            info.update(cfg=sc.cfg)
        audio = audio[:, 0, : self.codec.n_samples(n / self.frame_rate)].float().cpu().numpy()
        info["latency_s"] = time.perf_counter() - t0
        results = []
        for k, r in enumerate(reqs):
            item = dict(info, seed=seeds[k])
            if entropy is not None:
                item["entropy"] = entropy[k].float().cpu().tolist()
            results.append(GenerationResult(audio=audio[k].astype(np.float32), sample_rate=self.sample_rate,
                                            caption=r.caption, info=item))
        return results

    def _inpaint(self, reqs, n, text, mask, controls, sc, gen, info) -> torch.Tensor:
        """Inpaint requests that passed :meth:`check` (so their span, reference audio and mode are valid)."""
        spans = {tuple(r.inpaint_span) for r in reqs}
        if len(spans) != 1:
            raise GenerationError("inpaint_span: requests batched together must share one span")
        start_s, end_s = spans.pop()
        start, end = int(round(start_s * self.frame_rate)), int(round(end_s * self.frame_rate))
        wav = []
        n_samples = self.codec.n_samples(n / self.frame_rate)
        for r in reqs:
            a = np.zeros(n_samples, np.float32)
            src = np.asarray(r.inpaint_audio, np.float32)[:n_samples]
            a[: len(src)] = src
            wav.append(a)
        audio = torch.from_numpy(np.stack(wav))[:, None].to(self.device)
        mode = reqs[0].inpaint_mode
        info.update(inpaint_start=start, inpaint_end=end)
        if self.paradigm == "ar":
            codes = _each_clip(self.codec.encode_tokens, audio)[..., :n]
            out = self.model.inpaint(codes, start, end, text, mask, controls, temperature=sc.temperature,
                                     top_k=sc.top_k, top_p=sc.top_p, **_guidance(sc), generator=gen)
            info["inpaint_mode"] = "fim"
            return _each_clip(self.codec.decode_tokens, out)
        mode = mode or ("supervised" if self.cfg.model.inpainting == "supervised" else "zero_shot")
        latent = self.codec.normalize(_each_clip(self.codec.encode_latent, audio))[:, :n]
        out, sinfo = self.model.inpaint(latent, start, end, text, mask, controls, mode=mode, solver=sc.solver,
                                        steps=sc.steps, **_guidance(sc), time_shift=sc.time_shift,
                                        generator=gen)
        info.update(sinfo)
        info["inpaint_mode"] = mode
        return _each_clip(self.codec.decode_latent, self.codec.unnormalize(out.float()))
