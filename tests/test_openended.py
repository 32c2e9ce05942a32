"""Open-ended QA (eval/openended.py): the rewrite filter, verdict parsing, kappa, judges behind the real `openai`
client on a loopback server, the run's files, resuming, and bad input. One test runs the real default model as
answerer and judge."""

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import one_line_error

from aloekit.benchmarks import Question
from aloekit.eval import openended as O
from aloekit.stats import cohen_kappa

pytest.importorskip("openai", reason="the openai extra is part of the dev install")


def q(stem, options=("Metformin", "Insulin", "Aspirin", "Warfarin"), gold=0, i=0):
    return Question(doc_id=i, question=stem, options=list(options), gold=gold, context="")


@pytest.mark.parametrize("stem, why", [
    ("All of the following are causes of anemia except:", "except"),
    ("Which of the following statements about digoxin is true?", "statement"),
    ("Which of the following is NOT a feature of Horner syndrome?", "except"),
    ("Match the following drugs with their side effects", "matching"),
    ("Which of the following options is the first-line drug?", "still refers"),
])
def test_rule_filter_drops_questions_that_need_their_options(stem, why):
    got, reason = O.rule_rewrite(stem, ["a", "b", "c", "d"])
    assert got is None and why in reason


def test_rule_rewrite_makes_stems_stand_alone():
    got, _ = O.rule_rewrite("A 54-year-old man has crushing chest pain. Which of the following is the most likely "
                            "diagnosis?", ["MI", "GERD", "PE", "Pneumonia"])
    assert got == "A 54-year-old man has crushing chest pain. What is the most likely diagnosis?"
    got, _ = O.rule_rewrite("Drug of choice for absence seizures is:", ["Ethosuximide", "Phenytoin", "x", "y"])
    assert got == "Complete this statement: Drug of choice for absence seizures is ..."
    assert O.rule_rewrite("Which drug?", ["All of the above", "a", "b", "c"])[0] is None


def test_select_counts_every_question_it_examined():
    docs = [q("Which of the following is true about X?", i=0), q("First-line drug for type 2 diabetes?", i=1),
            q("All of the following except:", i=2), q("Drug for atrial fibrillation anticoagulation?", i=3),
            q("Another standalone question?", i=4)]
    kept, counts = O.select(docs, limit=2)
    assert [d.doc_id for d, _ in kept] == [1, 3]
    assert counts["examined"] == 4 and counts["kept"] == 2 and counts["dropped"] == 2
    assert sum(counts["dropped_by_reason"].values()) == 2


def test_parse_verdict():
    assert O.parse_verdict('Sure. {"verdict": "Partially correct", "rationale": "vague"} done') == ("partial", "vague")
    assert O.parse_verdict('{"verdict": "correct|incorrect"}')[0] is None
    assert O.parse_verdict("correct")[0] is None
    assert O.parse_verdict('{"x": 1} {"verdict": "refused"}')[0] == "refused"


def test_cohen_kappa_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    a = ["correct", "partial", "incorrect", "correct", "refused", "correct", "incorrect", "partial"]
    b = ["correct", "incorrect", "incorrect", "correct", "refused", "partial", "incorrect", "partial"]
    assert cohen_kappa(a, b) == pytest.approx(sk.cohen_kappa_score(a, b), abs=1e-4)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # undefined, not 0 or 1


def test_calibration_set_is_labelled_and_big_enough():
    rows = O.load_calibration()
    assert len(rows) >= 60 and len({r["id"] for r in rows}) == len(rows)
    labels = {r["label"] for r in rows}
    assert labels == set(O.VERDICTS)
    assert all(r["question"] and r["reference"] and r["answer"] for r in rows)


# ---------------------------------------------------------------- a loopback OpenAI-compatible server

