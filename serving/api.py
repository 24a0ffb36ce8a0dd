"""The HTTP API: a FastAPI app served by Ray Serve (``@serve.ingress``) in front of the model deployments.

=================  ==========================================================================================
``POST /v1/generate``  JSON body (:class:`~arfm.serving.schemas.GenerateRequest`) -> ``audio/wav``, or JSON with
                       the WAV in base64 and the generation info (``"format": "json"``)
``POST /v1/inpaint``   multipart form: the reference clip (``audio``), ``prompt``, ``start``, ``end``,
                       ``mode`` ... -> the clip with ``[start, end)`` regenerated, as above
``GET /v1/models``     the served models: name, paradigm, frame rate, length limit, default sampling
``GET /healthz``       200 when every model deployment answers and its last batch did not fail, else 503
``GET /docs``          the OpenAPI document (``/openapi.json``) FastAPI publishes, audio responses declared
=================  ==========================================================================================

Bad input is answered with a 4xx whose ``detail`` lists each problem with ``loc`` (the field, e.g.
``["body", "sample", "cfg"]``) and ``msg``; the request never reaches a batch. A request still waiting after
``limits.request_timeout_s`` is cancelled (504); a request whose client disconnects is cancelled. Either frees
its place in the model's queue. WAV responses carry ``X-Model``, ``X-Seed`` and ``X-Batch-Size`` headers.
"""


import asyncio
import base64
import json
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from arfm.serving.config import Limits
from arfm.serving.schemas import ErrorBody, GenerateRequest, GenerateResult, Health, InpaintForm, ModelInfo, \
    SampleOverrides

MAX_PROMPT_CHARS_BODY_MB = 16  # JSON bodies up to this much beyond a clip are read and validated field by field

app = FastAPI(
    title="arfm",
    summary="Text-to-music generation with auto-regressive and flow-matching models",
    version="1",
)

_ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in [
    (413, "the upload is larger than the server's limit"),
    (422, "a field is invalid; `detail[].loc` names it"),
    (504, "the request waited longer than the server's request timeout"),
]}
AUDIO = {
    200: {"model": GenerateResult, "description": "the generated audio: `audio/wav`, or JSON with `format=json`",
          "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
    **_ERRORS,
}


def _error(status: int, field: list[str | int], message: str, kind: str = "value_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": field, "msg": message, "type": kind}]})


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without echoing the input back (it may be a 10 MB prompt)."""
    items = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content=jsonable_encoder({"detail": items}))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI answers a body it cannot even decode (not UTF-8, a broken multipart form) with a bare 400: answer it
    as any other invalid body, a 422 naming the body."""
    if exc.status_code == 400:
        return _error(422, ["body"], f"cannot be parsed: {exc.detail}", "body_invalid")
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)


@app.middleware("http")
async def _limit_upload(request: Request, call_next):
    limit = request.app.state.max_body_bytes if hasattr(request.app.state, "max_body_bytes") else None
    size = request.headers.get("content-length")
    if limit and size and size.isdigit() and int(size) > limit:
        return _error(413, ["body"], f"{int(size)} bytes is above this server's limit of {limit} bytes",
                      "too_large")
    return await call_next(request)


def _validation_error(exc: ValidationError, prefix: tuple = ("body",)) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors()])


async def wait_or_cancel(response: Any, timeout_s: float) -> Any:
    """Await a model deployment's response; when it passes ``timeout_s`` or its caller is cancelled (the client
    went away), cancel it too (Serve then drops it from the replica's queue) and re-raise."""
    try:
        return await asyncio.wait_for(response, timeout_s)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        response.cancel()
        raise


