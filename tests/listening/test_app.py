"""The HTTP API in process (FastAPI's TestClient): bad submissions get a 4xx and store nothing, admin routes need
the admin token, nothing a rater receives names a system, and the server's log carries no token."""

from __future__ import annotations

import logging
import re
import time

import pytest
from fastapi.testclient import TestClient

SCORES = {"smoothness": 6, "match": 4}
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def served(tmp_path, make_study):
    from arfm.listening.app import create_app

    store, study, admin = make_study(tmp_path, items_per_rater=8, anchors_per_rater=1, seconds=0.5)
    tokens = store.add_raters(study, 2)
    return TestClient(create_app(store, study.name)), store, study, admin, tokens


def _judgments(store, study) -> int:
    return len(store.judgments(study))


def test_bad_submissions_get_a_4xx_and_store_nothing(served):
    client, store, study, _, (tok_a, tok_b) = served
    ha, hb = {"X-Rater-Token": tok_a}, {"X-Rater-Token": tok_b}
    item = client.get("/api/state", headers=ha).json()["item"]["id"]
    url = f"/api/items/{item}/ratings"
    # rating before playing
    r = client.post(url, json={"scores": SCORES}, headers=ha)
    assert r.status_code == 409 and "play the clip first" in r.json()["detail"]
    assert client.post(f"/api/items/{item}/play", json={"played_seconds": 0.5}, headers=ha).status_code == 200
    bad = [
        ({"scores": {"smoothness": 0, "match": 4}}, ha, url, 422),
        ({"scores": {"smoothness": 11, "match": 4}}, ha, url, 422),
        ({"scores": {"smoothness": 6.5, "match": 4}}, ha, url, 422),
        ({"scores": {"smoothness": "6", "match": 4}}, ha, url, 422),
        ({"scores": {"smoothness": True, "match": 4}}, ha, url, 422),
        ({"scores": {"smoothness": 6}}, ha, url, 422),  # a criterion missing
        ({"scores": {**SCORES, "tempo": 5}}, ha, url, 422),  # an unknown criterion
        ({"scores": SCORES, "system": "x"}, ha, url, 422),  # an unknown field
        ({"scores": SCORES}, ha, "/api/items/not-an-item/ratings", 404),  # an unknown item
        ({"scores": SCORES}, {}, url, 401),  # no token
        ({"scores": SCORES}, {"X-Rater-Token": "x" * 32}, url, 401),  # a made-up token
        ({"scores": SCORES}, hb, url, 404),  # another rater's token: not their item
    ]
    for body, headers, target, status in bad:
        r = client.post(target, json=body, headers=headers)
        assert r.status_code == status, (body, headers, r.text)
        assert _judgments(store, study) == 0
    assert client.post(url, content=b"{not json", headers={**ha, "Content-Type": "application/json"}).status_code == 422
    assert _judgments(store, study) == 0
    r = client.post(url, json={"scores": SCORES}, headers=ha)  # the same item, played, scored right: stored
    assert r.status_code == 201 and r.json()["stored"] == 2 and r.json()["done"] == 1
    assert client.post(url, json={"scores": SCORES}, headers=ha).status_code == 409  # once only
    assert [(j["criterion"], j["score"]) for j in store.judgments(study)] == [("smoothness", 6), ("match", 4)]


def test_admin_routes_need_the_admin_token(served):
    client, store, study, admin, (tok_a, _) = served
    routes = [("post", "/api/admin/raters", {"json": {"n": 2}}), ("get", "/api/admin/results", {}),
              ("get", "/api/admin/progress", {}), ("get", "/api/admin/judgments.csv", {})]
    for method, path, kw in routes:
        for headers in ({}, {"Authorization": f"Bearer {tok_a}"}, {"Authorization": f"Bearer {admin}x"},
                        {"Authorization": admin}):
            assert getattr(client, method)(path, headers=headers, **kw).status_code == 401, (path, headers)
    assert _raters(store, study) == 2
    ok = {"Authorization": f"Bearer {admin}"}
    links = client.post("/api/admin/raters", json={"n": 2}, headers=ok).json()["links"]
    assert len(links) == 2 and all(re.fullmatch(r"http://testserver/r/[A-Za-z0-9_-]{32}", u) for u in links)
    assert client.get(links[0].removeprefix("http://testserver")).status_code == 200
    assert client.post("/api/admin/raters", json={"n": 0}, headers=ok).status_code == 422
    assert _raters(store, study) == 4
    assert client.get("/api/admin/results", headers=ok).json()["interval_method"].startswith("95% t interval")
    assert client.get("/api/admin/judgments.csv", headers=ok).text.startswith("judgment,rater,rater_kept,")


def _raters(store, study) -> int:
    return store.progress(study)["raters"]


def test_nothing_a_rater_receives_names_a_system(served, system_names, caplog):
    """Every URL, the page, its script and style, each item's JSON and audio bytes, and the clip files' names:
    no system name, no system source, no file name; the server log carries no token."""
    client, store, study, _, tokens = served
    caplog.set_level(logging.INFO, logger="arfm.listening")
    secret = [*system_names, *(f"source of {s}" for s in system_names)]
    files = [p.name for p in study.media_dir.iterdir()]
    assert len(files) == 3 * 6 and all(re.fullmatch(r"[0-9a-f]{32}\.wav", f) for f in files)
    seen_text, seen_urls = [], []
    for token in tokens:
        h = {"X-Rater-Token": token}
        for url in (f"/r/{token}", "/static/rate.js", "/static/rate.css"):
            r = client.get(url)
            assert r.status_code == 200 and r.headers["referrer-policy"] == "no-referrer"
            assert "default-src 'self'" in r.headers["content-security-policy"]
            seen_urls.append(url)
            seen_text.append(r.text)
        for _ in range(8):
            state = client.get("/api/state", headers=h)
            seen_text.append(state.text)
            item = state.json()["item"]["id"]
            audio = client.get(f"/api/items/{item}/audio", headers=h)
            assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
            assert "content-disposition" not in audio.headers
            seen_text.append(audio.content.decode("latin-1"))
            client.post(f"/api/items/{item}/play", json={"played_seconds": 0.5}, headers=h)
            assert client.post(f"/api/items/{item}/ratings", json={"scores": SCORES}, headers=h).status_code == 201
            seen_urls += [f"/api/items/{item}/audio", f"/api/items/{item}/play", f"/api/items/{item}/ratings"]
        assert client.get("/api/state", headers=h).json()["item"] is None
    blob = "\n".join(seen_text + seen_urls)
    for name in secret + files + [f[:-4] for f in files]:
        assert name not in blob, name
    assert _judgments(store, study) == 2 * 8 * 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/api/items/{item}/ratings 201" in logged and "/r/{token} 200" in logged
    assert not any(t in logged for t in tokens)


def test_a_rater_resumes_mid_item_with_the_seconds_already_heard(served):
    client, _, _, _, (tok_a, _) = served
    h = {"X-Rater-Token": tok_a}
    item = client.get("/api/state", headers=h).json()["item"]
    assert item["played_seconds"] == 0 and item["required_seconds"] == pytest.approx(0.95 * 0.5)
    time.sleep(0.01)
    client.post(f"/api/items/{item['id']}/play", json={"played_seconds": 0.2}, headers=h)
    again = client.get("/api/state", headers=h).json()["item"]
    assert again["id"] == item["id"] and again["played_seconds"] == pytest.approx(0.2)
    assert again["span"] == [pytest.approx(0.15), pytest.approx(0.35)] and len(again["peaks"]) > 100