class Stub(BaseHTTPRequestHandler):
    """model "answerer": answers with the first drug it is told about; "judge-a": grades by substring match;
    "judge-b": says correct; "judge-bad": never JSON; "judge-flaky": prose first, JSON when sampled (retry)."""

    calls: list = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.calls.append(body)
        model, msgs = body["model"], body["messages"]
        user = msgs[-1]["content"]
        if model == "answerer":
            text = "Metformin is first line." if "diabetes" in user else "I am not sure; see a doctor."
        elif model.startswith("judge"):
            ref = re.search(r"Reference answer: (.*)", user)
            ans = re.search(r"Answer to grade: (.*)", user, re.S)
            ok = bool(ref and ans and ref.group(1).strip().lower() in ans.group(1).lower())
            verdict = {"judge-a": "correct" if ok else "incorrect", "judge-b": "correct"}.get(model, "correct")
            text = json.dumps({"verdict": verdict, "rationale": "stub"})
            if model == "judge-bad" or (model == "judge-flaky" and body.get("temperature", 0) == 0):
                text = "The answer looks fine to me."
        else:
            self.send_response(404)
            self.end_headers()
            return
        resp = {"id": "x", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
        raw = json.dumps(resp).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


@pytest.fixture()
def bench(tmp_path, monkeypatch):
    """A registered 6-question benchmark (2 need their options) and its open task."""
    from aloekit.benchmarks import REGISTRY, Benchmark, Split
    rows = [("First-line drug for type 2 diabetes?", ["Metformin", "Insulin", "Aspirin", "Warfarin"], "A"),
            ("All of the following are antidiabetics except:", ["Metformin", "Insulin", "Aspirin", "Glipizide"], "C"),
            ("Oral drug for diabetes that lowers hepatic glucose output?", ["Metformin", "Insulin", "x", "y"], "A"),
            ("Which of the following statements about insulin is true?", ["a", "b", "c", "d"], "A"),
            ("Antidote for warfarin overdose?", ["Vitamin K", "Protamine", "Naloxone", "Flumazenil"], "A"),
            ("Antiplatelet drug that irreversibly inhibits COX?", ["Aspirin", "Clopidogrel", "x", "y"], "A")]
    path = tmp_path / "data" / "tiny" / "test.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"question": s, "options": dict(zip("ABCD", o)), "answer_idx": a}) + "\n"
                            for s, o, a in rows))
    monkeypatch.setitem(REGISTRY, "tinyq", Benchmark("tinyq", "tiny", "mcq", "question_jsonl",
                                                     {"test": Split("tiny/test.jsonl")}, opts={"answer": "answer_idx"}))
    monkeypatch.setitem(O.OPEN_TASKS, "open_tinyq", ["tinyq"])
    return tmp_path / "data"


def test_open_task_with_two_judges_on_an_openai_endpoint(server, bench, tmp_path):
    from aloekit.config import ModelConfig
    from aloekit.eval.runner import EvalConfig, run
    out = tmp_path / "run"
    cfg = EvalConfig(model=ModelConfig(name="answerer", backend="openai", base_url=server), tasks=["open_tinyq"],
                     data_dir=str(bench), output=str(out), system_prompt="aloe_medical",
                     judges=[ModelConfig(name="judge-a", backend="openai", base_url=server),
                             ModelConfig(name="judge-b", backend="openai", base_url=server)])
    Stub.calls.clear()
    res = run(cfg)
    r = res["results"]["open_tinyq"]
    # 4 questions stand alone; the answerer names metformin for the two diabetes ones: judge-a says 2 correct
    assert res["n-samples"]["open_tinyq"] == {"original": 6, "effective": 4, "skipped": 0, "dropped_by_rewrite": 2}
    assert r["acc,none"] == pytest.approx(0.5)
    assert r["judge_kappa,none"] == cohen_kappa(["correct"] * 2 + ["incorrect"] * 2, ["correct"] * 4)
    assert 0 < r["rouge_l,none"] < 1
    info = res["open_ended"]
    assert info["tasks"]["open_tinyq"]["rewrite"]["dropped_by_reason"] == {
        "except / not (asks for the odd option out)": 1, "statement choice (which statement is true)": 1}
    assert info["judge_prompt"]["system"] == O.JUDGE_RUBRIC and [j["label"] for j in info["judges"]] == \
        [f"openai:judge-a@{server}", f"openai:judge-b@{server}"]
    cal = info["calibration"][f"openai:judge-b@{server}"]
    assert cal["n"] >= 60 and set(cal["confusion (label -> verdicts)"]["incorrect"]) == {"correct"}
    # the policy went to the answerer as the system message, never to the judges
    answered = [c for c in Stub.calls if c["model"] == "answerer" and c["max_tokens"] > 1]
    assert answered and all(c["messages"][0]["content"].startswith("You are a careful medical") for c in answered)
    assert res["configs"]["open_tinyq"]["system_prompt"] == "aloe_medical"
    rows = [json.loads(x) for x in (out / "samples_open_tinyq.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"question", "rewritten", "reference", "response", "verdicts", "rouge_l"} <= set(rows[0])
    assert rows[0]["verdicts"][0]["verdict"] == "correct" and rows[0]["verdicts"][0]["rationale"] == "stub"
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"]["open_tinyq"]["acc,none"] == pytest.approx(0.5)

    # a second run resumes from the caches: no answer or judge request is sent again
    Stub.calls.clear()
    again = run(cfg)
    assert again["results"]["open_tinyq"] == res["results"]["open_tinyq"]
    assert all(c["max_tokens"] == 1 for c in Stub.calls)  # only the judges' reachability probes


def test_unparsable_judge_replies_are_retried_then_counted(server, bench, tmp_path):
    from aloekit.config import ModelConfig
    from aloekit.eval.runner import EvalConfig, run
    base = dict(model=ModelConfig(name="answerer", backend="openai", base_url=server), tasks=["open_tinyq"],
                data_dir=str(bench), calibrate=False, judge_retries=2)
    bad = run(EvalConfig(**base, judges=[ModelConfig(name="judge-bad", backend="openai", base_url=server)]))
    s = bad["open_ended"]["tasks"]["open_tinyq"]["judges"][f"openai:judge-bad@{server}"]
    assert s["unparsed"] == 4 and s["retried"] == 4 and bad["results"]["open_tinyq"]["pct_unparsed,none"] == 1.0
    assert all(v["attempts"] == 3 for row in bad["samples"]["open_tinyq"] for v in row["verdicts"])
    flaky = run(EvalConfig(**base, judges=[ModelConfig(name="judge-flaky", backend="openai", base_url=server)]))
    s = flaky["open_ended"]["tasks"]["open_tinyq"]["judges"][f"openai:judge-flaky@{server}"]
    assert s["unparsed"] == 0 and s["retried"] == 4 and s["correct"] == 4


def test_every_question_needing_options_is_one_line_error(bench, tmp_path, monkeypatch):
    from aloekit.benchmarks import REGISTRY, Benchmark, Split
    from aloekit.errors import UserError
    from aloekit.eval.runner import EvalConfig, run
    p = bench / "tiny" / "bad.jsonl"
    p.write_text(json.dumps({"question": "All of the following except:", "options": {"A": "a", "B": "b"},
                             "answer_idx": "A"}) + "\n")
    monkeypatch.setitem(REGISTRY, "tinybad", Benchmark("tinybad", "t", "mcq", "question_jsonl",
                                                       {"test": Split("tiny/bad.jsonl")}, opts={"answer": "answer_idx"}))
    monkeypatch.setitem(O.OPEN_TASKS, "open_tinybad", ["tinybad"])

    class NoModel:
        name = "none"

        def render(self, *a, **k):
            return ""
    out = tmp_path / "out"
    with pytest.raises(UserError, match="open_tinybad: no question stands without its options"):
        run(EvalConfig(tasks=["open_tinybad"], data_dir=str(bench), output=str(out)), backend=NoModel())
    assert not (out / "results.json").exists()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "aloekit.cli", *args], capture_output=True, text=True, env=env)


