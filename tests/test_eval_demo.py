"""The bundled benchmark `aloekit_demo`: loads from the package whatever the data dir, is clean against the
training demo corpus, scores in all three modes, and the real model beats chance on it."""

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from aloekit.data.decontam import DecontamConfig, build_index, decontaminate
from aloekit.data.readers import BadRows
from aloekit.data.records import Record
from aloekit.data.sources import SourceConfig, load_source
from aloekit.eval import EvalConfig, run
from aloekit.eval.data import LETTERS
from aloekit.eval.tasks import TASKS

MISSING_DIR = "/nonexistent/aloekit-data"  # bundled tasks must not need a data dir
DEMO_SOURCES = ["demo_mcq", "demo_qa", "demo_safety", "demo_benign", "demo_preference"]


def demo_docs(limit=None):
    return TASKS["aloekit_demo"].load(None, False, limit)


def test_loads_sixty_four_option_questions_with_valid_gold():
    rows = demo_docs()
    docs = rows.docs
    assert len(docs) == 60 == TASKS["aloekit_demo"].full_size and rows.skipped == 0
    for d in docs:
        assert len(d.options) == 4 and len(set(d.options)) == 4 and all(o.strip() for o in d.options)
        assert 0 <= d.gold < 4
        assert d.context == f"Question: {d.question}\nAnswer:"  # lm-eval's mcq prompt
        assert d.subject and d.where.endswith(f"mcq.jsonl:{d.doc_id + 1}")
    assert len({d.question for d in docs}) == 60
    assert Counter(d.gold for d in docs) == {0: 15, 1: 15, 2: 15, 3: 15}  # as the set's README says
    assert len({d.subject for d in docs}) >= 12
    raw = json.loads(open(rows.source, encoding="utf-8").readline())
    assert docs[0].options[docs[0].gold] == raw["options"][raw["answer"]]


def test_no_overlap_with_the_training_demo_corpus():
    index, status = build_index(DecontamConfig(), MISSING_DIR)
    assert status["aloekit_demo"] == "checked: 60 test items"  # checked even without the data dir
    corpus = [r for name in DEMO_SOURCES for r in load_source(SourceConfig(name=name), None, BadRows(skip=False))]
    assert len(corpus) == 190
    kept, rep = decontaminate(corpus, index)
    assert len(kept) == len(corpus) and rep["removed_by_benchmark"] == {}
    # the index does hold the set: each question is found, also inside a chat rendering with lettered options
    chats = [Record("chat", "leak", str(d.doc_id), messages=[{"role": "user", "content": "Q: " + d.question + "\n"
             + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(d.options))}]) for d in demo_docs().docs]
    kept, rep = decontaminate(chats, index)
    assert kept == [] and rep["removed_by_benchmark"] == {"aloekit_demo": {"leak": 60}}


@pytest.mark.parametrize("scoring", ["loglik", "letter", "generate"])
def test_scoring_modes_on_tiny_model(tiny_backend, scoring, tmp_path):
    n = 6 if scoring == "generate" else 60
    cfg = EvalConfig(tasks=["aloekit_demo"], scoring=scoring, data_dir=MISSING_DIR, limit=n, max_new_tokens=6,
                     output=str(tmp_path / "run"))
    out = run(cfg, backend=tiny_backend)
    res = out["results"]["aloekit_demo"]
    assert out["configs"]["aloekit_demo"]["scoring"] == scoring
    assert out["n-samples"]["aloekit_demo"] == {"original": 60, "effective": n, "skipped": 0}
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples_aloekit_demo.jsonl").read_text().splitlines()]
    assert len(rows) == n
    # the reported accuracy is the share of questions whose prediction is the gold option
    assert res["acc,none"] == pytest.approx(sum(r["pred"] == r["gold"] for r in rows) / n)
    if scoring == "generate":
        assert all(isinstance(r["response"], str) for r in rows)
        assert res["unparsed"] == sum(r["pred"] == -1 for r in rows)
    else:
        assert all(len(r["scores"]) == 4 and r["pred"] == max(range(4), key=r["scores"].__getitem__) for r in rows)
    assert res["baselines"]["chance"] == 0.25
    assert json.loads((tmp_path / "run" / "results.json").read_text())["results"]["aloekit_demo"]["acc,none"] \
        == res["acc,none"]


def test_bundled_with_hub_flag_and_in_list(tiny_backend):
    out = run(EvalConfig(tasks=["aloekit_demo"], hub=True, limit=3), backend=tiny_backend)
    assert out["n-samples"]["aloekit_demo"]["effective"] == 3 and out["config"]["data_dir"] == "hub"
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "eval", "--list", "--json", "--data-dir", MISSING_DIR],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    row = next(t for t in json.loads(r.stdout)["tasks"] if t["task"] == "aloekit_demo")
    assert row["local"] == "bundled" and row["n"] == 60


@pytest.mark.real_model
def test_real_model_beats_chance_with_loglik(real_backend):
    t0 = time.time()
    out = run(EvalConfig(tasks=["aloekit_demo"], data_dir=MISSING_DIR), backend=real_backend)
    res = out["results"]["aloekit_demo"]
    print(f"\naloekit_demo, SmolLM2-135M-Instruct ({real_backend.dtype}), loglik: acc {100 * res['acc,none']:.1f} "
          f"± {100 * res['acc_stderr,none']:.1f}, acc_norm {100 * res['acc_norm,none']:.1f}, "
          f"{time.time() - t0:.1f} s for 60 questions")
    assert res["acc,none"] > 0.25
