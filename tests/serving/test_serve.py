"""The Serve application on 127.0.0.1 with tiny untrained models: every endpoint, bad input, batching and seeds,
cancellation, an OpenAPI fuzz (schemathesis) and a 200-request load test. One Serve start for the module."""

import asyncio
import base64
import io
import json
import socket
import time

import httpx
import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

TINY = ["text.encoder=tiny-t5", "data.segment_seconds=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(name, paradigm, extra=(), **fields):
    return {"name": name, "random_init": paradigm, "set": [*TINY, *extra], "threads": 1,
            "ray_actor_options": {"num_cpus": 0.5}, "health_probe_s": 600, **fields}


@pytest.fixture(scope="module")
def server():
    import ray
    from ray import serve

    from arfm.serving.app import start
    from arfm.serving.config import validate

    cfg = validate({
        "port": _free_port(),
        "models": [
            _model("ar", "ar", ["model.controls=[chords,melody,drums]", "model.inpainting=fim"],
                   batch={"max_batch_size": 16, "batch_wait_timeout_s": 0.2}),
            _model("fm", "fm", ["sample.steps=8"], batch={"max_batch_size": 16, "batch_wait_timeout_s": 0.2}),
            # a model slow enough to queue behind: 30 s clips at 32 Euler steps
            _model("slow", "fm", ["sample.steps=32"], max_seconds=30, batch={"max_batch_size": 4,
                                                                            "batch_wait_timeout_s": 0.05}),
        ],
        "limits": {"max_steps": 64, "max_upload_mb": 2, "request_timeout_s": 120},
    })
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start(cfg)
        assert url.startswith("http://127.0.0.1:")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def wav_of(content: bytes):
    audio, rate = sf.read(io.BytesIO(content), dtype="float32")
    info = sf.info(io.BytesIO(content))
    return audio, rate, info


def reference_wav(seconds=1.0, rate=32000, seed=0) -> bytes:
    buf = io.BytesIO()
    x = np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32) * 0.1
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- endpoints
def test_models_and_health(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert set(models) == {"ar", "fm", "slow"}
    assert models["ar"]["paradigm"] == "ar" and models["fm"]["paradigm"] == "fm"
    assert models["ar"]["frame_rate"] == 50 and models["ar"]["max_seconds"] == 2 and models["slow"]["max_seconds"] == 30
    assert models["fm"]["sample"]["steps"] == 8 and models["ar"]["controls"] == ["chords", "melody", "drums"]
    assert models["ar"]["inpainting"] == ["fim"] and models["fm"]["inpainting"] == ["zero_shot"]
    assert client.get("/healthz").json() == {"status": "ok", "models": ["ar", "fm", "slow"]}
    paths = client.get("/openapi.json").json()["paths"]
    assert "audio/wav" in paths["/v1/generate"]["post"]["responses"]["200"]["content"]


@pytest.mark.parametrize("model,seconds", [("ar", 1.0), ("fm", 0.5), ("fm", 2.0)])
def test_generate_returns_a_wav_of_the_requested_length(client, model, seconds):
    r = client.post("/v1/generate", json={"model": model, "prompt": "calm lofi piano", "seconds": seconds, "seed": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE"
    audio, rate, info = wav_of(r.content)
    assert rate == 32000 and info.channels == 1 and info.subtype == "PCM_16"
    assert len(audio) == int(seconds * 32000)
    assert r.headers["x-model"] == model and r.headers["x-seed"] == "1" and int(r.headers["x-batch-size"]) >= 1


def test_json_format_carries_the_wav_and_the_generation_info(client):
    r = client.post("/v1/generate", json={"model": "fm", "prompt": "techno", "seconds": 1.0, "format": "json",
                                          "sample": {"steps": 3, "cfg": 1.5}})
    body = r.json()
    assert r.status_code == 200 and body["paradigm"] == "fm" and body["seconds"] == 1.0
    assert body["info"]["nfe"] == 3 and body["info"]["cfg"] == 1.5 and isinstance(body["seed"], int)
    audio, rate, _ = wav_of(base64.b64decode(body["audio_wav_base64"]))
    assert rate == body["sample_rate"] == 32000 and len(audio) == 32000
    again = client.post("/v1/generate", json={"model": "fm", "prompt": "techno", "seconds": 1.0, "seed": body["seed"],
                                              "sample": {"steps": 3, "cfg": 1.5}})
    assert again.content == base64.b64decode(body["audio_wav_base64"])  # the returned seed reproduces it


def test_controls_reach_the_model(client):
    base = {"model": "ar", "prompt": "jazz trio", "seconds": 1.0, "seed": 3, "sample": {"top_k": 1}}
    plain = client.post("/v1/generate", json=base)
    controls = {"chords": [{"symbol": "Am", "time": 0.0}, {"symbol": "F/C", "time": 0.5}],
                "melody": [{"pitch": 60, "start": 0.0, "end": 0.4}, {"pitch": 67, "start": 0.4, "end": 1.0}],
                "drums": {"audio_base64": base64.b64encode(reference_wav(1.0, 16000)).decode()}}
    guided = client.post("/v1/generate", json={**base, "controls": controls})
    assert plain.status_code == guided.status_code == 200
    assert plain.content != guided.content


@pytest.mark.parametrize("model,mode", [("fm", None), ("ar", "fim")])
def test_inpaint_returns_the_clip_with_the_span_regenerated(client, model, mode):
    form = {"model": model, "prompt": "piano", "start": "0.2", "end": "0.6", "seed": "2", **({"mode": mode} if mode else {})}
    r = client.post("/v1/inpaint", data=form, files={"audio": ("ref.wav", reference_wav(1.0), "audio/wav")})
    assert r.status_code == 200, r.text
    audio, rate, _ = wav_of(r.content)
    assert rate == 32000 and len(audio) == 32000


# --------------------------------------------------------------------------------------------- bad input
BAD_JSON = [
    ({"model": "ar", "prompt": ""}, "prompt"),
    ({"model": "ar", "prompt": "   "}, "prompt"),
    ({"model": "ar", "prompt": "x" * 10_000_000}, "prompt"),
    ({"model": "ar", "prompt": "x", "seconds": 0}, "seconds"),
    ({"model": "ar", "prompt": "x", "seconds": -2}, "seconds"),
    ({"model": "ar", "prompt": "x", "seconds": 3}, "seconds"),  # above the model's 2 s
    ({"model": "ar", "prompt": "x", "controls": {"chords": [{"symbol": "Hmaj", "time": 0}]}}, "symbol"),
    ({"model": "ar", "prompt": "x", "controls": {"chords": [{"symbol": "Cxyz", "time": 0}]}}, "symbol"),
    ({"model": "ar", "prompt": "x", "seconds": 1, "controls": {"chords": [{"symbol": "C", "time": 1.5}]}}, "time"),
    ({"model": "ar", "prompt": "x", "controls": {"melody": [{"pitch": 20, "start": 0, "end": 1}]}}, "pitch"),
    ({"model": "ar", "prompt": "x", "controls": {"drums": {"audio_base64": "bm90IGF1ZGlv"}}}, "audio_base64"),
    ({"model": "ar", "prompt": "x", "controls": {"drums": {"audio_base64": "%%%"}}}, "audio_base64"),
    ({"model": "fm", "prompt": "x", "controls": {"chords": [{"symbol": "C", "time": 0}]}}, "chords"),
    ({"model": "fm", "prompt": "x", "sample": {"cfg": -1}}, "cfg"),
    ({"model": "fm", "prompt": "x", "sample": {"cfg": 1e9}}, "cfg"),
    ({"model": "fm", "prompt": "x", "sample": {"steps": 10_000}}, "steps"),
    ({"model": "fm", "prompt": "x", "sample": {"solver": "dopri5", "rtol": 1e-12}}, "rtol"),
    ({"model": "fm", "prompt": "x", "sample": {"solver": "rk4"}}, "solver"),
    ({"model": "fm", "prompt": "x", "sample": {"temprature": 1}}, "temprature"),
    ({"model": "nope", "prompt": "x"}, "model"),
    ({"prompt": "x"}, "model"),  # several models served
    ({"model": "ar", "prompt": "x", "seed": -1}, "seed"),
]
RAW = [
    ('{"model": "fm", "prompt": "x", "sample": {"cfg": NaN}}', "cfg"),
    ('{"model": "fm", "prompt": "x", "seconds": Infinity}', "seconds"),
    ('{"model": "fm", "prompt": ', "body"),
    ("[1, 2]", "body"),
]


def _assert_names(r, field):
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert any(field in map(str, item["loc"]) for item in detail), detail
    assert len(r.content) < 10_000  # the error does not echo a 10 MB input back


@pytest.mark.parametrize("body,field", BAD_JSON, ids=[f for _, f in BAD_JSON])
def test_bad_json_requests_get_a_4xx_naming_the_field(client, body, field):
    _assert_names(client.post("/v1/generate", json=body), field)


@pytest.mark.parametrize("raw,field", RAW, ids=[f"raw-{f}" for _, f in RAW])
def test_malformed_and_non_finite_json_gets_a_4xx(client, raw, field):
    _assert_names(client.post("/v1/generate", content=raw, headers={"content-type": "application/json"}), field)


@pytest.mark.parametrize("form,audio,field", [
    ({"model": "fm", "prompt": "x", "start": "0.2", "end": "1.6"}, "wav", "end"),  # past the 1 s clip
    ({"model": "fm", "prompt": "x", "start": "0.6", "end": "0.2"}, "wav", "end"),
    ({"model": "fm", "prompt": "x", "start": "nan", "end": "0.2"}, "wav", "start"),
    ({"model": "fm", "prompt": "x", "start": "0.2", "end": "0.6"}, "garbage", "audio"),
    ({"model": "fm", "prompt": "x", "start": "0.2", "end": "0.6"}, "long", "audio"),  # 3 s > the 2 s limit
    ({"model": "fm", "prompt": "x", "start": "0.2", "end": "0.6", "mode": "supervised"}, "wav", "mode"),
    ({"model": "ar", "prompt": "x", "start": "0.2", "end": "0.6", "mode": "zero_shot"}, "wav", "mode"),
    ({"model": "fm", "prompt": "x", "start": "0.2", "end": "0.6", "sample": "{oops"}, "wav", "sample"),
    ({"model": "fm", "prompt": "x", "start": "0.2", "end": "0.6", "sample": '{"steps": 0}'}, "wav", "steps"),
], ids=["span-past-clip", "end-before-start", "nan-start", "not-audio", "too-long", "unsupported-mode",
        "ar-mode", "sample-json", "sample-steps"])
def test_bad_inpaint_requests_get_a_4xx_naming_the_field(client, form, audio, field):
    data = {"wav": reference_wav(1.0), "garbage": b"RIFF0000WAVEjunk", "long": reference_wav(3.0)}[audio]
    _assert_names(client.post("/v1/inpaint", data=form, files={"audio": ("a.wav", data, "audio/wav")}), field)


def test_an_upload_over_the_limit_is_refused_before_it_is_read(client):
    big = reference_wav(40.0)
    big = big + b"\0" * (24 * 2**20 - len(big))  # above 2 MB of clip (4/3 of it in base64) + 16 MB
    r = client.post("/v1/inpaint", data={"model": "fm", "prompt": "x", "start": "0", "end": "1"},
                    files={"audio": ("a.wav", big, "audio/wav")})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"]


def test_the_server_keeps_serving_after_bad_input(client):
    for body, _ in BAD_JSON[:5]:
        client.post("/v1/generate", json=body)
    r = client.post("/v1/generate", json={"model": "ar", "prompt": "still here", "seconds": 0.5})
    assert r.status_code == 200 and len(wav_of(r.content)[0]) == 16000


# --------------------------------------------------------------------------------------------- batching and seeds
async def _burst(url, bodies):
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        return await asyncio.gather(*(c.post("/v1/generate", json=b) for b in bodies))


@pytest.mark.parametrize("model", ["ar", "fm"])
def test_seed_7_gives_the_same_audio_alone_and_inside_a_concurrent_burst(server, client, model):
    target = {"model": model, "prompt": "warm jazz piano, 90 bpm", "seconds": 1.0, "seed": 7}
    alone = client.post("/v1/generate", json=target)
    assert alone.status_code == 200 and alone.headers["x-batch-size"] == "1"
    others = [{"model": model, "prompt": p, "seconds": 1.0, "seed": 100 + i}
              for i, p in enumerate(["rock", "ambient pad", "lofi beat with vinyl crackle", "x", "orchestral",
                                     "techno", "folk guitar and voice", "metal", "reggae", "drum and bass", "choir"])]
    replies = asyncio.run(_burst(server, others[:5] + [target] + others[5:]))
    assert all(r.status_code == 200 for r in replies)
    mine = replies[5]
    assert int(mine.headers["x-batch-size"]) > 1  # it was generated together with others
    assert mine.content == alone.content
    assert replies[4].content != alone.content


def test_a_request_cancelled_while_queued_frees_its_place(server, client):
    """A client that gives up while its request waits behind a running batch: the request is cancelled and never
    generated (the replica's counters), and the model keeps serving."""
    from ray import serve

    handle = serve.get_deployment_handle("model-slow", app_name="arfm")
    before = handle.stats.remote().result()

    async def scenario():
        async with httpx.AsyncClient(base_url=server, timeout=120) as c:
            blocker = asyncio.create_task(c.post("/v1/generate", json={
                "model": "slow", "prompt": "long", "seconds": 30, "sample": {"steps": 64}, "format": "json"}))
            await asyncio.sleep(0.3)
            t0 = time.perf_counter()
            with pytest.raises(httpx.ReadTimeout):
                await c.post("/v1/generate", json={"model": "slow", "prompt": "impatient", "seconds": 1},
                             timeout=httpx.Timeout(120, read=0.4))
            gave_up = time.perf_counter() - t0 + 0.3
            return await blocker, gave_up

    blocked, gave_up = asyncio.run(scenario())
    assert blocked.status_code == 200
    # the premise: the impatient client left while the blocker was still generating (it waited in the queue)
    assert blocked.json()["info"]["latency_s"] > gave_up + 0.2
    deadline = time.time() + 30
    while True:  # Serve cancels the abandoned request on the replica shortly after the client left
        after = handle.stats.remote().result()
        if after["cancelled"] > before["cancelled"] or time.time() > deadline:
            break
        time.sleep(0.2)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["served"] == before["served"] + 1  # only the blocker was generated
    assert sum(after["batch_sizes"].values()) == sum(before["batch_sizes"].values()) + 1
    r = client.post("/v1/generate", json={"model": "slow", "prompt": "next", "seconds": 0.5})
    assert r.status_code == 200


# --------------------------------------------------------------------------------------------- fuzzing and load
@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzzing_the_openapi_finds_no_server_error(case):
    """schemathesis generates requests (valid and invalid) from the app's own OpenAPI document: no 5xx, and every
    response conforms to what the document declares (status codes, content types, JSON bodies, headers), and
    invalid requests are refused. Not checked: that every schema-valid request is accepted, since the server
    also applies limits of the served model the schema cannot carry (its length limit, the chord vocabulary,
    whether a base64 or uploaded clip decodes), answered with a 422 naming the field."""
    case.call_and_validate(timeout=120, excluded_checks=[positive_data_acceptance])


def test_load_200_concurrent_requests_without_loss(server, client):
    from arfm.serving import loadtest

    report = asyncio.run(loadtest.run(server, n=200, concurrency=200, body={"model": "ar", "seconds": 0.5},
                                      timeout_s=300))
    print(json.dumps(report, indent=1))
    assert report["ok"] == 200 and report["lost"] == 0 and report["server_errors"] == 0
    assert not report["errors_by_status"] and not report["exceptions"]
    assert max(int(b) for b in report["batches_formed"]) > 1  # Serve formed real batches
    assert report["latency_s"]["p99"] >= report["latency_s"]["p50"] > 0
