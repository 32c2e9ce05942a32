"""Synthetic CoT: answer extraction, the keep-only-if-gold filter, bounded retries, the on-disk cache and
resume after kill -9 (fake teacher), and one run on the real default model."""

from __future__ import annotations

import filecmp
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aloekit.backends.base import Backend, Completion
from aloekit.data.cot import CotConfig, extract_answer, generate_cot, judge, select_pool
from aloekit.data.readers import BadRows
from aloekit.data.records import Record
from aloekit.data.sources import SourceConfig, load_source

REPO = Path(__file__).resolve().parents[1]


class FakeTeacher(Backend):
    """Answers gold on the first greedy try unless the question says WRONG; a retry (sampling) fixes
    'WRONG_ONCE' but never 'ALWAYS_WRONG'. Counts every generation."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, sampling=None, n=1):
        out = []
        for p in prompts:
            self.calls += 1
            user = p[-1]["content"]
            gold = re.search(r"correct answer to this question is ([A-J])", user).group(1)
            other = "A" if gold != "A" else "B"
            wrong = "ALWAYS_WRONG" in user or ("WRONG_ONCE" in user and sampling.temperature == 0)
            text = f"The question asks about X.\nOption {other} is wrong.\nAnswer: {other if wrong else gold}"
            out.append([Completion(text, 10, 12, "stop")])
        return out

    def loglikelihood_batch(self, requests):
        raise NotImplementedError


def mcq(i, q):
    return Record("mcq", "t", f"t:{i}", question=q, options={"A": "a", "B": "b", "C": "c"}, answer="C")


def test_extract_answer_and_judge():
    assert extract_answer("blah. The answer is (B).") == "B"
    assert extract_answer("Answer: C\nwait, the correct option is D") == "D"  # the last statement wins
    assert extract_answer("Answer: d.") == "D"
    assert extract_answer("no conclusion here") is None
    assert extract_answer("Answer: E", letters="ABCD") is None
    cfg = CotConfig()
    assert judge("Reasoning.\nAnswer: B", "stop", "B", "ABCD", cfg) == "accepted"
    assert judge("Reasoning.\nAnswer: A", "stop", "B", "ABCD", cfg) == "wrong_answer"
    assert judge("Reasoning.\nAnswer: B", "length", "B", "ABCD", cfg) == "truncated"
    assert judge("Answer: B\nAnswer: B\nAnswer: B\nok", "stop", "B", "ABCD", cfg) == "degenerate"


def test_keep_only_gold_bounded_retries_and_cache(tmp_path):
    pool = [mcq(0, "fine"), mcq(1, "WRONG_ONCE"), mcq(2, "ALWAYS_WRONG"), mcq(3, "fine too")]
    cfg = CotConfig(enabled=True, max_attempts=3)
    fake = FakeTeacher()
    rep = generate_cot(pool, cfg, tmp_path / "c.jsonl", seed=0, backend=fake)
    assert rep["accepted"] == 3 and rep["acceptance_rate"] == 0.75
    assert rep["accepted_by_attempt"] == {"0": 2, "1": 1, "2": 0}
    assert fake.calls == 4 + 2 + 1  # retries only for what failed, never beyond max_attempts
    assert rep["rejected"] == {"wrong_answer": 4}
    assert pool[2].cot == "" and pool[1].cot.endswith("Answer: C")
    assert rep["tokens"] == {"prompt": 70, "completion": 84}
    # a rerun takes everything from the cache
    fresh = [mcq(0, "fine"), mcq(1, "WRONG_ONCE"), mcq(2, "ALWAYS_WRONG"), mcq(3, "fine too")]
    fake2 = FakeTeacher()
    rep2 = generate_cot(fresh, cfg, tmp_path / "c.jsonl", seed=0, backend=fake2)
    assert fake2.calls == 0 and rep2["this_run"] == {"generated_now": 0, "from_cache": 7}
    assert [r.cot for r in fresh] == [r.cot for r in pool]
    # a torn last line (kill -9 mid-write) is dropped, not fatal
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write('{"key": "abc", "te')
    generate_cot(fresh, cfg, tmp_path / "c.jsonl", seed=0, backend=FakeTeacher())
    assert (tmp_path / "c.jsonl").read_text().endswith("\n")


def test_select_pool_is_seeded_and_filtered():
    recs = [mcq(i, f"q{i}") for i in range(30)] + [Record("qa", "t", "qa:1", question="q", answer="a")]
    cfg = CotConfig(max_records=5)
    a, b = select_pool(recs, cfg, 0), select_pool(recs, cfg, 0)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 5 and all(r.kind == "mcq" for r in a)
    assert [r.id for r in select_pool(recs, cfg, 1)] != [r.id for r in a]


SCRIPT = textwrap.dedent('''
    import re, sys, time
    sys.path.insert(0, {tests!r})
    from test_data_cot import FakeTeacher
    from aloekit.config import load_config
    from aloekit.data.pipeline import DataConfig, run

    class Slow(FakeTeacher):
        def generate(self, prompts, sampling=None, n=1):
            time.sleep(float(sys.argv[3]))
            return super().generate(prompts, sampling, n)

    cfg = load_config(DataConfig, sys.argv[1], ["output=" + sys.argv[2]])
    run(cfg, backend=Slow())
''')


def test_kill9_mid_cot_then_resume_is_byte_identical(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT.format(tests=str(REPO / "tests")))
    (tmp_path / "d.yaml").write_text(textwrap.dedent("""
        seed: 1
        sources: [{name: demo_mcq}, {name: demo_qa}]
        decontam: {enabled: false}
        cot: {enabled: true, max_records: 12, max_attempts: 2, teacher: {batch_size: 2}}
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "d.yaml")]
    subprocess.run(cmd + [str(tmp_path / "full"), "0"], check=True, env=env, capture_output=True)
    p = subprocess.Popen(cmd + [str(tmp_path / "killed"), "0.4"], env=env, stderr=subprocess.DEVNULL)
    cache = tmp_path / "killed" / "cache" / "cot.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 4):
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    n_before = len(cache.read_text().splitlines())
    assert 4 <= n_before < 12 and not (tmp_path / "killed" / "sft").exists()
    subprocess.run(cmd + [str(tmp_path / "killed"), "0"], check=True, env=env, capture_output=True)
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["cot_this_run"]["from_cache"] >= n_before
    for rel in ["sft_train.jsonl", "sft_validation.jsonl", "records.jsonl", "card.json",
                "sft/train/data-00000-of-00001.arrow"]:
        assert filecmp.cmp(tmp_path / "full" / rel, tmp_path / "killed" / rel, shallow=False), rel


@pytest.mark.real_model
def test_cot_on_real_default_model(tmp_path, real_backend):
    """SmolLM2-135M as teacher on two demo MCQs: it is rarely right; we only require honest accounting."""
    pool = list(load_source(SourceConfig(name="demo_mcq"), None, BadRows(False)))[:2]
    cfg = CotConfig(enabled=True, max_records=2, max_attempts=1,
                    sampling={"max_new_tokens": 48, "repetition_penalty": 1.15})
    rep = generate_cot(pool, cfg, tmp_path / "c.jsonl", seed=0, backend=real_backend)
    assert rep["pool"] == 2 and rep["generations"] == 2
    assert rep["accepted"] + sum(rep["rejected"].values()) == 2
    assert rep["tokens"]["completion"] > 0 and rep["tokens"]["prompt"] > 100
    lines = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(x["text"] for x in lines)
    for r in pool:  # a kept chain always ends on the gold letter
        if r.cot:
            assert extract_answer(r.cot, sorted(r.options)) == r.answer
