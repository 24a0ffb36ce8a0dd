"""Presets against the paper: T5 text, appendix-D AR sampling, dopri5, codec steps; top-k xor top-p."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from arfm.cli import app
from arfm.config import PRESETS, ConfigError, merge_sample, resolve
from arfm.study import cell_config, load_study

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "study.yaml"
# Appendix D's AR search space: temperature with top-p or top-k.
TEMPERATURES, TOP_PS, TOP_KS = {1.2, 1.4, 1.6, 2.0, 2.4, 2.8}, {0.6, 0.8}, {250, 500}


def _in_appendix_d(sample) -> bool:
    return sample.temperature in TEMPERATURES and (
        (sample.top_p in TOP_PS and sample.top_k == 0) or (sample.top_k in TOP_KS and sample.top_p == 0))


def test_config_show_paper_is_the_papers_model():
    result = CliRunner().invoke(app, ["config", "show", "--preset", "paper"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["text"]["encoder"] == "t5"
    assert shown["sample"]["solver"] == "dopri5"
    assert shown["codec"]["steps"] == 400_000
    assert _in_appendix_d(resolve("paper").sample)
    assert shown["sample"]["temperature"] == resolve("paper").sample.temperature


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_samples_ar_inside_appendix_d(preset):
    assert _in_appendix_d(resolve(preset).sample)


def test_minilm_stays_the_offline_default_of_the_small_presets():
    assert resolve("tiny").text.encoder == resolve("small").text.encoder == "minilm"


def test_top_k_and_top_p_together_are_rejected_naming_the_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"sample.*sample\.top_k=250 and sample\.top_p=0\.6 are both set"):
        resolve("paper", overrides=["sample.top_k=250", "sample.top_p=0.6"])
    # one of them set above the preset replaces the other: top-k alone, or top-p alone
    top_k = resolve("paper", overrides=["sample.top_k=250"]).sample
    assert (top_k.top_k, top_k.top_p) == (250, 0)
    (tmp_path / "c.yaml").write_text("sample: {top_k: 500}\n")
    from_file = resolve("paper", config_file=tmp_path / "c.yaml").sample
    assert (from_file.top_k, from_file.top_p) == (500, 0)
    back = resolve("paper", config_file=tmp_path / "c.yaml", overrides=["sample.top_p=0.6"]).sample
    assert (back.top_k, back.top_p) == (0, 0.6)


def test_sampling_overrides_replace_the_other_truncation():
    base = resolve("tiny").sample.model_dump()
    assert (merge_sample(base, {"top_k": 1})["top_p"], merge_sample(base, {"top_k": 1})["top_k"]) == (0, 1)
    assert merge_sample({**base, "top_p": 0, "top_k": 250}, {"top_p": 0.8})["top_k"] == 0
    assert merge_sample(base, {"temperature": 2.0})["top_p"] == 0.8  # untouched when neither is set


def test_paper_study_uses_t5_and_quick_study_keeps_its_own_sampling(tmp_path):
    paper = load_study(STUDY, "paper")
    for cell in paper.cells[:3]:
        cfg = cell_config(paper, cell, tmp_path)
        assert cfg.text.encoder == "t5" and cfg.sample.solver == "dopri5"
    quick = load_study(STUDY, "quick")
    assert quick.overrides["sample.temperature"] == 1.2 and quick.overrides["sample.top_p"] == 0.8
    for cell in quick.cells:
        s = cell_config(quick, cell, tmp_path).sample
        assert (s.temperature, s.top_p, s.top_k, s.solver, s.steps) == (1.2, 0.8, 0, "euler", 32)
        assert cell_config(quick, cell, tmp_path).text.encoder == "minilm"


def test_cfg_form_fields_are_checked_by_name():
    assert resolve("tiny", overrides=["sample.cfg_form=jasco", "sample.cfg_all=4.0"]).sample.cfg_all == 4.0
    with pytest.raises(ConfigError, match=r"sample\.cfg_all: sample\.cfg_form=jasco needs w_all"):
        resolve("tiny", overrides=["sample.cfg_form=jasco"])
    with pytest.raises(ConfigError, match=r"sample\.control_cfg: per-control weights belong"):
        resolve("tiny", overrides=["sample.cfg_form=jasco", "sample.cfg_all=4.0", "sample.control_cfg={chords: 2}"])
    with pytest.raises(ConfigError, match=r"sample\.cfg_all: JASCO's w_all needs sample\.cfg_form=jasco"):
        resolve("tiny", overrides=["sample.cfg_all=4.0"])


def test_ar_on_the_vae_latent_fails_validation_naming_representation():
    with pytest.raises(ConfigError, match=r"model\.representation=vae .*AR model"):
        resolve("tiny", overrides=["model.paradigm=ar", "model.representation=vae"])
    cfg = resolve("tiny", overrides=["model.paradigm=fm", "model.representation=vae"])
    assert cfg.model.representation == "vae" and cfg.vae.latent_dim == 64
    paper = resolve("paper")
    assert paper.vae.channels == [128, 256, 512, 1024, 2048] and paper.vae.kl_weight == 1e-3
    assert (paper.vae.batch_size, paper.vae.lr, paper.vae.steps) == (64, 3e-4, 400_000)