def _document_models(names: list[str]) -> dict[str, Any]:
    """The OpenAPI document with the served model names as the values of every `model` field."""
    app.openapi_schema = None
    schema = app.openapi()
    for component in schema["components"]["schemas"].values():
        prop = component.get("properties", {}).get("model")
        if prop is not None:
            prop["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}]
    return schema


@serve.deployment(name="api", max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Api:
    def __init__(self, models: dict[str, Any], limits: dict[str, Any]) -> None:
        self.models = models  # name -> DeploymentHandle of its ModelServer
        self.limits = Limits.model_validate(limits)
        # a clip (base64 in JSON: 4/3 of it) plus room for a long prompt to reach validation and be named
        app.state.max_body_bytes = int((self.limits.max_upload_mb * 4 / 3 + MAX_PROMPT_CHARS_BODY_MB) * 2**20)
        self._infos: list[dict[str, Any]] | None = None
        app.openapi_schema = _document_models(list(models))

    # ------------------------------------------------------------------------------------- helpers
    def _handle(self, name: str | None):
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.items()))
            return None, _error(422, ["body", "model"], f"required when several models are served "
                                f"({', '.join(self.models)})", "missing")
        if name not in self.models:
            return None, _error(422, ["body", "model"], f"no model named {name!r} (served: "
                                f"{', '.join(self.models)})")
        return name, self.models[name]

    async def _call(self, name: str, handle, body: dict[str, Any], audio: bytes | None) -> Response:
        try:
            out = await wait_or_cancel(handle.generate.remote(body, audio), self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(504, ["request"], f"not done after the server's timeout of "
                          f"{self.limits.request_timeout_s:g} s; cancelled", "timeout")
        if "error" in out:
            field = out["error"]["field"]
            return _error(422, ["body", *field.split(".")], out["error"]["message"])
        info = out["info"]
        if body.get("format") == "json":
            result = GenerateResult(model=name, paradigm=info["paradigm"], sample_rate=info["sample_rate"],
                                    seconds=info["seconds"], seed=info["seed"], batch=info["batch"],
                                    info={k: v for k, v in info.items() if k != "entropy"},
                                    audio_wav_base64=base64.b64encode(out["wav"]).decode())
            return JSONResponse(jsonable_encoder(result))
        return Response(out["wav"], media_type="audio/wav",
                        headers={"X-Model": name, "X-Seed": str(info["seed"]), "X-Batch-Size": str(info["batch"])})

    # ------------------------------------------------------------------------------------- routes
    @app.post("/v1/generate", response_class=Response, responses=AUDIO)
    async def generate(self, body: GenerateRequest) -> Response:
        """Generate music from a text prompt (and optional chord, melody and drum controls)."""
        name, handle = self._handle(body.model)
        if name is None:
            return handle
        return await self._call(name, handle, body.model_dump(exclude_none=True), None)

    @app.post("/v1/inpaint", response_class=Response, responses=AUDIO)
    async def inpaint(self, form: Annotated[InpaintForm, Form()],
                      audio: Annotated[UploadFile, File(description="the reference clip (WAV, FLAC or OGG)")]
                      ) -> Response:
        """Regenerate the span ``[start, end)`` seconds of an uploaded clip, keeping the rest."""
        body = form.model_dump(exclude_none=True)
        if form.sample is not None:
            try:
                body["sample"] = SampleOverrides.model_validate(json.loads(form.sample)).model_dump(
                    exclude_none=True)
            except json.JSONDecodeError as exc:
                return _error(422, ["body", "sample"], f"not a JSON object: {exc}", "json_invalid")
            except ValidationError as exc:
                raise _validation_error(exc, ("body", "sample")) from None
        name, handle = self._handle(form.model)
        if name is None:
            return handle
        return await self._call(name, handle, body, await audio.read())

    @app.get("/v1/models", response_model=list[ModelInfo])
    async def list_models(self) -> list[dict[str, Any]]:
        """The served models and their defaults."""
        if self._infos is None:
            self._infos = list(await asyncio.gather(*(h.info.remote() for h in self.models.values())))
        return self._infos

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}})
    async def healthz(self) -> Any:
        """Whether every model deployment answers and generated its last batch."""
        try:
            states = await asyncio.wait_for(asyncio.gather(*(h.health.remote() for h in self.models.values())),
                                            timeout=10)
        except Exception as exc:  # noqa: BLE001 - a replica that does not answer, whatever the reason
            return _error(503, ["models"], f"a model deployment does not answer: {type(exc).__name__}", "unhealthy")
        bad = {n: s["last_failure"] for n, s in zip(self.models, states) if not s["ok"]}
        if bad:
            return _error(503, ["models"], f"failing: {bad}", "unhealthy")
        return {"status": "ok", "models": list(self.models)}
