"""The dataset manifest helpers and the `arfm data` command group's option checks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from arfm.cli import app
from arfm.data.manifest import ManifestError, load_audio, read_manifest, save_audio, write_manifest

runner = CliRunner()


def _row(i: int, split: str = "train") -> dict:
    return {"id": f"c{i}", "path": f"audio/c{i}.wav", "caption": f"clip {i}", "split": split, "seconds": 0.5,
            "sample_rate": 32000, "labels": None}


def test_manifest_roundtrip_and_audio(tmp_path):
    x = (0.5 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    save_audio(tmp_path / "audio" / "c0.wav", x, 32000)
    save_audio(tmp_path / "audio" / "c1.wav", np.clip(x * 4, -3, 3), 32000)  # clipped to [-1, 1]
    rows = [_row(0), _row(1, "valid")]
    write_manifest(tmp_path, rows)
    assert read_manifest(tmp_path) == rows
    assert [r["id"] for r in read_manifest(tmp_path, split="valid")] == ["c1"]
    y = load_audio(tmp_path, rows[0])
    assert y.dtype == np.float32 and np.abs(y - x).max() < 1e-4
    assert np.abs(load_audio(tmp_path, rows[1])).max() <= 1.0
    assert sf.info(str(tmp_path / "audio" / "c0.wav")).subtype == "PCM_16"
    sf.write(tmp_path / "audio" / "st.wav", np.stack([x, -x], 1), 16000)
    with pytest.raises(ManifestError, match="16000 Hz, expected 32000"):
        load_audio(tmp_path, {**_row(2), "path": "audio/st.wav"})


def test_manifest_errors_name_the_line(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ManifestError, match="line 1: missing key"):
        read_manifest(tmp_path)
    bad = {**_row(0), "split": "test"}
    with pytest.raises(ManifestError, match="row 1.*split"):
        write_manifest(tmp_path, [bad])


@pytest.mark.parametrize("args, option", [
    (["--n", "0"], "--n"),
    (["--seconds", "-2"], "--seconds"),
    (["--seed", "-1"], "--seed"),
    (["--workers", "0"], "--workers"),
    (["--genre", "polka"], "--genre"),
    (["--valid-fraction", "1.5"], "--valid-fraction"),
    (["--set", "data.synth_clips=0"], "data.synth_clips"),
])
def test_synth_rejects_bad_values_naming_the_option(tmp_path, args, option):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code != 0
    assert option in result.output
    assert not (tmp_path / "d" / "manifest.jsonl").exists()


def test_synth_uses_config_defaults(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--preset", "tiny", "--set", "data.synth_clips=2",
                                 "--set", f"data.dataset={tmp_path / 'd'}", "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = read_manifest(tmp_path / "d")
    assert len(rows) == 2 and all(r["seconds"] == 4.0 for r in rows)  # tiny preset: 4 s clips
    assert [r["split"] for r in rows] == ["train", "valid"]


def test_help_lists_commands_with_examples():
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0 and "synth" in result.output and "ingest" in result.output
    for cmd in ("synth", "ingest"):
        result = runner.invoke(app, ["data", cmd, "--help"])
        assert result.exit_code == 0 and "Examples" in result.output and f"arfm data {cmd}" in result.output
