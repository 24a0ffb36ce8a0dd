import dataclasses

import pytest
import torch

from arfm.config import CONTROL_NAMES, ModelConfig
from arfm.models.ar import ARModel
from arfm.models.build import SIZES, ARConfig, FMConfig, build_model, config_dict, count_parameters, make_config
from arfm.models.fm import FMModel

DIMS = {"text_dim": 768, "n_codebooks": 4, "codebook_size": 2048, "latent_dim": 128}
VOCAB = {"chords": 193, "melody": 54, "drums": 2048}


def test_paper_size_is_about_400m_parameters():
    with torch.device("meta"):
        ar = build_model("ar", preset="paper", **DIMS)
        fm = build_model("fm", preset="paper", **DIMS)
        fm_ctrl = build_model("fm", preset="paper", controls=VOCAB, **DIMS)
    n_ar, n_fm = count_parameters(ar), count_parameters(fm)
    assert 380e6 < n_ar < 450e6, n_ar
    assert 380e6 < n_fm < 460e6, n_fm
    assert len(ar.backbone.blocks) == 24 and ar.backbone.dim == 1024
    assert ar.backbone.blocks[0].ffn[0].out_features == 4096 and ar.backbone.blocks[0].self_attn.heads == 16
    # FM: U-Net skips (12 of them), no input embedding tables; controls add a small input projection
    assert len(fm.backbone.skips) == 12 and len(ar.backbone.skips) == 0
    assert 0 < count_parameters(fm_ctrl) - n_fm < 3e6


def test_builds_from_the_platform_model_config():
    for paradigm, inpainting in (("ar", "fim"), ("fm", "supervised"), ("ar", "none")):
        cfg = ModelConfig(paradigm=paradigm, layers=2, dim=64, heads=4, ffn=128, controls=["chords", "melody"],
                          inpainting=inpainting)
        kwargs = cfg.model_dump()
        kwargs.pop("representation")  # which latent the data holds: the model sees it only as latent_dim
        kwargs["controls"] = {n: VOCAB[n] for n in cfg.controls}
        model = build_model(**kwargs, text_dim=16, n_codebooks=4, codebook_size=32, latent_dim=8)
        assert isinstance(model, ARModel if paradigm == "ar" else FMModel)
        assert model.config.unet_skips == cfg.use_unet_skips
        assert model.controls.names == ["chords", "melody"]
        if paradigm == "ar":
            assert model.config.fim == (inpainting == "fim")
        else:
            assert model.config.supervised_inpainting
    assert set(CONTROL_NAMES) == set(VOCAB)


def test_config_roundtrip_and_errors():
    cfg = make_config("fm", preset="tiny", text_dim=16, latent_dim=8, controls={"chords": 193})
    assert isinstance(cfg, FMConfig) and cfg.layers == SIZES["tiny"]["layers"] and cfg.unet_skips is True
    assert make_config(**config_dict(cfg)) == cfg
    ar = make_config("ar", preset="tiny", text_dim=16)
    assert isinstance(ar, ARConfig) and ar.unet_skips is False
    assert dataclasses.asdict(make_config("ar", unet_skips=True)).get("unet_skips") is True
    with pytest.raises(TypeError, match="unknown argument"):
        build_model("ar", preset="tiny", layerz=3)
    with pytest.raises(ValueError):
        build_model("fm", preset="tiny", inpainting="fim")
    with pytest.raises(ValueError):
        build_model("ar", preset="tiny", dim=65, heads=4)
    with pytest.raises(TypeError):
        build_model("ar", preset="tiny", controls=["chords"])
    with pytest.raises(ValueError):
        build_model("gan")


def test_models_run_in_other_dtypes():
    """dtype-agnostic: a float64 FM model samples in float64; a bfloat16 AR model computes its loss."""
    fm = build_model("fm", preset="tiny", text_dim=16, latent_dim=8).double().eval()
    x, _ = fm.sample(torch.randn(1, 3, 16, dtype=torch.float64), None, 6, steps=2)
    assert x.dtype == torch.float64
    ar = build_model("ar", preset="tiny", text_dim=16, n_codebooks=2, codebook_size=16).to(torch.bfloat16)
    out = ar({"tokens": torch.randint(0, 16, (1, 2, 6)), "text": torch.randn(1, 3, 16), "text_mask": None})
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
