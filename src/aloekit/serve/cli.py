"""`aloekit serve`: the verb. Checks every flag before loading anything, so a typo costs one line, not a model load."""

from __future__ import annotations

import os
import socket
from typing import Optional

import typer

API_KEY_ENV = "ALOEKIT_API_KEY"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        target: Optional[str] = typer.Argument(None, metavar="[MODEL | RUN_DIR]", help="A recipe run folder "
                                               "(serves its final model) or a model: registry name, hub id, "
                                               "HF folder, .gguf. Default: smollm2-135m-instruct."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; "
                                 "set an API key then)."),
        port: int = typer.Option(8000, "--port", "-p"),
        system: Optional[str] = typer.Option(None, "--system", help="Policy system prompt (default: the run's "
                                             "recipe, else aloekit's medical prompt)."),
        system_mode: str = typer.Option("keep", "--system-mode", help="For conversations that bring their own "
                                        "system message: keep | prepend (policy first) | replace."),
        api_key: Optional[str] = typer.Option(None, "--api-key", help=f"Require 'Authorization: Bearer KEY' on "
                                              f"/v1 (default: ${API_KEY_ENV} if set)."),
        guard: bool = typer.Option(False, "--guard", help="Check exchanges with a red-team judge; flagged ones "
                                   "get the policy's refusal."),
        guard_judge: str = typer.Option("llamaguard", "--guard-judge", help="llamaguard | llm"),
        guard_model: Optional[str] = typer.Option(None, "--guard-model", help="The judge's model (default for "
                                                  "llamaguard: meta-llama/Llama-Guard-3-1B)."),
        guard_on: str = typer.Option("both", "--guard-on", help="request | response | both"),
        backend: str = typer.Option("hf", "--backend", "-b", help="hf | vllm | llamacpp | openai"),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="With --backend openai: the OpenAI-compatible "
                                               "server to front (e.g. vLLM's `vllm serve`, http://127.0.0.1:8001/v1); "
                                               "MODEL is then its model id."),
        dtype: str = typer.Option("auto", "--dtype"),
        max_batch: int = typer.Option(32, "--max-batch", help="Requests gathered into one generate call."),
        max_concurrent: int = typer.Option(64, "--max-concurrent", help="Requests in flight; more get 429."),
        max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens"),
        max_tokens: int = typer.Option(2048, "--max-tokens", help="The most tokens a request may ask for."),
        default_max_tokens: int = typer.Option(512, "--default-max-tokens", help="When a request does not say."),
        timeout: float = typer.Option(300.0, "--timeout", help="Seconds a request may take (504 after)."),
        log: Optional[str] = typer.Option(None, "--log", help="JSONL request log file ('-': stdout)."),
        log_content: bool = typer.Option(False, "--log-content", help="Also log the messages and answers."),
        force: bool = typer.Option(False, "--force", help="Serve a run that a gate stopped."),
    ) -> None:
        """Serve a model (or a recipe run's final model) with the OpenAI chat API, the medical policy prompt and a
        chat page at /."""
        from pydantic import ValidationError

        from .. import console as con
        from ..config import ModelConfig
        from ..errors import UserError
        from ..extras import require
        from .config import GuardConfig, ServeConfig, resolve_target

        require("serve", "fastapi", "uvicorn", what="aloekit serve")
        choices = {"--system-mode": (system_mode, ("keep", "prepend", "replace")),
                   "--guard-judge": (guard_judge, ("llamaguard", "llm")),
                   "--guard-on": (guard_on, ("request", "response", "both")),
                   "--backend": (backend, ("hf", "vllm", "llamacpp", "openai")),
                   "--dtype": (dtype, ("auto", "bfloat16", "float16", "float32"))}
        for flag, (value, ok) in choices.items():
            if value not in ok:
                raise UserError(f"{flag} {value!r}: use one of {', '.join(ok)}")
        if (base_url is None) != (backend != "openai"):
            raise UserError("--backend openai needs --base-url (the server to front), and --base-url needs "
                            "--backend openai")
        if system is not None and not system.strip():
            raise UserError("--system is empty; give the policy prompt text, or leave the flag out")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        target_info = resolve_target(target, force=force)
        try:
            cfg = ServeConfig(
                model=ModelConfig(name=target_info["model"], backend=backend, dtype=dtype, batch_size=max_batch,
                                  base_url=base_url),
                served_name=target_info["served_name"], source=target_info["source"],
                system=system or target_info.get("system") or ServeConfig().system,
                system_source="--system" if system else target_info.get("system_source", "default"),
                system_mode=system_mode, host=host, port=port, api_key=key, max_prompt_tokens=max_prompt_tokens,
                max_tokens=max_tokens, default_max_tokens=min(default_max_tokens, max_tokens), max_batch=max_batch,
                max_concurrent=max_concurrent, timeout_s=timeout, log=log, log_content=log_content,
                guard=GuardConfig(enabled=guard, judge=guard_judge, model=guard_model, on=guard_on))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            flag = {"batch_size": "max-batch", "timeout_s": "timeout"}.get(where, where.replace("_", "-"))
            raise UserError(f"--{flag}: {err['msg']}") from None
        if not _port_free(host, port):
            raise UserError(f"cannot listen on {host}:{port}: the port is in use or the address is not this "
                            "machine's; pick another with --port / --host")
        if host not in ("127.0.0.1", "localhost", "::1") and not key:
            con.warn(f"listening on {host} without an API key: anyone who can reach this machine can use the model "
                     f"(set --api-key or ${API_KEY_ENV})")
        from .run import serve as run_server
        run_server(cfg)
