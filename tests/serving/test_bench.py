"""The inference benchmark runs end to end at its smallest configuration and writes what it promises.

No timing is asserted: the figures of the smoke preset mean nothing; what is checked is that every ratio and
every figure is measured, finite and positive, and that the JSON and the PNGs are written.
"""

import json
import math

import pytest

from arfm.serving import bench


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray import serve

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


def test_smoke_bench_writes_ratios_figures_and_plots(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    report = bench.run("smoke", tmp_path / "out", device="cpu", log=lambda *_: None)

    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert set(data["ratios"]) == set(bench.TARGETS)
    for key, r in data["ratios"].items():
        assert math.isfinite(r["value"]) and r["value"] > 0, (key, r)
        assert r["target"] == f"{bench.TARGETS[key][0]} {bench.TARGETS[key][1]}"
        assert "median" in r["detail"]["method"]
    figs = data["figures"]
    assert set(figs) == {"figure5", "figure6_7", "figure10"}
    s = bench.PRESETS["smoke"]
    expected = {"figure5": len(s["figure5"]["batches"]) * (len(s["euler_steps"]) + 2),
                "figure6_7": len(s["figure6_7"]["layers"]) * 2 * len(s["figure6_7"]["seconds"]),
                "figure10": len(s["figure10"]["layers"]) * len(s["figure10"]["batches"]) * 2}
    for name, fig in figs.items():
        assert "median" in fig["method"]
        assert len(fig["bare"]) == expected[name], name
        for row in fig["bare"]:
            assert math.isfinite(row["latency_s"]) and row["latency_s"] > 0, (name, row)
    serve_rows = figs["figure5"]["serve"]
    assert {(r["method"], r["batch"]) for r in serve_rows} == {
        (m, b) for m in ("ar-kv", f"fm-euler{s['serve']['fm_steps']}") for b in s["serve"]["batches"]}
    assert all(r["batch_sizes"] == [r["batch"]] for r in serve_rows)  # each burst was one Serve batch
    assert sorted(p.split("/")[-1] for p in data["plots"]) == [
        "figure10_layers.png", "figure5_batch.png", "figure6_7_duration.png", "ratios.png"]
    for p in data["plots"]:
        assert (tmp_path / "out" / p.split("/")[-1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(report["mlflow_run_id"])
    assert set(run.data.metrics) == set(bench.TARGETS)


def test_unknown_preset_and_part_are_named():
    with pytest.raises(ValueError, match="--preset 'huge'"):
        bench.run("huge", "unused")
    with pytest.raises(ValueError, match="figure9"):
        bench.run("smoke", "unused", parts=["figure9"])
