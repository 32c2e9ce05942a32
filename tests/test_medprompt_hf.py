"""Medprompt engine on the hf backend (tiny random Llama): n samples from one prompt encoding, token accounting,
determinism; and the CLI's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aloekit.eval.data import Doc
from aloekit.medprompt import StrategyConfig, evaluate
from aloekit.medprompt.engine import member_prompt, member_seed, prepare


def _docs():
    return [Doc(0, "Which vitamin deficiency causes scurvy?", ["Vitamin C", "Vitamin D", "Vitamin K", "B12"], 0, ""),
            Doc(1, "Which organ makes insulin?", ["Liver", "Pancreas", "Spleen"], 1, "")]


def test_sc_cot_on_hf_samples_n_from_one_prompt(tiny_backend):
    cfg = StrategyConfig(strategy="sc-cot", members=3, adaptive=False, max_new_tokens=8, seed=3)
    docs = _docs()
    res = evaluate(tiny_backend, docs, cfg)
    qs = prepare(docs, cfg)
    for r, q in zip(res, qs):
        assert r["members"] == 3 and len(r["chains"]) == 3
        # the prompt is encoded once for its 3 samples
        assert r["prompt_tokens"] == len(tiny_backend.encode_prompt(member_prompt(q, 0, cfg)))
        assert r["generated_tokens"] == sum(c["generated_tokens"] for c in r["chains"])
        assert 3 <= r["generated_tokens"] <= 24 and r["seconds"] > 0
    again = evaluate(tiny_backend, docs, cfg)  # same seed, same chains
    assert [{**r, "seconds": 0} for r in again] == [{**r, "seconds": 0} for r in res]


def test_medprompt_shuffle_on_hf_counts_each_member_prompt(tiny_backend):
    cfg = StrategyConfig(strategy="medprompt", members=3, adaptive=False, max_new_tokens=6)

    class NoDB:
        embedding_model = "x"

        def nearest(self, questions, k, leak_threshold=0.95):
            return [[] for _ in questions]
    docs = _docs()
    res = evaluate(tiny_backend, docs, cfg, NoDB())
    qs = prepare(docs, cfg, NoDB())
    for r, q in zip(res, qs):
        assert len({c["order"] for c in r["chains"]}) == 3
        assert r["prompt_tokens"] == sum(len(tiny_backend.encode_prompt(member_prompt(q, m, cfg))) for m in range(3))


class _NoDB:
    embedding_model = "x"

    def nearest(self, questions, k, leak_threshold=0.95):
        return [[] for _ in questions]


@pytest.mark.parametrize("strategy", ["medprompt", "sc-cot"])
def test_members_write_the_same_chain_in_any_round_or_batch(tiny_backend, monkeypatch, strategy):
    """Each member samples from its own seed: the adaptive, batched engine and a naive run (one call per member,
    batch size 1) get the same chain from every member the engine runs, so early stopping and batching cannot move
    the accuracy of a sampled ensemble."""
    from aloekit.config import SamplingConfig
    cfg = StrategyConfig(strategy=strategy, members=5, max_new_tokens=6, seed=7, temperature=1.0)
    docs = _docs()
    res = evaluate(tiny_backend, docs, cfg, _NoDB())
    monkeypatch.setattr(tiny_backend.cfg, "batch_size", 1)
    for r, q in zip(res, prepare(docs, cfg, _NoDB())):
        for c in r["chains"]:
            m = c["member"]
            s = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=cfg.top_p, seeds=[member_seed(cfg, q.doc, m)])
            assert tiny_backend.generate([member_prompt(q, m, cfg)], s)[0][0].text == c["text"]
    assert len({c["text"] for r in res for c in r["chains"]}) > 2


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "aloekit.cli", *args], capture_output=True, text=True, input=stdin,
                          timeout=120)


def test_cli_bad_input_one_line_exit_2(tmp_path):
    r = _cli("medprompt", "eval", "--task", "pubmedqa", "--strategies", "medprompt", "--db", str(tmp_path / "no"),
             "--limit", "1")
    assert r.returncode == 2 and "not an example database" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli("infer", "--strategy", "cot", stdin=json.dumps({"question": "q?", "options": ["only one"]}))
    assert r.returncode == 2 and "field 'options'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("medprompt", "build-db", "--pool", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "db"))
    assert r.returncode == 2 and "not found" in r.stderr


@pytest.mark.real_model
def test_real_model_answers_in_the_parsed_format(real_backend, data_dir):
    # the default model's chains must end in something parse_answer reads, or every vote is lost
    from aloekit.eval.tasks import TASKS
    docs = TASKS["headqa"].load(data_dir, False, 4).docs
    res = evaluate(real_backend, docs, StrategyConfig(strategy="sc-cot", members=3, adaptive=False,
                                                      max_new_tokens=96))
    chains = [c for r in res for c in r["chains"]]
    assert len(chains) == 12
    # about a third of the 135M model's chains only echo the option list ("A. ... B. ..."): those name no answer
    assert sum(c["answer"] is not None for c in chains) >= 6
    assert all(c["answer"] is not None or "answer" not in c["text"].lower() for c in chains)
    assert all(sum(r["votes"].values()) == sum(c["answer"] is not None for c in r["chains"]) for r in res)
