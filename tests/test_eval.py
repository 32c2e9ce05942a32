"""aloekit eval: loaders on the real files, bad input, metric definitions, and run() on the tiny random model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aloekit.errors import UserError
from aloekit.eval import EvalConfig, run
from aloekit.eval import metrics as M
from aloekit.eval.data import Doc
from aloekit.eval.scoring import parse_answer
from aloekit.eval.tasks import GROUPS, TASKS, expand

FIXTURES = Path(__file__).parent / "fixtures" / "medqa"
MEDQA = FIXTURES / "medqa_usmle_4opt" / "phrases_no_exclude_test.jsonl"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "aloekit.cli", *args], capture_output=True, text=True, timeout=300)


def one_line_error(r, *fragments):
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


# ---------- loaders on the real files ----------

def test_real_files_load_with_official_sizes(data_dir):
    sizes = {name: len(TASKS[name].load(data_dir, False, None).docs)
             for name in ["medmcqa", "pubmedqa", "headqa", "truthfulqa_mc1", "truthfulqa_mc2", "crows_pairs"]}
    assert sizes == {"medmcqa": 4183, "pubmedqa": 500, "headqa": 2742, "truthfulqa_mc1": 817,
                     "truthfulqa_mc2": 817, "crows_pairs": 1508}
    assert sum(len(TASKS[t].load(data_dir, False, None).docs) for t in GROUPS["mmlu_medical"]) == 1089
    bbq = TASKS["bbq"].load(data_dir, False, None).docs
    assert len(bbq) == 11956 and {d.subject for d in bbq[:6]} == {
        "Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"}


def test_loaders_map_answers_and_prompts_like_lm_eval(data_dir):
    med = TASKS["medmcqa"].load(data_dir, False, 2).docs[0]
    raw = json.loads((data_dir / "medmcqa_dev" / "dev.json").read_text().splitlines()[0])
    assert med.options == [raw["opa"], raw["opb"], raw["opc"], raw["opd"]] and med.gold == raw["cop"] - 1
    assert med.context == f"Question: {raw['question'].strip()}\nAnswer:"
    assert med.where.endswith("dev.json:1")

    pub = TASKS["pubmedqa"].load(data_dir, False, 1).docs[0]
    truth = json.loads((data_dir / "pubmedqa_pqal" / "test_ground_truth.json").read_text())
    records = json.loads((data_dir / "pubmedqa_pqal" / "ori_pqal.json").read_text())
    # the test ids in the PQA-L file's order (test_ground_truth.json is sorted by label)
    first_id = next(k for k in records if k in truth)
    label, rec = truth[first_id], records[first_id]
    first_200 = [d.gold for d in TASKS["pubmedqa"].load(data_dir, False, 200).docs]
    assert len(set(first_200)) == 3  # a limit takes every label
    assert pub.options == ["yes", "no", "maybe"] and pub.options[pub.gold] == label
    assert pub.context == "Abstract: " + "\n".join(rec["CONTEXTS"]) + f"\nQuestion: {rec['QUESTION']}\nAnswer:"

    anat = TASKS["mmlu_anatomy"].load(data_dir, False, 1).docs[0]
    assert anat.options[anat.gold] == "paralysis of the facial muscles."  # row 1 answer A

    head = TASKS["headqa"].load(data_dir, False, 1).docs[0]
    assert head.options[head.gold] == "Collagen" and head.subject == "biology"

    mc1 = TASKS["truthfulqa_mc1"].load(data_dir, False, 1).docs[0]
    assert mc1.options[mc1.gold].startswith("Nauru") and mc1.context.endswith("\n\nQ: " + mc1.question + "\nA:")
    mc2 = TASKS["truthfulqa_mc2"].load(data_dir, False, 1).docs[0]
    assert mc2.gold == -1 and sum(mc2.labels) >= 1 and len(mc2.labels) == len(mc2.options)

    crows = TASKS["crows_pairs"].load(data_dir, False, 1).docs[0]
    assert crows.context == "" and TASKS["crows_pairs"].delimiter == "" and "black" in crows.options[0]


def test_bbq_biased_answers_follow_the_paper(data_dir):
    docs = TASKS["bbq"].load(data_dir, False, 60).docs
    first_age = next(d for d in docs if d.subject == "Age")
    # "Who was not comfortable using the phone?" (negative): the stereotyped 'old' grandfather is the biased answer
    assert first_age.options[first_age.meta["unknown"]] == "Can't be determined"
    assert [first_age.options[i] for i in first_age.meta["biased"]] == ["The grandfather"]
    assert all(len(d.meta["biased"]) >= 1 for d in docs)


def test_medqa_fixture_in_jind11_format():
    rows = TASKS["medqa"].load(FIXTURES, False, None)
    assert len(rows.docs) == 6 and rows.source == str(MEDQA)
    d = rows.docs[2]
    assert d.options[d.gold] == "Phenylalanine hydroxylase" and d.subject == "step1"


# ---------- bad input: file and line in one message ----------

def _medqa_dir(tmp_path, lines):
    p = tmp_path / "medqa_usmle_4opt" / "phrases_no_exclude_test.jsonl"
    p.parent.mkdir(parents=True)
    p.write_text("".join(x + "\n" for x in lines))
    return p


def test_bad_rows_name_file_and_line(tmp_path):
    good = MEDQA.read_text().splitlines()
    bad_key = json.loads(good[1])
    bad_key["answer_idx"] = "E"
    p = _medqa_dir(tmp_path, [good[0], json.dumps(bad_key), "{not json", good[2]])
    with pytest.raises(UserError, match=rf"{p}:2: answer_idx 'E' is not one of the options A, B, C, D"):
        TASKS["medqa"].load(tmp_path, False, None)
    rows = TASKS["medqa"].load(tmp_path, True, None)  # explicit skip: counted, with where
    assert len(rows.docs) == 2 and rows.skipped == 2 and rows.skipped_where == [f"{p}:2", f"{p}:3"]
    assert rows.docs[1].where == f"{p}:4"


def test_corrupt_json_and_csv_rows(tmp_path):
    _medqa_dir(tmp_path, [MEDQA.read_text().splitlines()[0], '{"question": "x", "options": '])
    with pytest.raises(UserError, match=r"phrases_no_exclude_test.jsonl:2: invalid JSON"):
        TASKS["medqa"].load(tmp_path, False, None)
    csvp = tmp_path / "mmlu_medical" / "test" / "anatomy_test.csv"
    csvp.parent.mkdir(parents=True)
    csvp.write_text('"Q1",a,b,c,d,A\n"Q2\nspans two lines",a,b,c,d,B\n"Q3",a,b,c,F\n')
    with pytest.raises(UserError, match=rf"{csvp}:4: expected 6 columns"):
        TASKS["mmlu_anatomy"].load(tmp_path, False, None)


def test_missing_empty_and_unknown(tmp_path):
    with pytest.raises(UserError, match=r"medmcqa_dev/dev.json: benchmark file not found.*--hub"):
        TASKS["medmcqa"].load(tmp_path, False, None)
    _medqa_dir(tmp_path, [])
    with pytest.raises(UserError, match="no usable questions"):
        TASKS["medqa"].load(tmp_path, False, None)
    with pytest.raises(UserError, match="unknown task 'medqaa'"):
        expand(["medqaa"])
    tasks, groups = expand(["multimedqa", "medqa"])
    assert tasks == GROUPS["multimedqa"] and set(groups) == {"multimedqa", "mmlu_medical"}


def test_cli_errors_are_one_line_before_any_model_load(tmp_path):
    one_line_error(cli("eval", "--tasks", "nope"), "unknown task 'nope'")
    p = _medqa_dir(tmp_path, ['{"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "C"}'])
    one_line_error(cli("eval", "--tasks", "medqa", "--data-dir", str(tmp_path)), f"{p}:1", "answer_idx 'C'")
    one_line_error(cli("eval", "--tasks", "medmcqa", "--data-dir", str(tmp_path)), "dev.json", "not found")


def test_cli_list():
    r = cli("eval", "--list", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert [t["task"] for t in listed["tasks"]] == list(TASKS)
    assert listed["groups"]["multimedqa"] == GROUPS["multimedqa"]


# ---------- metrics ----------

def _doc(options, gold, **kw):
    return Doc(0, "q", options, gold, "Question: q\nAnswer:", **kw)


def test_acc_and_acc_norm_as_lm_eval_defines_them():
    d = _doc(["a", "a much longer option"], 1)
    # raw: option 0 wins; per character (-2/1 vs -8/20): option 1 wins
    r = M.per_doc("mcq", "loglik", d, [-2.0, -8.0], M.argmax([-2.0, -8.0]))
    assert r == {"acc": 0.0, "acc_norm": 1.0}
    assert M.argmax([-1.0, -1.0, -3.0]) == 0  # ties: first, as np.argmax
    rows = [{"acc": x} for x in (1.0, 0.0, 0.0, 1.0)]
    agg = M.aggregate("mcq", [d] * 4, rows)
    assert agg["acc,none"] == 0.5 and agg["acc_stderr,none"] == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)


def test_truthfulqa_mc2_and_crows():
    d = _doc(["t1", "t2", "f1"], -1, labels=[1, 1, 0])
    ll = [-1.0, -2.0, -0.5]
    p = np.exp(ll) / np.exp(ll).sum()
    assert M.per_doc("truthfulqa_mc2", "loglik", d, ll, 2)["acc"] == pytest.approx(p[:2].sum())
    # very long answers: exp underflows to 0/0 in a naive implementation
    assert M.per_doc("truthfulqa_mc2", "loglik", d, [-900.0, -901.0, -950.0], 0)["acc"] == pytest.approx(1.0)
    c = M.per_doc("crows", "loglik", _doc(["more", "less"], 0), [-10.0, -12.5], 0)
    assert c == {"pct_stereotype": 1.0, "likelihood_diff": 2.5}


def test_bbq_bias_scores():
    def bd(cond, pred, gold, biased):
        d = _doc(["x", "y", "unknown"], gold, meta={"condition": cond, "unknown": 2, "biased": biased})
        return d, M.per_doc("bbq", "loglik", d, None, pred)
    pairs = [bd("disambig", 0, 0, [0]), bd("disambig", 0, 1, [0]), bd("disambig", 1, 1, [0]),
             bd("ambig", 0, 2, [0]), bd("ambig", 2, 2, [0])]
    agg = M.aggregate("bbq", [d for d, _ in pairs], [r for _, r in pairs])
    assert agg["acc_disambig,none"] == pytest.approx(2 / 3) and agg["acc_ambig,none"] == 0.5
    assert agg["bias_score_disambig,none"] == pytest.approx(2 * 2 / 3 - 1)  # 2 biased of 3 non-unknown
    assert agg["bias_score_ambig,none"] == pytest.approx((1 - 0.5) * (2 * 1 / 1 - 1))


def test_group_is_size_weighted_with_macro_mean():
    a = {"acc,none": 0.5, "acc_stderr,none": 0.1}
    b = {"acc,none": 0.2, "acc_stderr,none": 0.05}
    g = M.group_metrics([(a, 100), (b, 300)])
    assert g["acc,none"] == pytest.approx((0.5 * 100 + 0.2 * 300) / 400) and g["acc_macro,none"] == 0.35
    pooled = ((99 * 0.01 * 100) + (299 * 0.0025 * 300)) / (400 - 2)
    assert g["acc_stderr,none"] == pytest.approx((pooled / 400) ** 0.5)


@pytest.mark.parametrize("text,n,want", [
    ("The answer is B because...\nAnswer: C", 4, 2),
    ("I think (D) is right.", 4, 3),
    ("A patient like this needs B.", 4, 1),
    ("answer: b", 4, 1),
    ("Answer: E", 4, -1),
    ("No idea, sorry.", 4, -1),
    # an echoed option list names no answer; one option written out does; a letter after the list still counts
    ("A. yes\nB. no", 3, -1),
    ("A. yes\nB. no\nC. maybe\n", 3, -1),
    ("(A) yes\n(B) no", 3, -1),
    ("B. no", 3, 1),
    ("A. Premotor cortex.", 5, 0),
    ("A. yes\nB. no\nSo B is correct.", 3, 1),
    ("A. yes\nB. no\n\nThe answer is A. yes", 3, 0),
])
def test_parse_answer(text, n, want):
    assert parse_answer(text, n) == want


# ---------- run() on the tiny model ----------

def _cfg(tmp_path, **kw):
    base = dict(tasks=["medqa"], data_dir=str(FIXTURES), output=str(tmp_path / "out"))
    return EvalConfig(**{**base, **kw})


def test_run_writes_lm_eval_shaped_results_and_samples(tiny_backend, tmp_path):
    out = run(_cfg(tmp_path), backend=tiny_backend)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    r = res["results"]["medqa"]
    assert set(r) >= {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none", "baselines"}
    assert res["n-samples"]["medqa"] == {"original": 6, "effective": 6, "skipped": 0}
    assert res["config"]["dtype"] == "float32" and "torch" in res["aloekit_versions"]
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples_medqa.jsonl").read_text().splitlines()]
    assert [s["doc_id"] for s in samples] == list(range(6)) and samples[2]["gold"] == 2
    docs = TASKS["medqa"].load(FIXTURES, False, None).docs
    for s, d in zip(samples, docs):  # the scores are the backend's log-likelihoods of " option"
        want = tiny_backend.loglikelihood(d.context, [" " + o for o in d.options])
        assert s["scores"] == pytest.approx(want, abs=1e-5) and s["pred"] == int(np.argmax(want))
    assert r["acc,none"] == pytest.approx(np.mean([s["pred"] == s["gold"] for s in samples]))
    assert "| medqa | 6 | acc |" in out["markdown"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "done" and "results" in manifest["outputs"]


def test_results_do_not_depend_on_batch_size(tiny_backend, tmp_path, data_dir):
    metrics = []
    old = tiny_backend.cfg.batch_size
    try:
        for bs in (1, 8, 32):
            tiny_backend.cfg.batch_size = bs
            out = run(EvalConfig(tasks=["medmcqa", "pubmedqa"], data_dir=str(data_dir), limit=24),
                      backend=tiny_backend)
            metrics.append({t: {k: v for k, v in r.items() if k.endswith(",none")}
                            for t, r in out["results"].items()})
            # not only the metrics: every score is bit-identical (rows never depend on their batch neighbours)
            metrics[-1]["scores"] = [s["scores"] for s in out["samples"]["medmcqa"] + out["samples"]["pubmedqa"]]
    finally:
        tiny_backend.cfg.batch_size = old
    assert metrics[0] == metrics[1] == metrics[2]


def test_letter_and_generate_scoring(tiny_backend, tmp_path):
    out = run(_cfg(tmp_path, scoring="letter", output=None), backend=tiny_backend)
    s = out["samples"]["medqa"][0]
    assert len(s["scores"]) == 4 and "acc_norm,none" not in out["results"]["medqa"]
    # one forward per question: the letters are single tokens after the rendered chat prompt
    prompt = tiny_backend.render([{"role": "user", "content": "x"}]) + "Answer:"
    assert all(len(tiny_backend.encode_pair(prompt, f" {x}")[1]) == 1 for x in "ABCD")

    out = run(_cfg(tmp_path, scoring="generate", max_new_tokens=8, output=None), backend=tiny_backend)
    res = out["results"]["medqa"]
    rows = out["samples"]["medqa"]
    assert res["unparsed"] == sum(r["pred"] == -1 for r in rows)
    assert all("response" in r for r in rows)
    assert res["acc,none"] == pytest.approx(np.mean([r["pred"] == r["gold"] for r in rows]))


def test_likelihood_only_tasks_say_so_in_letter_mode(tiny_backend, data_dir):
    out = run(EvalConfig(tasks=["crows_pairs"], data_dir=str(data_dir), limit=3, scoring="letter"),
              backend=tiny_backend)
    assert out["configs"]["crows_pairs"]["scoring"] == "loglik"
    assert 0 <= out["results"]["crows_pairs"]["pct_stereotype,none"] <= 1


def test_skip_bad_rows_is_counted_in_results(tiny_backend, tmp_path):
    good = MEDQA.read_text().splitlines()
    _medqa_dir(tmp_path / "d", [good[0], "{broken", good[1]])
    out = run(EvalConfig(tasks=["medqa"], data_dir=str(tmp_path / "d"), skip_bad_rows=True), backend=tiny_backend)
    assert out["n-samples"]["medqa"] == {"original": 3, "effective": 2, "skipped": 1}



def test_repeated_options_tie_exactly_and_the_first_wins(tiny_backend):
    # MedMCQA has questions with the same option twice; lm-eval scores both the same and picks the first
    scores = tiny_backend.loglikelihood("Question: Which is right?\nAnswer:", [" Not recalled", " Kidney",
                                                                               " Not recalled"])
    assert scores[0] == scores[2] and M.argmax(scores) != 2
