"""The rater page and its API (FastAPI), for one study of a :class:`~arfm.listening.store.Store`.

Raters open ``/r/<token>`` (the link ``arfm study invite`` prints); the page (``static/``) sends the token in the
``X-Rater-Token`` header of every API call, so the API's URLs carry no secret, and ``Referrer-Policy:
no-referrer`` keeps the link out of other sites' logs. Items and their audio are addressed by per-rater random
ids; nothing the page receives names a system, a run or a file.

Rater API: ``GET /api/state`` (progress and the next item), ``GET /api/items/<id>/audio``,
``POST /api/items/<id>/play`` (seconds heard), ``POST /api/items/<id>/ratings`` (one integer 1-10 per criterion;
stored only after the clip was played, in order, once). Admin API (``Authorization: Bearer <admin token>``):
``POST /api/admin/raters``, ``GET /api/admin/progress``, ``GET /api/admin/results``, ``GET /api/admin/
judgments.csv``. A refused request gets a 4xx and stores nothing. The server logs method, route template and
status only: no token, no item id.
"""


import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from arfm.listening.spec import DEFAULT_HOST, DEFAULT_PORT, INSTRUCTIONS, PlayIn, RatersIn, RatingsIn
from arfm.listening.store import Rater, Store, StoreError, StudyInfo

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("arfm.listening")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


def create_app(store: Store, study_name: str, base_url: str = "") -> FastAPI:
    """The app serving ``study_name`` (raises :class:`~arfm.listening.store.NotFound` when there is none)."""
    study = store.study(study_name)
    app = FastAPI(title="arfm listening study", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.study = store, study

    @app.middleware("http")
    async def _headers_and_log(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        route = getattr(request.scope.get("route"), "path", None)
        if route is None:  # a static file (no secret in its path) or an unknown path (which might hold one)
            route = request.url.path if request.url.path.startswith("/static/") else "(no route)"
        log.info("%s %s %d %.0f ms", request.method, route, response.status_code, 1000 * (time.perf_counter() - t0))
        return response

    @app.exception_handler(StoreError)
    async def _store_error(_request: Request, exc: StoreError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def rater(x_rater_token: Annotated[str | None, Header()] = None) -> Rater:
        r = store.rater(study, x_rater_token)
        if r is None:
            raise HTTPException(401, "a valid rater token is needed (open your link again)")
        return r

    def admin(authorization: Annotated[str | None, Header()] = None) -> StudyInfo:
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else None
        if not store.check_admin(study, token):
            raise HTTPException(401, "admin token needed", headers={"WWW-Authenticate": "Bearer"})
        return study

    @app.get("/r/{token}", include_in_schema=False)
    def page(token: str) -> Response:
        if store.rater(study, token) is None:
            return PlainTextResponse("This link is not valid.", status_code=404)
        return FileResponse(STATIC / "rate.html", media_type="text/html")

    @app.get("/api/state")
    def state(r: Annotated[Rater, Depends(rater)]) -> dict[str, Any]:
        cfg = study.settings
        return {"title": cfg.title, "task": cfg.task, "instructions": INSTRUCTIONS[cfg.task],
                "criteria": [c.model_dump() for c in cfg.criteria], **store.state(study, r)}

    @app.get("/api/items/{item}/audio")
    def audio(item: str, r: Annotated[Rater, Depends(rater)]) -> Response:
        return FileResponse(store.audio_path(study, r, item), media_type="audio/wav")

    @app.post("/api/items/{item}/play")
    def play(item: str, body: PlayIn, r: Annotated[Rater, Depends(rater)]) -> dict[str, float]:
        return {"played_seconds": store.record_play(r, item, body.played_seconds)}

    @app.post("/api/items/{item}/ratings", status_code=201)
    def ratings(item: str, body: RatingsIn, r: Annotated[Rater, Depends(rater)]) -> dict[str, Any]:
        stored = store.submit(study, r, item, body.scores)
        return {"stored": stored, **{k: v for k, v in store.state(study, r).items() if k != "item"}}

    @app.post("/api/admin/raters", status_code=201)
    def add_raters(body: RatersIn, s: Annotated[StudyInfo, Depends(admin)], request: Request) -> dict[str, Any]:
        base = base_url or str(request.base_url).rstrip("/")
        return {"links": [f"{base}/r/{t}" for t in store.add_raters(s, body.n)]}

    @app.get("/api/admin/progress")
    def progress(s: Annotated[StudyInfo, Depends(admin)]) -> dict[str, Any]:
        return store.progress(s)

    @app.get("/api/admin/results")
    def results(s: Annotated[StudyInfo, Depends(admin)]) -> dict[str, Any]:
        from arfm.listening.results import compute

        return compute(store, s).to_dict()

    @app.get("/api/admin/judgments.csv")
    def judgments_csv(s: Annotated[StudyInfo, Depends(admin)]) -> Response:
        from arfm.listening.results import compute, judgments_csv

        return PlainTextResponse(judgments_csv(compute(store, s)), media_type="text/csv")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(db_url: str | None, study_name: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          base_url: str = "") -> None:
    """Run the app with uvicorn on ``host:port`` (127.0.0.1 unless told otherwise), without uvicorn's access
    log (it would print every URL, rater links included): this module logs route templates instead."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(Store(db_url), study_name, base_url)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
