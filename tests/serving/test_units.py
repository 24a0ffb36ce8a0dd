"""Serving pieces without a running Serve: settings and the Ray Serve config file, the conversion of requests,
the health check of a model replica, the load generator's bounds and the ingress's timeout."""

import asyncio
import io

import numpy as np
import pytest
import soundfile as sf
import yaml

from arfm.config import ConfigError
from arfm.serving import config as sc
from arfm.serving import inputs
from arfm.serving.inputs import FieldError

TINY = ["text.encoder=tiny-t5", "data.segment_seconds=1"]


# --------------------------------------------------------------------------------------------- settings
def test_a_preset_config_binds_loopback_and_keeps_batches_uncapped():
    cfg = sc.preset_config("tiny", random_init=True)
    assert cfg.host == "127.0.0.1" and [m.name for m in cfg.models] == ["ar", "fm"]
    opts = cfg.models[0].deployment_options()
    assert opts["max_ongoing_requests"] >= cfg.models[0].batch.max_batch_size
    assert opts["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}


@pytest.mark.parametrize("data,field", [
    ({"models": []}, "models"),
    ({"models": [{"name": "a"}]}, "exactly one of source and random_init"),
    ({"models": [{"name": "a", "random_init": "ar", "max_ongoing_requests": 4}]}, "would cap every batch"),
    ({"models": [{"name": "a", "random_init": "ar", "sample": {"cfg": -1}}]}, "cfg"),
    ({"models": [{"name": "a", "random_init": "ar", "precision": "bf16"}]}, "needs device=cuda"),
    ({"models": [{"name": "a b", "random_init": "ar"}]}, "models.0.name"),
    ({"models": [{"name": "a", "random_init": "ar"}, {"name": "a", "random_init": "fm"}]}, "unique"),
    ({"models": [{"name": "a", "random_init": "ar", "batch": {"max_batch_size": 0}}]}, "max_batch_size"),
])
def test_bad_serve_settings_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field):
        sc.validate(data)


def test_the_ray_serve_config_file_round_trips(tmp_path):
    """The file `--write-config` writes is a valid Ray Serve config (ServeDeploySchema) whose application is built
    by our builder from its args; `load` reads it back, with its deployments section as overrides."""
    from ray.serve.schema import ServeDeploySchema

    cfg = sc.preset_config("tiny", random_init=True, port=8123, model_fields={"batch": {"max_batch_size": 8}})
    data = sc.serve_config_file(cfg)
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "arfm.serving.app:build_app" and schema.http_options.host == "127.0.0.1"
    assert {d.name for d in app.deployments} == {"model-ar", "model-fm"}
    edited = yaml.safe_load(yaml.safe_dump(data))
    edited["applications"][0]["deployments"][0]["num_replicas"] = 3
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(edited))
    back, overrides = sc.load(path)
    assert back == cfg and overrides["model-ar"]["num_replicas"] == 3
    edited["applications"][0]["deployments"].append({"name": "model-nope", "num_replicas": 1})
    path.write_text(yaml.safe_dump(edited))
    with pytest.raises(ConfigError, match="model-nope"):
        sc.load(path)


def test_the_builder_applies_each_deployments_options():
    from ray.serve._private.build_app import build_app as build

    from arfm.serving.app import build_app, compose

    cfg = sc.preset_config("tiny", random_init=True, model_fields={
        "batch": {"max_batch_size": 32}, "ray_actor_options": {"num_cpus": 2}, "num_replicas": 2})
    built = {d.name: d for d in build(build_app(cfg.model_dump(mode="json")), name="arfm").deployments}
    ar = built["model-ar"]
    assert ar.max_ongoing_requests == 64 and ar.num_replicas == 2 and ar.ray_actor_options["num_cpus"] == 2
    assert ar.user_config == {"max_batch_size": 32, "batch_wait_timeout_s": 0.05}
    over = {d.name: d for d in build(compose(cfg, {"model-fm": {"num_replicas": 5}}), name="arfm").deployments}
    assert over["model-fm"].num_replicas == 5 and over["model-ar"].num_replicas == 2


