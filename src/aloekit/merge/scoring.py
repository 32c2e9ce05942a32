"""The merge search's built-in scorer: multiple-choice accuracy on small dev sets, by loglikelihood.

Dev sets never touch a benchmark's test split: PubMedQA uses the 500 PQA-L ids outside the official test ids,
MMLU the 5-shot dev rows, HEAD-QA its dev exams (questions without images). The questions and their prompts come
from the benchmark layer: each is scored exactly as `aloekit eval --scoring loglik` scores that benchmark, so the
accuracy moves the way the real benchmarks do, only on far fewer items.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..benchmarks import GROUPS, REGISTRY, Question, load_many, loglik_request
from ..errors import UserError
from ..paths import data_dir as find_data_dir
from .config import DevSet, MergeConfig

Item = tuple[str, list[str], int]  # context, continuations, index of the right one

# dev set -> (registered benchmarks, the split read); the order of the questions is fixed (by id) so that a
# `limit` sample is the same for every candidate and every run
DEV_SETS: dict[str, tuple[list[str], str]] = {
    "pubmedqa_dev": (["pubmedqa"], "pool"),
    "mmlu_medical_dev": (GROUPS["mmlu_medical"], "dev"),
    "headqa_dev": (["headqa"], "dev"),
}


def _questions(name: str, root: Path) -> list[Question]:
    names, split = DEV_SETS[name]
    docs = load_many(names, root, split).docs
    if name == "pubmedqa_dev":
        docs = sorted(docs, key=lambda q: q.id)  # by PMID
    elif name == "headqa_dev":
        docs = sorted((q for q in docs if not q.source.get("image")), key=lambda q: q.source["exam"])
    return docs


def dev_items(dev: DevSet, root: Path, seed: int) -> list[Item]:
    try:
        docs = _questions(dev.name, root)
    except UserError as e:
        raise UserError(f"search.dev_sets: {dev.name}: {e}; set search.data_dir or ALOEKIT_DATA_DIR") from None
    names = DEV_SETS[dev.name][0]
    items = [(*loglik_request(q, REGISTRY[names[0]].delimiter), q.gold) for q in docs]
    if dev.limit and dev.limit < len(items):
        items = random.Random(seed).sample(items, dev.limit)
    return items


def accuracy(backend, items: list[Item]) -> float:
    scores = backend.loglikelihood_batch([(ctx, conts) for ctx, conts, _ in items])
    right = sum(max(range(len(s)), key=s.__getitem__) == gold for s, (_, _, gold) in zip(scores, items))
    return right / len(items)


def dev_accuracy(model_dir: Path, cfg: MergeConfig) -> float:
    """Micro-averaged accuracy over the configured dev sets (the same items for every candidate)."""
    from ..backends import load_backend
    from ..config import ModelConfig
    s = cfg.search
    root = find_data_dir(s.data_dir) if s else None
    items = [it for d in s.dev_sets for it in dev_items(d, Path(root), cfg.seed)]
    be = load_backend(ModelConfig(name=str(model_dir), batch_size=s.batch_size))
    try:
        return accuracy(be, items)
    finally:
        be.close()
