"""CLAP text–audio cosine similarity (section 4.3; Wu/Chen et al., 2023, LAION-CLAP).

For each generated clip ``a`` with caption ``c``: ``clap = cos(E_audio(a), E_text(c))`` with the official
LAION-CLAP model (the paper: HTSAT-base, ``music_audioset_epoch_15_esc_90.14.pt``, non-fusion, as in
audiocraft's ``TextConsistencyMetric``). Audio is resampled to 48 kHz and LAION-CLAP's
``get_audio_embedding_from_data`` embeds 10 s (repeat-padded when shorter, a random 10 s crop when longer:
LAION-CLAP's ``rand_trunc``); the dataset value is the mean over clips.

The weights are never downloaded here: give ``eval.clap_checkpoint`` (a local ``.pt``). Without it the result
is skipped with a reason; ``import laion_clap`` fetches tokenizers from the Hugging Face hub at import time,
so it happens only when a checkpoint is given (a cached ``roberta-base`` tokenizer works offline).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from arfm.evaluate.audio import as_mono, resample
from arfm.evaluate.results import MetricResult

CLAP_SR = 48000
METHOD = "laion-clap"


class ClapUnavailable(RuntimeError):
    pass


# files LAION-CLAP loads with from_pretrained when imported / built (RoBERTa is its text encoder)
HUB_FILES = {"roberta-base": ("config.json", "vocab.json", "merges.txt"), "bert-base-uncased": ("vocab.txt",),
             "facebook/bart-base": ("vocab.json",)}


from arfm.hub import hub_reachable as _hub_reachable  # noqa: E402  (tests patch this name)


@contextmanager
def _hub_access():
    """Fail in seconds, not after minutes of retries: when the hub is unreachable, require the files LAION-CLAP
    needs to be in the local Hugging Face cache and load them in offline mode."""
    from huggingface_hub import constants, try_to_load_from_cache

    if _hub_reachable():
        yield
        return
    missing = [f"{repo}/{f}" for repo, files in HUB_FILES.items() for f in files
               if not isinstance(try_to_load_from_cache(repo, f), str)]
    if missing:
        raise ClapUnavailable("the Hugging Face hub is unreachable and LAION-CLAP's text-side files are not in the "
                              f"local cache ({', '.join(missing)})")
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


class ClapScorer:
    """Loads LAION-CLAP once; ``score(audios, captions, sample_rate)`` returns per-clip cosine similarities."""

    def __init__(self, checkpoint: str, amodel: str = "HTSAT-base", enable_fusion: bool = False,
                 device: str | None = None):
        import torch

        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ClapUnavailable(f"CLAP checkpoint {checkpoint!r} is not a file")
        try:
            ck = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ClapUnavailable(
                f"{path} does not load with torch.load(weights_only=True) ({type(exc).__name__}); if you trust "
                "it, re-save its state_dict: torch.save(torch.load(p, weights_only=False)['state_dict'], out)") from exc
        sd = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
        if not isinstance(sd, dict):
            raise ClapUnavailable(f"{path} holds no state dict")
        sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with _hub_access():
            try:
                import laion_clap  # fetches tokenizers at import time
            except Exception as exc:  # noqa: BLE001
                raise ClapUnavailable(
                    f"laion_clap could not be imported ({type(exc).__name__}: {exc}); it needs the roberta-base, "
                    "bert-base-uncased and facebook/bart-base files from the Hugging Face hub or its cache") from exc
            try:
                self.model = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device=self.device)
                own = self.model.model.state_dict()
                # RoBERTa's position_ids buffer is in the state dict only for some transformers versions
                sd = {k: v for k, v in sd.items() if not (k.endswith("position_ids") and k not in own)}
                for k, v in own.items():
                    if k.endswith("position_ids") and k not in sd:
                        sd[k] = v
                self.model.model.load_state_dict(sd)
                self.model.eval()
            except Exception as exc:  # noqa: BLE001
                raise ClapUnavailable(f"CLAP model {amodel} could not load {path} ({type(exc).__name__}: {exc})") \
                    from exc
        self.identity = f"{METHOD}:{amodel}:{path.name}"

    def score(self, audios: Sequence[Any], captions: Sequence[str], sample_rate: int,
              batch_size: int = 16) -> list[float]:
        import torch

        if len(audios) != len(captions):
            raise ValueError(f"{len(audios)} clips but {len(captions)} captions")
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(audios), batch_size):
                wavs = [resample(as_mono(a), sample_rate, CLAP_SR) for a in audios[i:i + batch_size]]
                # a list of 1-D arrays: LAION-CLAP pads/crops each clip on its own
                a = np.asarray(self.model.get_audio_embedding_from_data(wavs, use_tensor=False))
                t = np.asarray(self.model.get_text_embedding(list(captions[i:i + batch_size]), use_tensor=False))
                a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
                t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-8)
                out.extend(float(v) for v in np.sum(a * t, axis=-1))
        return out


_SCORERS: dict[tuple[str, str], ClapScorer] = {}


def clap_score(audios: Sequence[Any], captions: Sequence[str], sample_rate: int, checkpoint: str | None,
               amodel: str = "HTSAT-base", scorer: ClapScorer | None = None) -> MetricResult:
    """Mean CLAP cosine similarity over clips, or a skipped result saying why it could not run."""
    if scorer is None:
        if not checkpoint:
            return MetricResult.skip("clap", "no CLAP checkpoint given: set eval.clap_checkpoint to a LAION-CLAP "
                                     ".pt (the paper's: music_audioset_epoch_15_esc_90.14.pt, HTSAT-base)", METHOD)
        key = (str(checkpoint), amodel)
        try:
            scorer = _SCORERS.get(key) or ClapScorer(checkpoint, amodel=amodel)
        except ClapUnavailable as exc:
            return MetricResult.skip("clap", str(exc), METHOD)
        _SCORERS[key] = scorer
    values = scorer.score(audios, captions, sample_rate)
    return MetricResult.from_samples("clap", values, getattr(scorer, "identity", METHOD))