def test_arfm_serve_writes_a_config_file_from_its_flags(tmp_path):
    from typer.testing import CliRunner

    from arfm.cli import app

    out = tmp_path / "serve.yaml"
    res = CliRunner().invoke(app, ["serve", "--random-init", "--max-batch-size", "24", "--replicas", "2",
                                   "--num-cpus", "0.5", "--write-config", str(out)])
    assert res.exit_code == 0, res.output
    cfg, _ = sc.load(out)
    assert {m.batch.max_batch_size for m in cfg.models} == {24} and cfg.models[0].num_replicas == 2
    assert cfg.models[1].ray_actor_options == {"num_cpus": 0.5} and cfg.host == "127.0.0.1"
    bad = CliRunner().invoke(app, ["serve", "--model", "oops", "--write-config", str(out)])
    assert bad.exit_code == 2 and "NAME=SOURCE" in bad.output


# --------------------------------------------------------------------------------------------- requests
def wav(seconds, rate=32000, channels=1):
    buf = io.BytesIO()
    x = np.random.default_rng(0).standard_normal((int(seconds * rate), channels)).astype(np.float32) * 0.1
    sf.write(buf, x, rate, format="WAV")
    return buf.getvalue(), x


def test_chord_symbols_are_checked_against_the_vocabulary():
    from arfm.vocab import chord_index

    assert inputs.chord_symbol_index("F#m7") == chord_index("F#m7")
    assert inputs.chord_symbol_index("G/B") == chord_index("G/B") != chord_index("G")  # an inversion is its own class
    assert inputs.chord_symbol_index("N") == chord_index("N")
    assert inputs.chord_symbol_index("Dbmaj7") == chord_index("C#maj7")
    for bad in ("Cxyz", "H", "Am/Q", "cmaj", "C#m13", "Csus4", "Am/C"):
        with pytest.raises(ValueError, match="vocabulary"):
            inputs.chord_symbol_index(bad)


def test_chord_changes_hold_until_the_next_one():
    from arfm.vocab import chord_index

    frames = inputs.chords_to_frames([{"symbol": "C", "time": 0.0}, {"symbol": "Am", "time": 0.5}], 50.0, 60)
    assert frames[:25] == [chord_index("C")] * 25 and frames[25:] == [chord_index("Am")] * 35
    with pytest.raises(FieldError) as err:
        inputs.chords_to_frames([{"symbol": "C", "time": 0.5}, {"symbol": "G", "time": 0.2}], 50.0, 60)
    assert err.value.field == "controls.chords[1].time"
    with pytest.raises(FieldError, match="past the end") as err:
        inputs.chords_to_frames([{"symbol": "C", "time": 1.3}], 50.0, 60)
    assert err.value.field == "controls.chords[0].time"


def test_melody_notes_become_classes_per_frame():
    from arfm.vocab import MELODY_NONE, melody_index

    frames = inputs.melody_to_frames([{"pitch": 60, "start": 0.1, "end": 0.3}], 50.0, 20)
    assert frames[5:15] == [melody_index(60)] * 10 and frames[:5] == [MELODY_NONE] * 5
    with pytest.raises(FieldError) as err:
        inputs.melody_to_frames([{"pitch": 100, "start": 0, "end": 0.2}], 50.0, 20)
    assert err.value.field == "controls.melody[0].pitch"


def test_reference_audio_is_decoded_to_mono_at_the_models_rate():
    data, x = wav(0.5, rate=16000, channels=2)
    got = inputs.decode_audio(data, 32000, "audio")
    assert got.dtype == np.float32 and got.shape == (16000,)
    back, _ = sf.read(io.BytesIO(inputs.encode_wav(got, 32000)))
    assert np.abs(back - np.clip(got, -1, 1)).max() < 1e-4
    for bad, msg in [(b"", "empty"), (b"RIFF....WAVEjunk", "not a readable"), (wav(3.0)[0], "longer")]:
        with pytest.raises(FieldError, match=msg) as err:
            inputs.decode_audio(bad, 32000, "audio", max_seconds=2.0)
        assert err.value.field == "audio"
    with pytest.raises(FieldError, match="base64"):
        inputs.decode_base64("%%%", "controls.drums.audio_base64")


