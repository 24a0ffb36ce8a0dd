"""The study database: what a judgment keeps, what is refused (and stores nothing), the server-side play check,
the raters' seeded, balanced, recorded item lists, and secrets kept as hashes only."""

from __future__ import annotations

import collections
import stat

import pytest
from sqlalchemy import func, select

from arfm.listening.store import Assignment, Clip, Conflict, Invalid, Judgment, NotFound, Play, Prompt, System


def _count(store, table) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def _items(store, rater):
    """The rater's items in order: (public id, prompt key, system name or kind)."""
    with store.session() as s:
        rows = s.execute(select(Assignment.public_id, Prompt.key, System.name, Clip.kind)
                         .join(Clip, Assignment.clip_id == Clip.id).join(Prompt, Clip.prompt_id == Prompt.id)
                         .outerjoin(System, Clip.system_id == System.id)
                         .where(Assignment.rater_id == rater.id).order_by(Assignment.position)).all()
    return [(pid, key, sname or kind) for pid, key, sname, kind in rows]


def test_a_judgment_keeps_rater_item_system_criterion_score_time_and_play(tmp_path, make_study):
    store, study, _ = make_study(tmp_path, items_per_rater=6, anchors_per_rater=1)
    token = store.add_raters(study, 1)[0]
    rater = store.rater(study, token)
    pid, prompt, system = _items(store, rater)[0]
    assert store.state(study, rater)["item"]["id"] == pid
    assert store.record_play(rater, pid, 1.0) == pytest.approx(1.0)
    assert store.submit(study, rater, pid, {"smoothness": 7, "match": 3}) == 2
    rows = store.judgments(study)
    assert [(r["rater"], r["item"], r["item_id"], r["prompt"], r["criterion"], r["score"]) for r in rows] == [
        (0, 1, pid, prompt, "smoothness", 7), (0, 1, pid, prompt, "match", 3)]
    assert all((r["system"] or r["kind"]) == system and r["play_seconds"] == pytest.approx(1.0) for r in rows)
    assert all(r["time_utc"][:4].isdigit() for r in rows)
    assert store.state(study, rater)["done"] == 1  # the next item is the second


def test_refused_submissions_store_nothing(tmp_path, make_study):
    store, study, _ = make_study(tmp_path, items_per_rater=6, anchors_per_rater=1, seconds=3.0)
    a, b = (store.rater(study, t) for t in store.add_raters(study, 2))
    first, second = _items(store, a)[0][0], _items(store, a)[1][0]
    with pytest.raises(Conflict, match="play the clip first"):  # never played
        store.submit(study, a, first, {"smoothness": 5, "match": 5})
    # a claim of the whole 3 s at once: the server's clock keeps at most the elapsed time plus 1 s
    assert store.record_play(a, first, 3.0) < 1.5
    with pytest.raises(Conflict, match="play the clip first"):
        store.submit(study, a, first, {"smoothness": 5, "match": 5})
    with store.session() as s, s.begin():  # as if the playback had started 3 s ago
        play = s.scalar(select(Play))
        play.started_at = play.started_at.replace(year=play.started_at.year - 1)
    assert store.record_play(a, first, 3.0) == pytest.approx(3.0)
    for bad, err in [({"smoothness": 0, "match": 5}, Invalid), ({"smoothness": 11, "match": 5}, Invalid),
                     ({"smoothness": 5.0, "match": 5}, Invalid), ({"smoothness": True, "match": 5}, Invalid),
                     ({"smoothness": 5}, Invalid), ({"smoothness": 5, "match": 5, "tempo": 5}, Invalid)]:
        with pytest.raises(err):
            store.submit(study, a, first, bad)
    with pytest.raises(NotFound):  # another rater's item
        store.submit(study, b, first, {"smoothness": 5, "match": 5})
    with pytest.raises(NotFound):
        store.submit(study, a, "no-such-item", {"smoothness": 5, "match": 5})
    with pytest.raises(Conflict, match="in their order"):
        store.record_play(a, second, 3.0)
        store.submit(study, a, second, {"smoothness": 5, "match": 5})
    assert _count(store, Judgment) == 0
    store.submit(study, a, first, {"smoothness": 5, "match": 6})
    with pytest.raises(Conflict, match="already rated"):
        store.submit(study, a, first, {"smoothness": 9, "match": 9})
    assert [(j["criterion"], j["score"]) for j in store.judgments(study)] == [("smoothness", 5), ("match", 6)]


def test_items_are_balanced_seeded_recorded_and_never_repeated(tmp_path, make_study, system_names):
    kw = dict(items_per_rater=10, anchors_per_rater=1, seed=7, n_prompts=4)
    store, study, _ = make_study(tmp_path / "a", **kw)
    raters = [store.rater(study, t) for t in store.add_raters(study, 6)]
    lists = [_items(store, r) for r in raters]
    for items in lists:
        kinds = collections.Counter(x[2] for x in items)
        assert sorted(kinds.values()) == [1, 1, 2, 2, 2, 2] and set(kinds) == {*system_names, "reference",
                                                                               "degraded"}
        assert len({(k, s) for _, k, s in items}) == len(items)  # no clip twice
    # the 6 x 8 system items spread over the 16 system clips as evenly as possible: 3 each
    per_clip = collections.Counter((k, s) for items in lists for _, k, s in items if s in system_names)
    assert set(per_clip.values()) == {3}
    assert len({tuple(x[1:] for x in items) for items in lists}) == 6  # each rater has an order of their own
    with store.session() as s:
        seeds = s.scalars(select(type(raters[0]).seed).order_by(type(raters[0]).number)).all()
    assert len(set(seeds)) == 6
    # the same study seed gives the same lists (recorded seeds reproduce them); another seed other lists
    store2, study2, _ = make_study(tmp_path / "b", **kw)
    lists2 = [_items(store2, store2.rater(study2, t)) for t in store2.add_raters(study2, 6)]
    assert [[x[1:] for x in items] for items in lists2] == [[x[1:] for x in items] for items in lists]
    store3, study3, _ = make_study(tmp_path / "c", **{**kw, "seed": 8})
    lists3 = [_items(store3, store3.rater(study3, t)) for t in store3.add_raters(study3, 6)]
    assert [[x[1:] for x in items] for items in lists3] != [[x[1:] for x in items] for items in lists]


def test_tokens_are_kept_as_hashes_and_the_sqlite_file_is_private(tmp_path, make_study):
    store, study, admin = make_study(tmp_path, items_per_rater=6, anchors_per_rater=1)
    tokens = store.add_raters(study, 3)
    assert all(len(t) >= 32 for t in tokens) and len(set(tokens)) == 3
    assert store.check_admin(study, admin) and not store.check_admin(study, tokens[0])
    assert not store.check_admin(study, None) and not store.check_admin(study, admin[:-1])
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("study.db*"))
    assert raw and not any(t.encode() in raw for t in [admin, *tokens])
    assert stat.S_IMODE((tmp_path / "study.db").stat().st_mode) == 0o600
