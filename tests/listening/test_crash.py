"""Killing the server (SIGKILL, no shutdown) between two submissions loses no stored judgment, and the rater
resumes at the next item after a restart; the server binds 127.0.0.1 when not told otherwise."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import psutil


def _call(base, path, token, body=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-Rater-Token": token, "Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _rate(base, token, scores):
    status, state = _call(base, "/api/state", token)
    item = state["item"]
    assert status == 200 and _call(base, f"/api/items/{item['id']}/play", token,
                                   {"played_seconds": item["seconds"]})[0] == 200
    status, body = _call(base, f"/api/items/{item['id']}/ratings", token, {"scores": scores})
    assert status == 201, body
    return item


def test_a_killed_server_loses_nothing_and_the_rater_resumes(tmp_path, make_study, server_cls):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store, study, _ = make_study(tmp_path, items_per_rater=6, anchors_per_rater=1, seconds=0.5, url=url)
    token = store.add_raters(study, 1)[0]
    server = server_cls(url, study.name, tmp_path).start()
    try:
        listening = {c.laddr.ip for c in psutil.Process(server.proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        first = _rate(server.url, token, {"smoothness": 8, "match": 2})
        second = _rate(server.url, token, {"smoothness": 3, "match": 9})
        server.kill()  # between the second and the third submission
        assert [(j["item_id"], j["criterion"], j["score"]) for j in store.judgments(study)] == [
            (first["id"], "smoothness", 8), (first["id"], "match", 2),
            (second["id"], "smoothness", 3), (second["id"], "match", 9)]
        server.start()
        status, state = _call(server.url, "/api/state", token)
        assert status == 200 and state["done"] == 2 and state["item"]["number"] == 3
        third = _rate(server.url, token, {"smoothness": 5, "match": 5})
        assert third["number"] == 3 and len(store.judgments(study)) == 6
    finally:
        server.stop()