def test_generator_errors_are_named_in_the_apis_terms():
    from arfm.serving.deployments import api_field

    assert api_field("requests[3].caption: a non-empty text is required") == ("prompt",
                                                                               "a non-empty text is required")
    assert api_field("inpaint_mode: this FM model inpaints with ...")[0] == "mode"
    assert api_field("controls.chords: index 999 outside [0, 193)")[0] == "controls.chords"
    assert api_field("seconds: 0 is outside (0, 600]")[0] == "seconds"


# --------------------------------------------------------------------------------------------- replica health
@pytest.fixture(scope="module")
def replica():
    from arfm.serving.deployments import ModelServer

    spec = {"name": "fm", "random_init": "fm", "set": TINY + ["sample.steps=2"], "health_probe_s": 1e-9}
    return ModelServer.func_or_class(spec, sc.Limits().model_dump())


def test_check_health_fails_when_the_model_cannot_generate(replica):
    import torch

    asyncio.run(replica.check_health())  # an untrained model generates finite audio
    assert replica.last_failure is None
    weight = replica.model.gen.model.out.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    try:
        with pytest.raises(RuntimeError, match="cannot generate: .*NaN"):
            asyncio.run(replica.check_health())
        assert asyncio.run(replica.health())["ok"] is False
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    asyncio.run(replica.check_health())
    assert asyncio.run(replica.health())["ok"] is True


def test_check_health_fails_when_generation_raises(replica, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(replica.model.gen.codec, "decode_latent", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        asyncio.run(replica.check_health())


def test_requests_are_checked_before_they_join_a_batch(replica):
    bad = [({"prompt": "x", "seconds": 5.0}, "seconds"),
           ({"prompt": "x", "seconds": 0.5, "sample": {"steps": 5000}}, "sample.steps"),
           ({"prompt": "x", "seconds": 0.5, "controls": {"melody": [{"pitch": 60, "start": 0, "end": 1}]}},
            "controls.melody")]
    for body, field in bad:
        with pytest.raises(FieldError) as err:
            replica._prepare(body, None)
        assert err.value.field == field
    job = replica._prepare({"prompt": "x", "seconds": 0.5, "seed": 3, "sample": {"steps": 3}}, None)
    assert job.request.seed == 3 and job.sample.steps == 3 and job.key[:2] == ("generate", 25)
    other = replica._prepare({"prompt": "y", "seconds": 0.5, "seed": 4}, None)
    assert other.key != job.key  # other sampling: another queue


# --------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:8000"])
def test_the_load_generator_only_targets_loopback(url):
    from arfm.serving import loadtest

    with pytest.raises(ValueError):
        asyncio.run(loadtest.run(url, n=1, concurrency=1))
    loadtest.check_loopback("http://127.0.0.1:8000")
    loadtest.check_loopback("http://localhost:8000")


def test_the_load_generator_is_bounded():
    from arfm.serving import loadtest

    with pytest.raises(ValueError, match="n must be"):
        asyncio.run(loadtest.run("http://127.0.0.1:9", n=10**6))
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(loadtest.run("http://127.0.0.1:9", n=5, concurrency=6))
    report = asyncio.run(loadtest.run("http://127.0.0.1:9", n=3, concurrency=3, timeout_s=5))  # nothing listens
    assert report["ok"] == 0 and report["lost"] == 3 and sum(report["exceptions"].values()) == 3


def test_a_request_past_its_timeout_or_abandoned_is_cancelled():
    from arfm.serving.api import wait_or_cancel

    class Pending:
        cancelled = False

        def cancel(self):
            self.cancelled = True

        def __await__(self):
            return asyncio.sleep(3600).__await__()

    late = Pending()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(wait_or_cancel(late, 0.05))
    assert late.cancelled

    async def abandon():
        gone = Pending()
        task = asyncio.create_task(wait_or_cancel(gone, 3600))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return gone

    assert asyncio.run(abandon()).cancelled
