"""The listening study's database, through SQLAlchemy 2: a SQLite file by default, PostgreSQL (or any SQLAlchemy
URL) on a cluster.

Tables: ``studies`` (settings as JSON, the admin token's SHA-256, the media folder), ``systems``, ``prompts``
(caption, inpainted span), ``clips`` (one audio file under an opaque name: a system's clip or an anchor),
``raters`` (the token's SHA-256, never the token; the seed of their item order), ``assignments`` (a rater's items
in their order, each with an opaque public id), ``plays`` (seconds heard, capped by the server's own clock) and
``judgments`` (rater, item, clip, system, criterion, score, time, seconds heard).

Crash safety: a rater's submission (one score per criterion of one item) is stored in one transaction that is
committed before the reply leaves, so what a rater was told was saved survives a crash of the server; SQLite
runs in WAL mode with ``synchronous=FULL``. A returning rater resumes at the first item without judgments
(submissions are accepted in order only). Unique keys make a repeated submission a conflict, not a duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from sqlalchemy import (CheckConstraint, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint,
                        create_engine, event, func, select)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from arfm.listening.assign import plan_items
from arfm.listening.spec import KINDS, SCORE_MAX, SCORE_MIN, StudySettings

PLAY_SLACK_S = 1.0  # seconds of network / decoding delay allowed beyond the server's clock


class StoreError(Exception):
    status = 400


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class Invalid(StoreError):
    status = 422


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # stored as naive UTC on every backend


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    settings: Mapped[str] = mapped_column(Text)
    admin_token_hash: Mapped[str] = mapped_column(String(64))
    media_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class System(Base):
    __tablename__ = "systems"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text, default="")


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    key: Mapped[str] = mapped_column(String(200))
    caption: Mapped[str] = mapped_column(Text)
    span_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    span_end: Mapped[float | None] = mapped_column(Float, nullable=True)


class Clip(Base):
    __tablename__ = "clips"
    __table_args__ = (CheckConstraint(f"kind IN {KINDS}", name="clip_kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    system_id: Mapped[int | None] = mapped_column(ForeignKey("systems.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    file: Mapped[str] = mapped_column(String(64), unique=True)
    seconds: Mapped[float] = mapped_column(Float)
    caption_shown: Mapped[str] = mapped_column(Text, default="")
    peaks: Mapped[str] = mapped_column(Text, default="[]")


class Rater(Base):
    __tablename__ = "raters"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    number: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    seed: Mapped[str] = mapped_column(String(40))  # the seed of this rater's items and order (as text: 64-bit)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("rater_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    position: Mapped[int] = mapped_column(Integer)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id"))
    public_id: Mapped[str] = mapped_column(String(32), unique=True)


class Play(Base):
    __tablename__ = "plays"
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    played_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class Judgment(Base):
    __tablename__ = "judgments"
    __table_args__ = (UniqueConstraint("assignment_id", "criterion"),
                      CheckConstraint(f"score >= {SCORE_MIN} AND score <= {SCORE_MAX}", name="score_range"))
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id"))
    system_id: Mapped[int | None] = mapped_column(ForeignKey("systems.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    criterion: Mapped[str] = mapped_column(String(32))
    score: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    play_seconds: Mapped[float] = mapped_column(Float)


@dataclass
class StudyInfo:
    id: int
    name: str
    settings: StudySettings
    media_dir: Path
    systems: list[str]


def default_url() -> str:
    """``$ARFM_LISTENING_DB``, else a SQLite file ``<ARFM_HOME>/listening/listening.db``."""
    if os.environ.get("ARFM_LISTENING_DB"):
        return os.environ["ARFM_LISTENING_DB"]
    from arfm.tracking import home

    return f"sqlite:///{home() / 'listening' / 'listening.db'}"


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") else None


class Store:
    """One database of listening studies. Every write is its own transaction (``with session.begin()``)."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        path = _sqlite_file(self.url)
        kwargs: dict[str, Any] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # ratings and token hashes: readable by the owner only
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = create_engine(self.url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._session()

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------- studies
    def create_study(self, name: str, settings: StudySettings, systems: Iterable[tuple[str, str]],
                     prompts: Iterable[Mapping[str, Any]], clips: Iterable[Mapping[str, Any]],
                     media_dir: str | Path) -> str:
        """Store a study in one transaction; return its admin token (only its hash is kept).

        ``systems``: ``(name, source)`` in table order; ``prompts``: ``{key, caption, span}``; ``clips``:
        ``{prompt (key), system (name or None), kind, file, seconds, caption_shown, peaks}``."""
        token = secrets.token_urlsafe(32)
        with self.session() as s, s.begin():
            if s.scalar(select(Study.id).where(Study.name == name)) is not None:
                raise Conflict(f"a study named {name!r} exists in {self.safe_url}")
            study = Study(name=name, settings=settings.model_dump_json(), admin_token_hash=token_hash(token),
                          media_dir=str(Path(media_dir).resolve()))
            s.add(study)
            s.flush()
            sys_ids = {}
            for i, (sname, source) in enumerate(systems):
                row = System(study_id=study.id, position=i, name=sname, source=source)
                s.add(row)
                s.flush()
                sys_ids[sname] = row.id
            prompt_ids = {}
            for p in prompts:
                span = p.get("span") or (None, None)
                row = Prompt(study_id=study.id, key=str(p["key"]), caption=p["caption"], span_start=span[0],
                             span_end=span[1])
                s.add(row)
                s.flush()
                prompt_ids[str(p["key"])] = row.id
            for c in clips:
                if c["kind"] not in KINDS:
                    raise Invalid(f"clip kind {c['kind']!r}: one of {KINDS}")
                s.add(Clip(study_id=study.id, prompt_id=prompt_ids[str(c["prompt"])],
                           system_id=sys_ids[c["system"]] if c.get("system") else None, kind=c["kind"],
                           file=c["file"], seconds=float(c["seconds"]), caption_shown=c.get("caption_shown", ""),
                           peaks=json.dumps(c.get("peaks", []))))
        return token

    @property
    def safe_url(self) -> str:
        """The URL without its password (for messages)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def names(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(Study.name).order_by(Study.id)))

    def study(self, name: str) -> StudyInfo:
        with self.session() as s:
            st = s.scalar(select(Study).where(Study.name == name))
            if st is None:
                names = s.scalars(select(Study.name)).all()
                raise NotFound(f"no listening study {name!r} in {self.safe_url}; studies there: "
                               f"{', '.join(names) or 'none'}")
            systems = s.scalars(select(System.name).where(System.study_id == st.id).order_by(System.position)).all()
            return StudyInfo(st.id, st.name, StudySettings.model_validate_json(st.settings), Path(st.media_dir),
                             list(systems))

    def check_admin(self, study: StudyInfo, token: str | None) -> bool:
        if not token:
            return False
        with self.session() as s:
            want = s.scalar(select(Study.admin_token_hash).where(Study.id == study.id))
        return want is not None and secrets.compare_digest(want, token_hash(token))

    # -------------------------------------------------------------------------------------------- raters
    def add_raters(self, study: StudyInfo, n: int) -> list[str]:
        """``n`` new raters, each with a token (returned, only its hash stored) and a seeded, recorded list of
        items: the least-assigned clips of every system in equal shares, plus the anchors, in a shuffled order."""
        tokens = []
        cfg = study.settings
        with self.session() as s, s.begin():
            clips = s.execute(select(Clip.id, Clip.system_id, Clip.kind, Clip.prompt_id)
                              .where(Clip.study_id == study.id)).all()
            counts = dict(s.execute(select(Assignment.clip_id, func.count()).join(Clip, Assignment.clip_id == Clip.id)
                                    .where(Clip.study_id == study.id).group_by(Assignment.clip_id)).all())
            number = s.scalar(select(func.count()).select_from(Rater).where(Rater.study_id == study.id)) or 0
            for _ in range(n):
                seed = int(np.random.SeedSequence([cfg.seed, number]).generate_state(1, np.uint64)[0])
                order = plan_items(np.random.default_rng(seed), clips, counts, cfg.test_items_per_rater,
                                   cfg.anchors_per_rater)
                token = secrets.token_urlsafe(24)
                rater = Rater(study_id=study.id, number=number, token_hash=token_hash(token), seed=str(seed))
                s.add(rater)
                s.flush()
                for pos, clip_id in enumerate(order):
                    s.add(Assignment(rater_id=rater.id, position=pos, clip_id=clip_id,
                                     public_id=secrets.token_urlsafe(12)))
                    counts[clip_id] = counts.get(clip_id, 0) + 1
                tokens.append(token)
                number += 1
        return tokens

    def rater(self, study: StudyInfo, token: str | None) -> Rater | None:
        if not token:
            return None
        with self.session() as s:
            return s.scalar(select(Rater).where(Rater.token_hash == token_hash(token),
                                                Rater.study_id == study.id))

    # ------------------------------------------------------------------------------------------- items
    def _assignment(self, s: Session, rater: Rater, public_id: str) -> tuple[Assignment, Clip]:
        row = s.execute(select(Assignment, Clip).join(Clip, Assignment.clip_id == Clip.id)
                        .where(Assignment.public_id == public_id, Assignment.rater_id == rater.id)).first()
        if row is None:  # unknown, or another rater's item: the same answer
            raise NotFound("no such item for this rater")
        return row[0], row[1]

    @staticmethod
    def _next_position(s: Session, rater: Rater) -> int | None:
        rated = select(Judgment.assignment_id).where(Judgment.rater_id == rater.id)
        return s.scalar(select(func.min(Assignment.position))
                        .where(Assignment.rater_id == rater.id, Assignment.id.not_in(rated)))

    def state(self, study: StudyInfo, rater: Rater) -> dict[str, Any]:
        """What the page shows: progress and the next item (``None`` when every item is rated)."""
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.rater_id == rater.id))
            pos = self._next_position(s, rater)
            out: dict[str, Any] = {"total": total, "done": total if pos is None else pos, "item": None}
            if pos is None:
                return out
            a, clip = s.execute(select(Assignment, Clip).join(Clip, Assignment.clip_id == Clip.id)
                                .where(Assignment.rater_id == rater.id, Assignment.position == pos)).one()
            prompt = s.get(Prompt, clip.prompt_id)
            play = s.scalar(select(Play).where(Play.assignment_id == a.id))
            span = [prompt.span_start, prompt.span_end] if study.settings.task == "inpainting" else None
            out["item"] = {"id": a.public_id, "number": pos + 1, "seconds": clip.seconds, "span": span,
                           "caption": clip.caption_shown if study.settings.task == "quality" else "",
                           "peaks": json.loads(clip.peaks), "played_seconds": play.played_seconds if play else 0.0,
                           "required_seconds": round(study.settings.min_play_fraction * clip.seconds, 3)}
            return out

    def audio_path(self, study: StudyInfo, rater: Rater, public_id: str) -> Path:
        with self.session() as s:
            _, clip = self._assignment(s, rater, public_id)
            return study.media_dir / clip.file

    def record_play(self, rater: Rater, public_id: str, played_seconds: float) -> float:
        """Record seconds heard of an item; the value kept never exceeds the clip's length nor the time the
        server has seen pass since the first report of this item's playback (plus a small slack)."""
        now = _now()
        with self.session() as s, s.begin():
            a, clip = self._assignment(s, rater, public_id)
            play = s.scalar(select(Play).where(Play.assignment_id == a.id))
            if play is None:
                play = Play(assignment_id=a.id, started_at=now, updated_at=now, played_seconds=0.0)
                s.add(play)
            elapsed = (now - play.started_at).total_seconds() + PLAY_SLACK_S
            play.played_seconds = max(play.played_seconds, min(float(played_seconds), clip.seconds, elapsed))
            play.updated_at = now
            return play.played_seconds

    def submit(self, study: StudyInfo, rater: Rater, public_id: str, scores: Mapping[str, int]) -> int:
        """Store one item's scores (one judgment per criterion) in one transaction; return the count stored.

        Refused, storing nothing: an item that is not this rater's (:class:`NotFound`), scores that are not one
        integer 1-10 per criterion of the study (:class:`Invalid`), an item that is not the rater's next one,
        was already rated, or was not played long enough (:class:`Conflict`)."""
        keys = [c.key for c in study.settings.criteria]
        if set(scores) != set(keys):
            missing, unknown = sorted(set(keys) - set(scores)), sorted(set(scores) - set(keys))
            raise Invalid("scores: one per criterion " + ", ".join(keys)
                          + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
        for k, v in scores.items():
            if type(v) is not int or not SCORE_MIN <= v <= SCORE_MAX:
                raise Invalid(f"scores.{k}: an integer from {SCORE_MIN} to {SCORE_MAX} (got {v!r})")
        try:
            with self.session() as s, s.begin():
                a, clip = self._assignment(s, rater, public_id)
                pos = self._next_position(s, rater)
                if pos != a.position:
                    raise Conflict("this item was already rated" if pos is None or a.position < pos
                                   else "rate the items in their order")
                play = s.scalar(select(Play).where(Play.assignment_id == a.id))
                need = study.settings.min_play_fraction * clip.seconds
                heard = play.played_seconds if play else 0.0
                if heard + 1e-6 < need:
                    raise Conflict(f"play the clip first: {heard:.1f} s of {need:.1f} s heard")
                now = _now()
                for k in keys:
                    s.add(Judgment(assignment_id=a.id, rater_id=rater.id, clip_id=clip.id, system_id=clip.system_id,
                                   kind=clip.kind, criterion=k, score=int(scores[k]), created_at=now,
                                   play_seconds=heard))
        except IntegrityError:  # a concurrent submission of the same item won
            raise Conflict("this item was already rated") from None
        return len(keys)

    # ---------------------------------------------------------------------------------------- read-outs
    def judgments(self, study: StudyInfo) -> list[dict[str, Any]]:
        """Every judgment of the study with its rater number, item, prompt, clip, system and kind."""
        with self.session() as s:
            rows = s.execute(
                select(Judgment, Rater.number, Assignment.position, Assignment.public_id, Prompt.key, Clip.file,
                       System.name)
                .join(Rater, Judgment.rater_id == Rater.id).join(Assignment, Judgment.assignment_id == Assignment.id)
                .join(Clip, Judgment.clip_id == Clip.id).join(Prompt, Clip.prompt_id == Prompt.id)
                .outerjoin(System, Judgment.system_id == System.id)
                .where(Rater.study_id == study.id).order_by(Judgment.id)).all()
        return [{"judgment": j.id, "rater": number, "item": pos + 1, "item_id": pid, "prompt": key, "clip": file,
                 "system": sname or "", "kind": j.kind, "criterion": j.criterion, "score": j.score,
                 "time_utc": j.created_at.isoformat(timespec="milliseconds"), "play_seconds": round(j.play_seconds, 3)}
                for j, number, pos, pid, key, file, sname in rows]

    def progress(self, study: StudyInfo) -> dict[str, Any]:
        """Raters, items assigned and rated, and judgments per system and criterion (before screening)."""
        with self.session() as s:
            raters = s.scalar(select(func.count()).select_from(Rater).where(Rater.study_id == study.id))
            assigned = s.scalar(select(func.count()).select_from(Assignment)
                                .join(Rater, Assignment.rater_id == Rater.id).where(Rater.study_id == study.id))
            cells = s.execute(select(System.name, Judgment.criterion, func.count()).select_from(Judgment)
                              .join(System, Judgment.system_id == System.id).where(System.study_id == study.id)
                              .group_by(System.name, Judgment.criterion)).all()
        rated = {}
        for j in self.judgments(study):
            rated[(j["rater"], j["item"])] = True
        return {"raters": raters, "items_assigned": assigned, "items_rated": len(rated),
                "judgments": {f"{sname}/{crit}": n for sname, crit, n in cells}}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
