"""The OpenAI-compatible HTTP layer (FastAPI): request checks, the policy prompt, the guard, streaming, errors in
OpenAI's shape, the request log. Generation happens in the Engine's thread (engine.py)."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, and the FastAPI names they
# use are imported inside create_app (the module must import without the serve extra, like every aloekit module).
import asyncio
import contextlib
import hmac
import html
import json
import secrets
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from importlib.resources import files
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from ..config import SamplingConfig
from .config import DISCLAIMER, ServeConfig
from .engine import Engine, Job, PromptTooLong


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(e: APIError):
    from fastapi.responses import JSONResponse
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


# ---------------------------------------------------------------- the request body


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        if any(p.type != "text" for p in self.content):
            raise APIError(400, "only text content parts are supported by this server", param="messages")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    # unknown fields are accepted (clients send `user`, metadata ...); the ones that would change the answer and
    # that we cannot honour are refused below rather than silently ignored
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logprobs: bool | None = False
    tools: list | None = None
    response_format: dict | None = None


def _nonzero(v) -> bool:
    return v not in (None, 0, 0.0)


UNSUPPORTED = {"presence_penalty": _nonzero, "frequency_penalty": _nonzero, "logprobs": bool, "tools": bool, "functions": bool, "logit_bias": bool,
               "response_format": lambda v: bool(v) and v.get("type") != "text"}


def _validation_message(err) -> tuple[str, str | None]:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
    if e.get("type") == "missing":
        return f"'{loc}' is a required property", loc or None
    return f"'{loc}': {e.get('msg')}", loc or None


# ---------------------------------------------------------------- policy


def apply_policy(messages: list[dict], system: str, mode: str) -> list[dict]:
    """The policy prompt goes into every conversation without a system message; `mode` says what happens to one that
    has its own: keep it, put the policy before it, or replace it. A single system message comes first (chat
    templates expect that)."""
    own = [m["content"] for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    if not own or mode == "replace":
        text = system
    elif mode == "prepend":
        text = system + "\n\n" + "\n\n".join(own)
    else:
        text = "\n\n".join(own)
    return [{"role": "system", "content": text}] + rest


# ---------------------------------------------------------------- the request log


class RequestLog:
    def __init__(self, path: str | None, content: bool):
        self.content = content
        self._lock = threading.Lock()
        self._fh = None
        if path == "-":
            self._fh = sys.stdout
        elif path:
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's lifetime

    def write(self, row: dict) -> None:
        if self._fh is None:
            return
        line = json.dumps(row, ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh not in (None, sys.stdout):
            self._fh.close()


# ---------------------------------------------------------------- the app


def _page(cfg: ServeConfig) -> str:
    text = files("aloekit").joinpath("resources/serve/chat.html").read_text(encoding="utf-8")
    values = {"__MODEL__": cfg.served_name, "__SYSTEM__": cfg.system, "__DISCLAIMER__": DISCLAIMER,
              "__SYSTEM_SOURCE__": cfg.system_source, "__SYSTEM_MODE__": cfg.system_mode,
              "__GUARD__": (f"guard on ({cfg.guard.judge}, {cfg.guard.on})" if cfg.guard.enabled else "guard off"),
              "__MAX_TOKENS__": str(min(cfg.default_max_tokens, cfg.max_tokens))}
    for k, v in values.items():
        text = text.replace(k, html.escape(v))
    return text.replace("__NEEDS_KEY__", "true" if cfg.api_key else "false")


def create_app(cfg: ServeConfig, engine: Engine, guard=None, log: Optional[RequestLog] = None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    log = log or RequestLog(cfg.log, cfg.log_content)
    state: dict[str, Any] = {"active": 0, "served": 0, "failed": 0, "started": time.time()}
    names = {cfg.served_name, cfg.model.name}
    created = int(time.time())
    fingerprint = f"aloekit-{__version__}"

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        if not engine._thread.is_alive():
            engine.start()
        yield
        # uvicorn has stopped accepting and waited for open requests (up to its graceful timeout)
        await asyncio.get_running_loop().run_in_executor(None, engine.stop, cfg.shutdown_timeout_s)
        if guard is not None:
            guard.close()
        log.close()

    app = FastAPI(title="aloekit serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(APIError)
    async def _api_error(_req, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, e: RequestValidationError):
        msg, param = _validation_message(e)
        return error_response(APIError(400, msg, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(APIError(e.status_code, str(e.detail), kind))

    @app.exception_handler(Exception)
    async def _bug(_req, e: Exception):
        return error_response(APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))

    def check_key(request: Request) -> None:
        if not cfg.api_key:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
            raise APIError(401, "Incorrect API key provided" if given else "Missing API key: send "
                           "'Authorization: Bearer <key>'", "invalid_request_error", code="invalid_api_key")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page(cfg))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": cfg.served_name, "in_flight": state["active"], "queued": engine.queued(),
                "served": state["served"], "failed": state["failed"], "batches": engine.batches,
                "uptime_s": round(time.time() - state["started"], 1)}

    def model_card() -> dict:
        return {"id": cfg.served_name, "object": "model", "created": created, "owned_by": "aloekit"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict:
        check_key(request)
        if model_id not in names:
            raise APIError(404, f"The model '{model_id}' does not exist", "not_found_error", "model",
                           "model_not_found")
        return model_card()

    async def parse(request: Request) -> ChatRequest:
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > cfg.max_body_bytes:
            raise APIError(413, f"request body of {size} bytes is over this server's limit of "
                           f"{cfg.max_body_bytes}", code="request_too_large")
        raw = await request.body()
        if len(raw) > cfg.max_body_bytes:
            raise APIError(413, f"request body is over this server's limit of {cfg.max_body_bytes} bytes",
                           code="request_too_large")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"We could not parse the JSON body of your request ({e}). The body must be "
                           "a JSON object") from None
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as e:
            msg, param = _validation_message(e)
            raise APIError(400, msg, param=param) from None
        if req.model not in names:
            raise APIError(404, f"The model '{req.model}' does not exist; this server serves "
                           f"'{cfg.served_name}' (GET /v1/models)", "not_found_error", "model", "model_not_found")
        for key, bad in UNSUPPORTED.items():
            value = getattr(req, key, None) if key in ChatRequest.model_fields else (req.model_extra or {}).get(key)
            if value is not None and bad(value):
                raise APIError(400, f"'{key}' is not supported by this server", param=key)
        if req.n > cfg.max_n:
            raise APIError(400, f"n={req.n} is over this server's limit of {cfg.max_n}", param="n")
        return req

    def sampling_of(req: ChatRequest) -> tuple[SamplingConfig, int]:
        max_new = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
        if max_new > cfg.max_tokens:
            raise APIError(400, f"max_tokens={max_new} is over this server's limit of {cfg.max_tokens}",
                           param="max_tokens")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise APIError(400, "'stop' takes up to 4 non-empty strings", param="stop")
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        s = SamplingConfig(max_new_tokens=max_new, temperature=req.temperature or 0.0,
                           top_p=req.top_p if req.top_p is not None else 1.0, stop=stop, seed=seed)
        return s, seed

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        row: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "id": rid,
                               "path": "/v1/chat/completions"}
        admitted = False
        try:
            check_key(request)
            req = await parse(request)
            sampling, seed = sampling_of(req)
            if state["active"] >= cfg.max_concurrent:
                raise APIError(429, f"the server is at its limit of {cfg.max_concurrent} requests in flight; "
                               "retry shortly", "rate_limit_error", code="server_busy", headers={"Retry-After": "1"})
            state["active"] += 1
            admitted = True
            chat = apply_policy([{"role": "assistant" if m.role == "assistant" else
                                  ("system" if m.role in ("system", "developer") else "user"), "content": m.text()}
                                 for m in req.messages], cfg.system, cfg.system_mode)
            row.update(stream=req.stream, n=req.n, max_tokens=sampling.max_new_tokens,
                       temperature=sampling.temperature, seed=req.seed)
            if cfg.log_content:
                row["messages"] = chat
            headers: dict[str, str] = {"x-request-id": rid}
            guard_rows = []
            if guard is not None and guard.on_request:
                d = await guard.check_request(chat)
                guard_rows.append(d.as_log())
                headers["x-guard-request"] = d.label
                headers["x-guard-latency-ms"] = f"{d.ms:.1f}"
                if d.flagged:
                    headers["x-guard-categories"] = ",".join(d.categories)
                    from ..backends import Completion
                    row["guard"] = guard_rows
                    refused = [Completion(cfg.guard.refusal, 0, 0, "content_filter") for _ in range(req.n)]
                    if req.stream:
                        admitted = False  # replay releases the slot
                        return StreamingResponse(replay(req, rid, refused, headers, row, t0), headers={
                            **headers, "Cache-Control": "no-cache"}, media_type="text/event-stream")
                    return finish(rid, refused, headers, row, t0)
            job = Job(chat=chat, sampling=sampling, n=req.n, seed=seed, stream=req.stream,
                      loop=asyncio.get_running_loop(), events=asyncio.Queue(), max_prompt_tokens=cfg.max_prompt_tokens)
            deadline = time.monotonic() + cfg.timeout_s
            engine.submit(job)
            check_answers = guard is not None and guard.on_response
            if req.stream and not check_answers:
                admitted = False  # the stream's own generator releases the slot
                return StreamingResponse(stream(req, rid, job, deadline, headers, row, t0), headers={
                    **headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                    media_type="text/event-stream")
            completions = await wait_done(job, deadline)
            row["queue_ms"] = round(((job.started_at or time.monotonic()) - job.queued_at) * 1000, 1)
            row["batch"] = job.batch_size
            if check_answers:
                ds = await guard.check_responses(chat, [c.text for c in completions])
                guard_rows += [d.as_log() for d in ds]
                ms = float(headers.get("x-guard-latency-ms", 0)) + sum(d.ms for d in ds)
                headers["x-guard-latency-ms"] = f"{ms:.1f}"
                headers["x-guard-response"] = "unsafe" if any(d.flagged for d in ds) else ds[0].label
                flagged_cats = sorted({c for d in ds if d.flagged for c in d.categories})
                if flagged_cats:
                    headers["x-guard-categories"] = ",".join(flagged_cats)
                for i, d in enumerate(ds):
                    if d.flagged:
                        c = completions[i]
                        completions[i] = type(c)(cfg.guard.refusal, c.prompt_tokens, c.completion_tokens,
                                                 "content_filter")
            if guard_rows:
                row["guard"] = guard_rows
            if req.stream:  # checked answers: sent whole, as one event stream
                admitted = False
                return StreamingResponse(replay(req, rid, completions, headers, row, t0), headers={
                    **headers, "Cache-Control": "no-cache"}, media_type="text/event-stream")
            return finish(rid, completions, headers, row, t0)
        except APIError as e:
            state["failed"] += 1
            row.update(status=e.status, error=e.message, ms=round((time.perf_counter() - t0) * 1000, 1))
            log.write(row)
            return error_response(e)
        finally:
            if admitted:
                state["active"] -= 1

    async def next_event(job: Job, deadline: float):
        """The engine's next (kind, payload) for this job; past the deadline the job is cancelled and 504."""
        try:
            return await asyncio.wait_for(job.events.get(), timeout=max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            job.cancelled = True
            raise APIError(504, f"the request took longer than this server's timeout of {cfg.timeout_s:g} s",
                           "timeout_error", code="timeout") from None

    async def wait_done(job: Job, deadline: float):
        while True:
            kind, payload = await next_event(job, deadline)
            if kind == "done":
                return payload
            if kind == "error":
                raise engine_error(payload)

    def engine_error(e: Exception) -> APIError:
        if isinstance(e, PromptTooLong):
            return APIError(400, f"This model's maximum prompt length is {e.limit} tokens; your messages have "
                            f"{e.tokens} tokens. Shorten the conversation", param="messages",
                            code="context_length_exceeded")
        return APIError(500, f"generation failed: {type(e).__name__}: {e}", "server_error")

    def usage(completions) -> dict:
        p = completions[0].prompt_tokens if completions else 0
        c = sum(x.completion_tokens for x in completions)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def finish(rid, completions, headers, row, t0) -> JSONResponse:
        body = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": cfg.served_name,
                "system_fingerprint": fingerprint,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text.strip()},
                             "logprobs": None, "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
                "usage": usage(completions)}
        done(row, completions, t0, 200)
        return JSONResponse(body, headers=headers)

    def done(row, completions, t0, status, **extra) -> None:
        state["served"] += status == 200
        u = usage(completions) if completions else {}
        row.update(status=status, ms=round((time.perf_counter() - t0) * 1000, 1), **u, **extra)
        if completions:
            row["finish"] = [c.finish_reason for c in completions]
        if cfg.log_content and completions:
            row["answers"] = [c.text.strip() for c in completions]
        log.write(row)

    def chunk(rid: str, created: int, choices: list[dict], **extra) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": cfg.served_name,
                "system_fingerprint": fingerprint, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def opening(rid, created, n) -> list[str]:
        return [chunk(rid, created, [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                      "finish_reason": None}]) for i in range(n)]

    def closing(req, rid, created, completions) -> list[str]:
        out = [chunk(rid, created, [{"index": i, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason}])
               for i, c in enumerate(completions)]
        if req.stream_options and req.stream_options.include_usage:
            out.append(chunk(rid, created, [], usage=usage(completions)))
        return out + ["data: [DONE]\n\n"]

    async def stream(req, rid, job: Job, deadline: float, headers, row, t0):
        created = int(time.time())
        sent_any = [False] * req.n
        completions = None
        status = 200
        try:
            for piece in opening(rid, created, req.n):
                yield piece
            first_token = None
            while True:
                kind, payload = await next_event(job, deadline)
                if kind == "delta":
                    if first_token is None:
                        first_token = time.perf_counter()
                        row["ttft_ms"] = round((first_token - t0) * 1000, 1)
                    text = payload.lstrip() if not sent_any[0] else payload
                    if text:
                        sent_any[0] = True
                        yield chunk(rid, created, [{"index": 0, "delta": {"content": text}, "logprobs": None,
                                                    "finish_reason": None}])
                elif kind == "done":
                    completions = payload
                    break
                else:
                    raise engine_error(payload)
            row["queue_ms"] = round(((job.started_at or time.monotonic()) - job.queued_at) * 1000, 1)
            row["batch"] = job.batch_size
            for i, c in enumerate(completions):
                if not sent_any[i]:  # answered in a batch: the whole answer as one delta
                    row.setdefault("ttft_ms", round((time.perf_counter() - t0) * 1000, 1))
                    yield chunk(rid, created, [{"index": i, "delta": {"content": c.text.strip()}, "logprobs": None,
                                                "finish_reason": None}])
            for piece in closing(req, rid, created, completions):
                yield piece
        except APIError as e:
            status = e.status
            row["error"] = e.message
            yield f"data: {json.dumps(e.body())}\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            # the client went away: its answer is dropped, the server carries on
            job.cancelled = True
            status = 499
            row["error"] = "client disconnected"
            raise
        finally:
            state["active"] -= 1
            if status != 200:
                state["failed"] += 1
            done(row, completions or [], t0, status)

    async def replay(req, rid, completions, headers, row, t0):
        created = int(time.time())
        try:
            for piece in opening(rid, created, req.n):
                yield piece
            for i, c in enumerate(completions):
                yield chunk(rid, created, [{"index": i, "delta": {"content": c.text.strip()}, "logprobs": None,
                                            "finish_reason": None}])
            for piece in closing(req, rid, created, completions):
                yield piece
        finally:
            state["active"] -= 1
            done(row, completions, t0, 200)

    return app
