"""Build the server from a ServeConfig and run it under uvicorn (graceful shutdown on SIGINT / SIGTERM: no new
connections, open requests finish within --shutdown-timeout, the engine drains its queue)."""

from __future__ import annotations

import time

from .. import console as con
from ..config import SamplingConfig
from .app import RequestLog, create_app
from .config import ServeConfig
from .engine import Engine


def build(cfg: ServeConfig, backend=None, guard=None):
    """(app, engine): the backend loaded and warmed up, the guard's judge loaded, nothing listening yet."""
    from ..backends import load_backend
    t = time.perf_counter()
    if backend is None:
        backend = load_backend(cfg.model)
    # one short generation now: the first request should not pay for lazy initialisation, and a model that cannot
    # generate should fail here, not on a user's request
    backend.generate([[{"role": "system", "content": cfg.system}, {"role": "user", "content": "Hello"}]],
                     SamplingConfig(max_new_tokens=2))
    if guard is None and cfg.guard.enabled:
        from .guard import Guard
        guard = Guard(cfg.guard)
    con.note(f"[dim]model ready in {time.perf_counter() - t:.1f} s[/dim]")
    engine = Engine(backend, max_batch=cfg.max_batch, window_s=cfg.batch_window_ms / 1000)
    return create_app(cfg, engine, guard=guard, log=RequestLog(cfg.log, cfg.log_content)), engine


def serve(cfg: ServeConfig) -> None:
    import uvicorn
    con.note(f"loading {cfg.model.name} ({cfg.model.backend}) ...")
    app, _ = build(cfg)
    shown = cfg.system if len(cfg.system) <= 100 else cfg.system[:97] + "..."
    con.note(f"serving [bold]{cfg.served_name}[/bold] at http://{cfg.host}:{cfg.port}/v1 (chat page: "
             f"http://{cfg.host}:{cfg.port}/)\n  policy ({cfg.system_source}, mode {cfg.system_mode}): {shown}\n"
             f"  guard: {'on (' + cfg.guard.judge + ', ' + cfg.guard.on + ')' if cfg.guard.enabled else 'off'}; "
             f"API key: {'required' if cfg.api_key else 'none'}; log: {cfg.log or 'off'}")
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=int(cfg.shutdown_timeout_s) or None, lifespan="on")
    uvicorn.Server(config).run()
