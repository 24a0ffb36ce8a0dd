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
    assert [c.name for c in s.cells] == ["fm-100hz-10s-b256-text", "fm-100hz-10s-b256-text-vae"]
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


def test_paper_inpainting_ar_cells_fine_tune_from_the_main_ar_cell(tmp_path):
    s = load_study(STUDY, "paper")
    by_name = {c.name: c for c in s.cells}
    assert s.source_cell(by_name["ar-50hz-10s-b256-inpainting"]).name == "ar-50hz-10s-b256-text"
    assert s.source_cell(by_name["fm-50hz-10s-b256-inpainting"]) is None  # FM trains from scratch
    assert s.source_cell(by_name["ar-50hz-10s-b256-text"]) is None
    waves = s.train_waves(s.cells)
    assert [c.name for c in waves[1]] == ["ar-50hz-10s-b256-inpainting"]
    assert sum(len(w) for w in waves) == len(s.cells)
    # selected alone, the source lies outside the selection: one wave, the source is looked up by the grid
    only = load_study(STUDY, "paper", only=["inpainting"])
    assert len(only.train_waves(only.cells)) == 1
    assert only.source_cell(next(c for c in only.cells if c.paradigm == "ar")).group == "main"
    q = load_study(STUDY, "quick")
    assert all(q.source_cell(c) is None for c in q.cells)  # the quick study trains every cell from scratch


def test_the_grid_gives_a_fine_tuned_cell_its_sources_run(tmp_path):
    from rich.console import Console

    from arfm.pipeline import StudyRunner

    s = load_study(STUDY, "paper")
    runner = StudyRunner(s, tmp_path, console=Console(file=open(tmp_path / "log", "w")))
    cell = next(c for c in s.cells if c.name == "ar-50hz-10s-b256-inpainting")
    runner._finished = lambda cfg, job: None
    assert runner._fine_tune_cfg(cell) is None  # the main AR cell has not finished
    runner._finished = lambda cfg, job: "a" * 32 if cfg.study_cell == "ar-50hz-10s-b256-text" else None
    cfg = runner._fine_tune_cfg(cell)
    assert cfg.train.init_from == f"runs:/{'a' * 32}/model" and cfg.model.inpainting == "fim"
    fm = next(c for c in s.cells if c.name == "fm-50hz-10s-b256-inpainting")
    assert runner._fine_tune_cfg(fm).train.init_from is None


def test_bad_init_from_rules_name_the_field(tmp_path):
    doc = {"studies": {"x": {"preset": "tiny", "groups": {
        "main": {"paradigm": ["ar"], "frame_rate": [50], "duration": [4.0], "batch_size": [8],
                 "conditioning": ["text"]},
        "inpainting": {"paradigm": ["ar"], "frame_rate": [25], "duration": [4.0], "batch_size": [8],
                       "conditioning": ["inpainting"]}},
        "init_from": {"inpainting": {"group": "main", "paradigms": ["ar"]}}}}}
    path = tmp_path / "study.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"studies\.x\.init_from\.inpainting: no text cell of group 'main'"):
        load_study(path, "x")
    doc["studies"]["x"]["init_from"] = {"inpainting": {"group": "nope"}}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"studies\.x\.init_from\.inpainting: groups"):
        load_study(path, "x")


def test_vae_cells_train_fm_on_the_vae_latent_and_ar_cannot(tmp_path):
    q = load_study(STUDY, "quick")
    vae = [c for c in q.cells if c.representation == "vae"]
    assert [c.name for c in vae] == ["fm-50hz-4s-b8-text-vae"] and q.vae_frame_rates == [50]
    cfg = cell_config(q, vae[0], tmp_path)
    assert cfg.model.representation == "vae" and cfg.vae.frame_rate == 50
    assert cfg.vae.path == str(tmp_path / "vae" / "50hz") and cfg.data.shards == str(tmp_path / "shards" / "50hz-4s")
    main_fm = next(c for c in q.cells if c.name == "fm-50hz-4s-b8-text")
    assert cell_config(q, main_fm, tmp_path).model.representation == "encodec"
    from arfm.study import vae_config

    assert vae_config(q, 50, tmp_path).vae.time_budget_s == q.vae_budget_s
    paper = load_study(STUDY, "paper")
    assert {f"fm-{fr}hz-10s-b256-text-vae" for fr in (25, 50, 100)} <= {c.name for c in paper.cells}
    bad = tmp_path / "bad.yaml"
    bad.write_text("studies:\n  s:\n    groups:\n      g: {paradigm: [ar, fm], frame_rate: [50], duration: [4.0], "
                   "batch_size: [8], conditioning: [text], representation: [vae]}\n")
    with pytest.raises(ConfigError, match=r"groups\.g\.representation: the VAE latent has no tokens"):
        load_study(bad, "s")
