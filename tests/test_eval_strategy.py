"""`aloekit eval --strategy`: medprompt strategies (medprompt.runner.StrategyAnswerer) through the eval runner, with a
scripted fake backend (see test_medprompt.py): lm-eval-shaped results with tokens/question, samples per task, and
the errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_medprompt import FixedDB, ScriptedBackend

from aloekit.errors import UserError
from aloekit.eval import EvalConfig, run
from aloekit.eval.tasks import TASKS
from aloekit.medprompt import MedpromptEvalConfig
from aloekit.medprompt import run as medprompt_run
from aloekit.medprompt.config import StrategyConfig
from aloekit.medprompt.runner import StrategyAnswerer

FIXTURES = Path(__file__).parent / "fixtures" / "medqa"


def gold_on_even_questions(docs):
    """A model that knows the answer TEXT of every other question (whatever order the options are shown in)
    and otherwise picks the first option shown that is wrong."""
    by_q = {d.question: d for d in docs}

    def answer(question, shown, sample, temperature):
        d = by_q[question]
        right = d.options[d.gold]
        return right if d.doc_id % 2 == 0 else next(o for o in shown if o != right)
    return answer


class Unusable:
    name = "unusable"

    def generate(self, *a, **k):
        raise AssertionError("the model must not be used")

    loglikelihood_batch = generate


def test_strategy_results_in_lm_eval_shape_with_tokens(tmp_path):
    n = 12
    docs = TASKS["aloekit_demo"].load(None, False, n).docs
    be = ScriptedBackend(gold_on_even_questions(docs), tokens_per_chain=10)
    cfg = EvalConfig(tasks=["aloekit_demo"], limit=n, data_dir="/nonexistent", output=str(tmp_path / "run"))
    out = run(cfg, backend=be, answerer=StrategyAnswerer("cot"))
    res = out["results"]["aloekit_demo"]
    assert res["acc,none"] == 0.5 and res["acc_stderr,none"] > 0 and res["unparsed"] == 0
    assert res["generated_tokens_per_question,none"] == 10 and res["prompt_tokens_per_question,none"] == 100
    assert res["members_per_question,none"] == 1
    assert out["config"]["scoring"] == "strategy" and out["config"]["strategy"] == "cot"
    assert out["strategy"]["summaries"]["aloekit_demo"]["accuracy"] == 0.5
    assert be.calls == [(n, 1, 0.0)]  # one batched greedy call for all questions
    # written: results.json (the same numbers), samples with the engine's votes and chains
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["results"]["aloekit_demo"]["acc,none"] == 0.5
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples_aloekit_demo.jsonl").read_text().splitlines()]
    assert len(rows) == n
    for r, d in zip(rows, docs):
        assert r["gold"] == d.gold and r["acc"] == float(d.doc_id % 2 == 0) == float(r["pred"] == d.gold)
        assert r["generated_tokens"] == 10 and len(r["chains"]) == 1 and sum(r["votes"].values()) == 1
    table = out["markdown"]
    assert "| aloekit_demo | 12 | acc | 50.00 |" in table and "| generated_tokens_per_question | 10.000 |" in table
    # the same numbers as `aloekit medprompt eval` on the same task: one engine, one runner
    mp = medprompt_run(MedpromptEvalConfig(task="aloekit_demo", strategies=["cot"], limit=n, data_dir="/nonexistent"),
                       backend=ScriptedBackend(gold_on_even_questions(docs), tokens_per_chain=10))
    s = mp["strategies"]["cot"]
    assert s["accuracy"] == res["acc,none"]
    assert s["generated_tokens_per_question"] == res["generated_tokens_per_question,none"]


def test_ensemble_strategy_params_and_several_tasks():
    docs = TASKS["aloekit_demo"].load(None, False, 4).docs + TASKS["medqa"].load(FIXTURES, False, None).docs
    be = ScriptedBackend(gold_on_even_questions(docs), tokens_per_chain=7)
    cfg = EvalConfig(tasks=["aloekit_demo", "medqa"], limit=4, data_dir=str(FIXTURES), seed=3)
    answerer = StrategyAnswerer("medprompt", StrategyConfig(members=3, shots=2, adaptive=False), seed=cfg.seed,
                                loaded_db=FixedDB())
    out = run(cfg, backend=be, answerer=answerer)
    assert out["strategy"]["params"]["members"] == 3 and out["strategy"]["params"]["strategy"] == "medprompt"
    assert out["strategy"]["params"]["seed"] == 3
    for task in ("aloekit_demo", "medqa"):
        res = out["results"][task]
        n = out["n-samples"][task]["effective"]
        assert res["members_per_question,none"] == 3 and res["generated_tokens_per_question,none"] == 21
        # members see shuffled options, and every one of them maps back: even questions right, odd ones wrong
        assert res["acc,none"] == pytest.approx(sum(i % 2 == 0 for i in range(n)) / n)
    assert all(t == 0.7 for _, _, t in be.calls)


def test_strategy_errors_come_before_the_model():
    with pytest.raises(UserError, match="need an example database: pass --db"):
        run(EvalConfig(tasks=["aloekit_demo"]), backend=Unusable(), answerer=StrategyAnswerer("knn"))
    with pytest.raises(UserError, match="truthfulqa_mc2 are not"):
        run(EvalConfig(tasks=["aloekit_demo", "truthfulqa_mc2"]), backend=Unusable(), answerer=StrategyAnswerer("cot"))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "aloekit.cli", "eval", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_strategy_errors_exit_2(tmp_path):
    cases = [(["--tasks", "aloekit_demo", "--strategy", "medprompt"], "--db"),
             (["--tasks", "aloekit_demo", "--strategy", "cot", "--scoring", "letter"], "exclude each other"),
             (["--tasks", "aloekit_demo", "--members", "3"], "only used with --strategy"),
             (["--tasks", "aloekit_demo", "--strategy", "tot"], "strategy")]
    for args, fragment in cases:
        r = cli(*args, "--output", str(tmp_path / "o"))
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert fragment in lines[0], lines[0]
        assert not (tmp_path / "o").exists()
