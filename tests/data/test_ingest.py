"""`arfm data ingest`: bad files are reported and skipped, good ones are resampled and cut; captions required."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from arfm.cli import app
from arfm.data.ingest import IngestError, folder_sources, read_sources, wav_truncation
from arfm.data.manifest import load_audio, read_manifest

runner = CliRunner()


def _tone(seconds: float, sr: int, hz: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


@pytest.fixture()
def corpus(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "good.wav", _tone(25.0, 44100, channels=2), 44100, subtype="PCM_16")  # 2 segments of 10 s
    sf.write(src / "full.wav", _tone(20.0, 44100), 44100, subtype="PCM_16")
    data = (src / "full.wav").read_bytes()
    (src / "truncated.wav").write_bytes(data[: len(data) // 2])  # header says 20 s, file holds ~10 s
    (src / "full.wav").unlink()
    sf.write(src / "silent.wav", np.zeros(15 * 32000, dtype=np.float32), 32000, subtype="PCM_16")
    (src / "text.wav").write_text("this is a text file, not audio\n" * 20)
    sf.write(src / "short.wav", _tone(3.0, 32000), 32000, subtype="PCM_16")
    rows = [{"path": f"src/{name}.wav", "caption": f"a recording called {name}"}
            for name in ("good", "truncated", "silent", "text", "short", "missing")]
    manifest = tmp_path / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, manifest


def test_ingest_skips_and_reports_bad_files(corpus):
    root, manifest = corpus
    out = root / "out"
    result = runner.invoke(app, ["data", "ingest", "--manifest", str(manifest), "--out", str(out),
                                 "--segment-seconds", "10", "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = read_manifest(out)
    assert [r["id"].rsplit("-", 1)[1] for r in rows] == ["0000", "0001"]  # 25 s -> 2 segments, 5 s dropped
    for r in rows:
        assert r["caption"] == "a recording called good" and r["labels"] is None
        assert r["sample_rate"] == 32000 and r["seconds"] == 10.0 and r["split"] in ("train", "valid")
        info = sf.info(str(out / r["path"]))
        assert (info.samplerate, info.channels, info.frames) == (32000, 1, 320000)
        x = load_audio(out, r).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(x))
        assert abs(np.argmax(spectrum) * 32000 / len(x) - 1000.0) < 1.0  # resampled, pitch kept
    assert len({r["split"] for r in rows}) == 1  # segments of one file stay in one split

    report = json.loads((out / "report.json").read_text())
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {f"src/{n}.wav" for n in ("truncated", "silent", "text", "short", "missing")}
    assert reasons["src/truncated.wav"].startswith("truncated")
    assert reasons["src/silent.wav"].startswith("silent")
    assert reasons["src/text.wav"].startswith("unreadable")
    assert reasons["src/short.wav"].startswith("too short")
    assert reasons["src/missing.wav"].startswith("missing")
    assert report["files_ok"] == 1 and report["segments"] == 2
    for path in reasons:  # the printed table names every skipped file
        assert path.split("/")[-1] in result.output


def test_missing_caption_is_an_error_naming_the_row(corpus):
    root, _ = corpus
    manifest = root / "bad.jsonl"
    manifest.write_text(json.dumps({"path": "src/good.wav", "caption": "fine"}) + "\n"
                        + json.dumps({"path": "src/short.wav", "caption": "  "}) + "\n")
    result = runner.invoke(app, ["data", "ingest", "--manifest", str(manifest), "--out", str(root / "o")])
    assert result.exit_code != 0
    assert "row 2" in result.output and "src/short.wav" in result.output and "caption" in result.output
    assert not (root / "o" / "manifest.jsonl").exists()

    csv = root / "bad.csv"
    csv.write_text("path,caption,split\nsrc/good.wav,fine,train\nsrc/short.wav,,valid\n")
    with pytest.raises(IngestError, match=r"row 2 \(line 3 of bad.csv\), path 'src/short.wav': missing caption"):
        read_sources(csv)


def test_csv_split_column_and_bad_split(corpus):
    root, _ = corpus
    csv = root / "c.csv"
    csv.write_text('path,caption,split\nsrc/good.wav,"strings, slow",valid\n')
    out = root / "out_csv"
    result = runner.invoke(app, ["data", "ingest", "--manifest", str(csv), "--out", str(out), "--workers", "1",
                                 "--segment-seconds", "5"])
    assert result.exit_code == 0, result.output
    rows = read_manifest(out)
    assert len(rows) == 5 and {r["split"] for r in rows} == {"valid"} and rows[0]["caption"] == "strings, slow"
    csv.write_text("path,caption,split\nsrc/good.wav,x,test\n")
    with pytest.raises(IngestError, match="row 1.*split"):
        read_sources(csv)


def test_folder_with_sidecar_captions(tmp_path):
    sf.write(tmp_path / "a.flac", _tone(12.0, 48000), 48000)
    (tmp_path / "a.txt").write_text("calm piano\n")
    sources = folder_sources(tmp_path)
    assert [(s.shown, s.caption) for s in sources] == [("a.flac", "calm piano")]
    sf.write(tmp_path / "b.wav", _tone(12.0, 48000), 48000)
    with pytest.raises(IngestError, match=r"row 2, path 'b.wav': missing caption"):
        folder_sources(tmp_path)
    result = runner.invoke(app, ["data", "ingest", "--folder", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "b.wav" in result.output


def test_all_bad_exits_nonzero_and_options_are_checked(corpus):
    root, _ = corpus
    manifest = root / "bad_only.jsonl"
    manifest.write_text(json.dumps({"path": "src/text.wav", "caption": "x"}) + "\n")
    result = runner.invoke(app, ["data", "ingest", "--manifest", str(manifest), "--out", str(root / "o2")])
    assert result.exit_code == 1 and "no usable audio" in result.output
    assert json.loads((root / "o2" / "report.json").read_text())["skipped"][0]["path"] == "src/text.wav"
    result = runner.invoke(app, ["data", "ingest", "--manifest", str(manifest), "--out", str(root / "o3"),
                                 "--segment-seconds", "-1"])
    assert result.exit_code != 0 and "--segment-seconds" in result.output
    result = runner.invoke(app, ["data", "ingest", "--out", str(root / "o4")])
    assert result.exit_code != 0 and "--manifest" in result.output


def test_wav_truncation_detects_a_cut_file(tmp_path):
    sf.write(tmp_path / "x.wav", _tone(1.0, 16000), 16000, subtype="PCM_16")
    assert wav_truncation(tmp_path / "x.wav") is None
    data = (tmp_path / "x.wav").read_bytes()
    (tmp_path / "y.wav").write_bytes(data[:-100])
    assert "truncated" in wav_truncation(tmp_path / "y.wav")


def test_small_corpus_still_gets_a_valid_file(tmp_path):
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"t{i}.wav", _tone(10.0, 32000, hz=300.0 + 100 * i), 32000)
        rows.append({"path": f"t{i}.wav", "caption": f"tone {i}"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["data", "ingest", "--manifest", str(tmp_path / "m.jsonl"), "--out",
                                 str(tmp_path / "o"), "--workers", "1", "--valid-fraction", "0.01"])
    assert result.exit_code == 0, result.output
    splits = [r["split"] for r in read_manifest(tmp_path / "o")]
    assert sorted(splits) == ["train", "train", "valid"]
