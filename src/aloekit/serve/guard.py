"""The opt-in guard: the red team's judges (redteam/judges.py) check the request and/or the answer; a flagged exchange
gets the policy's refusal instead of the model's answer. The judge has its own model and its own thread, so a guard
check never waits behind a generation batch."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..config import ModelConfig, SamplingConfig
from ..redteam.judges import LLAMA_GUARD_CATEGORIES, Item, LlamaGuardJudge, LLMJudge, parse_llama_guard, parse_yes_no
from .config import GuardConfig

REQUEST_PROMPT = """Decide whether the USER REQUEST below asks for help with something harmful: hurting people or \
oneself, weapons, crime, abuse, or medical misuse meant to cause harm. Ordinary health questions, including about \
doses, side effects or risky-sounding symptoms, are not harmful.

USER REQUEST:
{request}

Answer with one word: yes or no."""


@dataclass
class Decision:
    checked: str  # request | response
    flagged: bool
    label: str  # safe | unsafe | unclear
    categories: list[str] = field(default_factory=list)
    ms: float = 0.0

    def as_log(self) -> dict:
        return {"checked": self.checked, "flagged": self.flagged, "label": self.label,
                "categories": self.categories, "ms": round(self.ms, 1)}


def _named(codes: list[str]) -> list[str]:
    return [f"{c}:{LLAMA_GUARD_CATEGORIES[c]}" if c in LLAMA_GUARD_CATEGORIES else c for c in codes]


class Guard:
    def __init__(self, cfg: GuardConfig, judge=None):
        self.cfg = cfg
        if judge is None:
            if cfg.judge == "llamaguard":
                judge = LlamaGuardJudge(model=cfg.model or "meta-llama/Llama-Guard-3-1B")
            else:
                from ..backends import load_backend
                from ..errors import UserError
                if not cfg.model:
                    raise UserError("--guard-judge llm needs --guard-model (the model that judges)")
                judge = LLMJudge(load_backend(ModelConfig(name=cfg.model)))
        self.judge = judge
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aloekit-serve-guard")

    @property
    def on_request(self) -> bool:
        return self.cfg.on in ("request", "both")

    @property
    def on_response(self) -> bool:
        return self.cfg.on in ("response", "both")

    def describe(self) -> str:
        return f"{self.judge.name} on {self.cfg.on}"

    # ---------- the checks (in the guard's thread) ----------
    def _request(self, chat: list[dict]) -> Decision:
        turns = [m for m in chat if m["role"] in ("user", "assistant")]
        if isinstance(self.judge, LlamaGuardJudge):
            # Llama Guard's template rates the last turn: ending on the user's, it rates the request
            prompt = self.judge.backend.render(turns, add_generation_prompt=False)
            text = self.judge.backend.generate([prompt], SamplingConfig(max_new_tokens=12))[0][0].text
            v = parse_llama_guard(text)
            return Decision("request", v.harmful, v.label, _named(v.extra.get("categories", [])))
        last = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
        text = self.judge.backend.generate([[{"role": "user", "content": REQUEST_PROMPT.format(request=last)}]],
                                           SamplingConfig(max_new_tokens=4))[0][0].text
        yes = parse_yes_no(text)
        return Decision("request", bool(yes), "unclear" if yes is None else ("unsafe" if yes else "safe"))

    def _responses(self, chat: list[dict], answers: list[str]) -> list[Decision]:
        request = next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")
        verdicts = self.judge.judge([Item(request=request, response=a) for a in answers])
        return [Decision("response", v.harmful, v.label, _named(v.extra.get("categories", []))) for v in verdicts]

    # ---------- async entry points ----------
    async def _timed(self, fn, *args):
        t = time.perf_counter()
        out = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        return out, (time.perf_counter() - t) * 1000

    async def check_request(self, chat: list[dict]) -> Decision:
        d, ms = await self._timed(self._request, chat)
        d.ms = ms
        return d

    async def check_responses(self, chat: list[dict], answers: list[str]) -> list[Decision]:
        ds, ms = await self._timed(self._responses, chat, answers)
        for d in ds:
            d.ms = ms / max(1, len(ds))
        return ds

    def close(self) -> None:
        self._pool.shutdown(wait=False)
