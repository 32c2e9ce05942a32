"""The merge search's built-in scorer: multiple-choice accuracy on small dev sets, by loglikelihood.

Dev sets never touch a benchmark's test split: PubMedQA uses the 500 PQA-L ids outside the official test ids,
MMLU the 5-shot dev rows, HEAD-QA its dev exams. Prompts follow lm-evaluation-harness's zero-shot formats, so the
accuracy moves the way the real benchmarks do, only on far fewer items.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from ..errors import UserError
from ..io import read_text_utf8
from ..paths import data_dir as find_data_dir
from .config import DevSet, MergeConfig

Item = tuple[str, list[str], int]  # context, continuations, index of the right one


def _pubmedqa(root: Path) -> list[Item]:
    folder = root / "pubmedqa_pqal"
    data = json.loads(read_text_utf8(folder / "ori_pqal.json"))
    test = set(json.loads(read_text_utf8(folder / "test_ground_truth.json")))
    items = []
    for pmid in sorted(k for k in data if k not in test):
        r = data[pmid]
        ctx = f"Abstract: {' '.join(r['CONTEXTS'])}\nQuestion: {r['QUESTION']}\nAnswer:"
        items.append((ctx, [" yes", " no", " maybe"], ["yes", "no", "maybe"].index(r["final_decision"])))
    return items


def _mmlu(root: Path) -> list[Item]:
    items = []
    for f in sorted((root / "mmlu_medical" / "dev").glob("*_dev.csv")):
        subject = f.name[: -len("_dev.csv")].replace("_", " ")
        for row in csv.reader(io.StringIO(read_text_utf8(f, newline=""), newline="")):
            q, opts, ans = row[0], row[1:5], row[5].strip()
            ctx = (f"The following are multiple choice questions (with answers) about {subject}.\n\n{q.strip()}\n"
                   + "".join(f"{L}. {o.strip()}\n" for L, o in zip("ABCD", opts)) + "Answer:")
            items.append((ctx, [" A", " B", " C", " D"], "ABCD".index(ans)))
    return items


def _headqa(root: Path) -> list[Item]:
    exams = json.loads(read_text_utf8(root / "headqa_en" / "dev_HEAD_EN.json"))["exams"]
    items = []
    for name in sorted(exams):
        for q in exams[name]["data"]:
            if q.get("image"):
                continue
            answers = sorted(q["answers"], key=lambda a: int(a["aid"]))
            right = [int(a["aid"]) for a in answers].index(int(q["ra"]))
            items.append((f"Question: {q['qtext']}\nAnswer:", [" " + a["atext"] for a in answers], right))
    return items


LOADERS = {"pubmedqa_dev": _pubmedqa, "mmlu_medical_dev": _mmlu, "headqa_dev": _headqa}


def dev_items(dev: DevSet, root: Path, seed: int) -> list[Item]:
    try:
        items = LOADERS[dev.name](root)
    except FileNotFoundError as e:
        raise UserError(f"search.dev_sets: {dev.name} needs {e.filename}; set search.data_dir or "
                        "ALOEKIT_DATA_DIR") from None
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
