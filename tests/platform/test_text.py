"""Text conditioners: shapes, masks, determinism, frozen weights, and the T5 loading path."""

from __future__ import annotations

import pytest
import torch

from arfm.config import TextConfig
from arfm.text import TextEncoderError, build_text_encoder, text_encoder_info, tiny_t5

CAPTIONS = ["upbeat jazz with walking bass, piano and brushed drums", "sad ambient pad"]


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder(TextConfig(encoder="minilm", max_tokens=16))


@pytest.fixture(scope="module")
def tiny():
    return build_text_encoder(TextConfig(encoder="tiny-t5", max_tokens=24))


def test_minilm_shapes_masks_and_padding(minilm):
    assert minilm.dim == 384
    assert "all-MiniLM-L6-v2" in minilm.identity
    feats, mask = minilm.encode(CAPTIONS)
    n_tok = [len(minilm.tokenizer(c)["input_ids"]) for c in CAPTIONS]
    assert feats.dtype == torch.float32 and mask.dtype == torch.bool
    assert feats.shape == (2, min(16, max(n_tok)), 384) and mask.shape == feats.shape[:2]
    assert mask.sum(1).tolist() == [min(16, n) for n in n_tok]  # truncated to max_tokens
    assert torch.all(feats[~mask] == 0) and feats[mask].abs().sum() > 0
    full, full_mask = minilm.encode(CAPTIONS, pad_to_max=True)
    assert full.shape == (2, 16, 384) and torch.equal(full_mask[:, : mask.shape[1]], mask)
    assert torch.allclose(full[:, : feats.shape[1]], feats, atol=1e-4)


def test_minilm_is_pretrained_and_deterministic(minilm):
    a, _ = minilm.encode(CAPTIONS)
    b, _ = minilm.encode(CAPTIONS)
    assert torch.equal(a, b)
    assert all(not p.requires_grad for p in minilm.model.parameters()) and not minilm.model.training
    # a pretrained sentence encoder puts paraphrases closer than unrelated captions
    f, m = minilm.encode(["a happy pop song with guitar", "cheerful pop music with guitars", "dark heavy metal"])
    pooled = torch.nn.functional.normalize((f * m[..., None]).sum(1) / m.sum(1, keepdim=True), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.1


def test_tiny_t5_shapes_and_determinism(tiny):
    assert tiny.dim == 64 and tiny.identity.startswith("tiny-t5")
    feats, mask = tiny.encode(["abc", "a longer caption that is cut"])
    assert feats.shape == (2, 24, 64)  # byte tokenizer: the long caption hits max_tokens
    assert mask.sum(1).tolist() == [4, 24]  # 3 bytes + </s>; the long one truncated
    again = build_text_encoder(TextConfig(encoder="tiny-t5", max_tokens=24))
    assert torch.equal(again.encode(["abc"])[0], tiny.encode(["abc"])[0])
    assert torch.all(feats[~mask] == 0)


def test_t5_path_loads_saved_checkpoint_like_the_hub(tmp_path, tiny):
    model, tok = tiny_t5()
    model.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    enc = build_text_encoder(TextConfig(encoder="t5", name_or_path=str(tmp_path / "t5"), max_tokens=24))
    assert enc.dim == 64 and enc.identity.startswith("t5:")
    a, ma = enc.encode(CAPTIONS)
    b, mb = tiny.encode(CAPTIONS)
    assert torch.equal(ma, mb) and torch.allclose(a, b, atol=1e-5)


def test_t5_unreachable_gives_clear_error(monkeypatch, tmp_path):
    import arfm.text

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TextEncoderError, match="disabled .*text.name_or_path=DIR"):
        build_text_encoder(TextConfig(encoder="t5", name_or_path="no-such-org/no-such-t5"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(arfm.text, "_hub_reachable", lambda timeout=3.0: False)  # offline without the variable
    with pytest.raises(TextEncoderError, match="not reachable.*text.name_or_path=DIR"):
        build_text_encoder(TextConfig(encoder="t5", name_or_path="no-such-org/no-such-t5"))


def test_info_without_loading_matches_the_built_encoders(minilm, tiny):
    for enc, cfg in [(minilm, TextConfig(encoder="minilm", max_tokens=16)),
                     (tiny, TextConfig(encoder="tiny-t5", max_tokens=24))]:
        assert text_encoder_info(cfg) == {"identity": enc.identity, "dim": enc.dim, "max_tokens": enc.max_tokens}
