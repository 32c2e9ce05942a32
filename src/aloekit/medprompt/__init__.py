"""Medprompt-style inference: kNN few-shot over self-generated chains of thought, self-consistency and
choice-shuffle ensembles, with adaptive stopping and per-question compute accounting."""

from .config import STRATEGIES, DBConfig, MedpromptEvalConfig, StrategyConfig
from .engine import evaluate, summarize

__all__ = ["STRATEGIES", "DBConfig", "MedpromptEvalConfig", "StrategyConfig", "evaluate", "summarize", "build_db",
           "ExampleDB", "run"]


def __getattr__(name):  # heavy imports (faiss, sentence-transformers) only when used
    if name in ("build_db", "ExampleDB"):
        from . import db
        return getattr(db, name)
    if name == "run":
        from .runner import run
        return run
    raise AttributeError(name)
