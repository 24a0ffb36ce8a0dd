"""The study matrix: expansion, selection, per-cell configs."""

from pathlib import Path

import pytest

from arfm.config import ConfigError
from arfm.study import cell_config, codec_config, load_study

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "study.yaml"


def test_paper_matrix_covers_the_papers_experiments():
    s = load_study(STUDY, "paper")
    names = {c.name for c in s.cells}
    for fr in (25, 50, 100):
        assert {f"ar-{fr}hz-10s-b256-text", f"fm-{fr}hz-10s-b256-text"} <= names  # table 2
    assert "fm-25hz-40s-b256-text" in names  # table 7
    assert {f"ar-50hz-30s-b{b}-text" for b in (8, 16, 32, 64, 128)} <= names  # figure 8
    assert {"ar-50hz-10s-b256-controls", "fm-50hz-10s-b256-inpainting"} <= names  # tables 3, 4
    assert len(names) == len(s.cells)  # no duplicates
    assert s.frame_rates == [25, 50, 100]


def test_only_selects_and_rejects(tmp_path):
    s = load_study(STUDY, "paper", only=["controls"])
    assert {c.conditioning for c in s.cells} == {"controls"}
    s = load_study(STUDY, "paper", only=["fm-100hz"])
    assert [c.name for c in s.cells] == ["fm-100hz-10s-b256-text"]
    with pytest.raises(ConfigError, match="--only"):
        load_study(STUDY, "paper", only=["nothing-like-this"])
    with pytest.raises(ConfigError, match="unknown study"):
        load_study(STUDY, "nope")


def test_cell_configs(tmp_path):
    s = load_study(STUDY, "paper")
    cell = next(c for c in s.cells if c.name == "fm-50hz-10s-b256-inpainting")
    cfg = cell_config(s, cell, tmp_path, ["train.steps=7"])
    assert cfg.model.paradigm == "fm" and cfg.model.inpainting == "supervised"
    assert cfg.codec.frame_rate == 50 and cfg.train.batch_size == 256 and cfg.train.steps == 7
    assert cfg.study_cell == cell.name and cfg.tracking.experiment == "arfm-paper"
    assert cfg.data.shards.endswith("50hz-10s") and cfg.model.layers == 24
    ctrl = next(c for c in s.cells if c.name == "ar-50hz-10s-b256-controls")
    assert cell_config(s, ctrl, tmp_path).model.controls == ["chords", "melody", "drums"]
    q = load_study(STUDY, "quick")
    assert codec_config(q, 50, tmp_path).codec.time_budget_s == q.codec_budget_s
    with pytest.raises(ConfigError, match="model.layers"):
        cell_config(q, q.cells[0], tmp_path, ["model.layers=-1"])