def test_unreachable_judge_and_bad_flags_are_one_line_errors(tmp_path):
    out = tmp_path / "o"
    r = _cli("eval", "--tasks", "open_aloekit_demo", "--limit", "2", "--backend", "openai", "--model", "x",
             "--set", "model.base_url=http://127.0.0.1:9/v1", "--judge", "openai:j@http://127.0.0.1:9/v1",
             "-o", str(out))
    one_line_error(r, "cannot reach the server at http://127.0.0.1:9/v1")
    assert not out.exists() or not any(out.iterdir())
    one_line_error(_cli("eval", "--tasks", "aloekit_demo", "--judge", "smollm2-135m-instruct"), "open-ended")
    one_line_error(_cli("eval", "--tasks", "open_aloekit_demo", "--judge", "openai:gpt-4o"), "needs its server")
    one_line_error(_cli("eval", "--tasks", "open_aloekit_demo", "--system-prompt", "aloe_medcal"),
                   "unknown system prompt name 'aloe_medcal'")
    one_line_error(_cli("eval", "--tasks", "open_aloekit_demo", "--judge", "a,b", "--judge-mode", "x,y,z"),
                   "judge_mode")


def test_real_model_answers_and_judges_itself(tmp_path, real_model_dir):
    """The Done-when run, shortened: the default model answers the bundled open questions and judges them in both
    modes (kappa between them), plus the calibration set; the verdicts are real, whatever their quality."""
    out = tmp_path / "real"
    args = ["--quiet", "eval", "--tasks", "open_aloekit_demo", "--limit", "4", "--max-new-tokens", "48",
            "--judges", "smollm2-135m-instruct,smollm2-135m-instruct", "--judge-mode", "generate,likelihood",
            "--set", "judge_retries=0", "-o", str(out)]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    t = res["results"]["open_aloekit_demo"]
    assert res["n-samples"]["open_aloekit_demo"]["effective"] == 4
    assert "judge_kappa,none" in t and "rouge_l,none" in t
    labels = [j["label"] for j in res["open_ended"]["judges"]]
    assert labels == ["hf:smollm2-135m-instruct", "hf:smollm2-135m-instruct (likelihood)"]
    lik = res["open_ended"]["calibration"][labels[1]]
    assert lik["unparsed"] == 0 and lik["n"] == len(O.load_calibration())
    rows = [json.loads(x) for x in (out / "samples_open_aloekit_demo.jsonl").read_text().splitlines()]
    assert all(row["response"].strip() for row in rows)
    assert all(set(row["verdicts"][1]["logprobs"]) == set(O.VERDICTS) for row in rows)
    assert Path(out / "cache" / "answers.jsonl").exists()
