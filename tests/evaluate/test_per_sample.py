"""The eval/per_sample.json format shared by the evaluation job and the report."""

import json

import pytest

from arfm.evaluate.per_sample import PerSample, read_per_sample
from arfm.evaluate.results import MetricResult, metric_key, parse_metric_key


def test_round_trip_and_aggregates(tmp_path):
    ps = PerSample(ids=["a", "b", "c"], captions=["x", "y", "z"])
    ps.add(MetricResult.from_samples("chord_iou", [0.5, None, 1.0], "chroma-template vs labels, tetrads",
                                     fallback="chroma-template used because Chordino unavailable: ImportError"))
    ps.add(MetricResult.from_samples("clap", [0.2, 0.3, 0.4], "fake"), variant="euler10")
    ps.add(MetricResult("fad", 1.5, "mel-offline", ci=(1.0, 2.0),
                        extra={"model": "mel-offline", "n": 3, "ci_method": "95% basic bootstrap"}))
    ps.add(MetricResult.skip("pq", "no checkpoint", "audiobox-aesthetics"))
    ps.add_entropy([[1.0, 2.0], [3.0]])
    ps.notes.append("8 asked, 3 clips")
    path = ps.write(tmp_path / "eval" / "per_sample.json")
    doc = read_per_sample(path)
    assert doc["n"] == 3 and doc["ids"] == ["a", "b", "c"]
    assert doc["per_sample"]["chord_iou"] == [0.5, None, 1.0]
    assert doc["per_sample"]["euler10/clap"] == [0.2, 0.3, 0.4]
    assert doc["set"]["fad"] == {"value": 1.5, "ci": [1.0, 2.0], "n": 3, "model": "mel-offline",
                                 "ci_method": "95% basic bootstrap"}
    assert doc["skipped"] == {"pq": "no checkpoint"} and doc["methods"]["fad"] == "mel-offline"
    assert doc["entropy"] == {"": [[1.0, 2.0], [3.0]]} and doc["notes"] == ["8 asked, 3 clips"]
    assert doc["intervals"]["chord_iou"] == "95% t interval of the mean (scipy ttest_1samp)"
    assert doc["fallbacks"] == {"chord_iou": "chroma-template used because Chordino unavailable: ImportError"}
    # one MLflow tag per metric: what produced it, how its interval was computed, the fallback or skip reason
    tags = ps.tags()
    assert tags["eval/chord_iou.method"] == ("chroma-template vs labels, tetrads; 95% t interval of the mean "
                                            "(scipy ttest_1samp); chroma-template used because Chordino "
                                            "unavailable: ImportError")
    assert tags["eval/fad.method"] == "mel-offline; 95% basic bootstrap"
    assert tags["eval/pq.method"] == "audiobox-aesthetics; skipped: no checkpoint"
    assert set(tags) == {"eval/chord_iou.method", "eval/euler10/clap.method", "eval/fad.method", "eval/pq.method"}
    m = ps.metrics()
    assert m == pytest.approx({"eval/chord_iou": 0.75, "eval/euler10/clap": 0.3, "eval/fad": 1.5})
    (tmp_path / "bad.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError):
        read_per_sample(tmp_path / "bad.json")


def test_metric_keys():
    assert metric_key("fad") == "eval/fad" and metric_key("fad", "euler10") == "eval/euler10/fad"
    assert parse_metric_key("eval/euler10/fad") == ("euler10", "fad")
    assert parse_metric_key("eval/clap") == (None, "clap") and parse_metric_key("train/loss") is None
    with pytest.raises(ValueError):
        metric_key("a/b")
