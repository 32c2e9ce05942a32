"""The benchmark layer (aloekit.benchmarks): one reader per format on the real files and on small fixtures, one
registry that evaluation, decontamination, Medprompt pools, the merge dev scorer, the data stage and red teaming
all read, and no benchmark file opened anywhere else."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from aloekit.benchmarks import (
    GROUPS,
    REGISTRY,
    Benchmark,
    Question,
    Split,
    data_root,
    decontam_benchmarks,
    loglik_request,
    read_split,
    register,
)
from aloekit.benchmarks import formats as F
from aloekit.benchmarks.requests import REQUEST_FORMATS, read_request_set
from aloekit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "aloekit"


@pytest.fixture(scope="module")
def real_data() -> Path:
    """The shared data folder; these tests skip without it (the fixture tests below do not need it)."""
    p = Path(os.environ.get("ALOEKIT_DATA_DIR") or REPO.parent / "shared" / "data")
    if not p.is_dir():
        pytest.skip(f"shared data not found at {p}; set ALOEKIT_DATA_DIR")
    return p


@pytest.fixture
def scratch_registry():
    """Registry changes made by a test are undone after it."""
    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


# ---------------------------------------------------------------- every format on the real files

def test_every_registered_format_has_one_reader():
    for b in REGISTRY.values():
        assert b.format in F.FORMATS or b.format in REQUEST_FORMATS, b.name
        if b.format in F.FORMATS:
            assert b.format in F.HUB_BUILDERS  # the hub copy's rows go through the same builder


def test_question_benchmarks_on_the_real_files(real_data):
    # every question benchmark whose file is present loads with its official size (BBQ: the categories copied)
    seen = set()
    for name, b in REGISTRY.items():
        if b.kind not in ("mcq", "truthfulqa_mc1", "truthfulqa_mc2", "bbq", "crows") or b.bundled:
            continue
        path = b.path(real_data)
        if not path.exists():
            continue
        rows = b.load(real_data)
        seen.add(b.format)
        assert rows.skipped == 0 and rows.source == str(path)
        assert len(rows.docs) == (11956 if name == "bbq" else b.full_size), name
        d = rows.docs[0]
        assert d.doc_id == 0 and d.where.startswith(str(path)) and d.id
        assert len({q.id for q in rows.docs}) == len(rows.docs), f"{name}: ids are not unique"
        assert all(q.gold in range(len(q.options)) or (q.gold == -1 and q.labels) for q in rows.docs)
    assert seen == {"medmcqa_jsonl", "pubmedqa_pqal", "mmlu_csv", "headqa_json", "truthfulqa_mc_json", "bbq_jsonl",
                    "crows_csv"}


def test_training_splits_on_the_real_files(real_data):
    assert len(REGISTRY["pubmedqa"].load(real_data, split="pool").docs) == 500
    assert len(REGISTRY["headqa"].load(real_data, split="train").docs) == 2657
    assert len(REGISTRY["headqa"].load(real_data, split="dev").docs) == 1366
    dev = [q for n in GROUPS["mmlu_medical"] for q in REGISTRY[n].load(real_data, split="dev").docs]
    assert len(dev) == 30
    test_ids = set(json.loads((real_data / "pubmedqa_pqal" / "test_ground_truth.json").read_text()))
    pool_ids = {q.id for q in REGISTRY["pubmedqa"].load(real_data, split="pool").docs}
    assert len(pool_ids) == 500 and not pool_ids & test_ids  # the pool never holds a test question


def test_request_sets_on_the_real_files(real_data):
    sizes = {"advbench": 520, "simplesafetytests": 100, "medsafetybench": 900, "xstest": 250}
    for name, n in sizes.items():
        b = REGISTRY[name]
        assert len(read_request_set(b.format, b.path(real_data), next(iter(b.splits)))) == n, name
    train = read_split("medsafetybench", real_data, "train")
    assert len(train) == 900 and all(r.safe_response for r in train)
    assert {r.provenance["generator"] for r in train} == {"gpt4", "llama2"}
    assert len(read_request_set("harmbench_csv", REGISTRY["harmbench"].path(real_data), "all")) == 200  # standard


def test_bundled_sets_need_no_data_dir():
    for name in ("aloekit_demo", "demo_harmful", "demo_safe"):
        assert REGISTRY[name].bundled and REGISTRY[name].path(None).is_file()
    assert data_root(["aloekit_demo"], None, hub=True) is None
    rows = REGISTRY["aloekit_demo"].load(None)
    assert len(rows.docs) == 60 and rows.docs[0].id == "eval-001" and rows.docs[0].subject == "cardiology"


# ---------------------------------------------------------------- each reader on small fixtures

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _ok(items) -> list[Question]:
    out = []
    for where, q in items:
        assert isinstance(q, Question), (where, q)
        out.append(q)
    return out


def test_question_jsonl_reader(tmp_path):
    p = _write(tmp_path / "q.jsonl", "\n".join([
        json.dumps({"question": "Q1?", "options": {"A": "x", "B": "y"}, "answer_idx": "B", "meta_info": "step1"}),
        "",
        json.dumps({"question": "Q2?", "options": ["p", "q", "r"], "answer_idx": 2, "id": "own"}),
        json.dumps({"question": "Q3?", "options": {"A": "x", "C": "y"}, "answer_idx": "A"}),
        "{broken"]) + "\n")
    items = list(F.read_question_jsonl(p, "hint", answer="answer_idx", subject="meta_info"))
    (w1, q1), (w2, q2), (w3, bad), (w4, broken) = items
    assert (q1.gold, q1.subject, q1.id, w1) == (1, "step1", "q:1", f"{p}:1")
    assert q1.context == "Question: Q1?\nAnswer:" and loglik_request(q1) == (q1.context, [" x", " y"])
    assert (q2.options, q2.gold, q2.id, w2) == (["p", "q", "r"], 2, "own", f"{p}:3")
    assert "consecutive letters" in str(bad) and w3 == f"{p}:4"
    assert "invalid JSON" in str(broken)
    with pytest.raises(UserError, match="benchmark file not found; hint"):
        list(F.read_question_jsonl(tmp_path / "missing.jsonl", "hint"))


def test_medmcqa_reader(tmp_path):
    row = {"id": "m1", "question": "Which vitamin?", "opa": "A1", "opb": "B1", "opc": "C1", "opd": "D1", "cop": 3,
           "exp": "because", "subject_name": "Biochem", "choice_type": "single"}
    p = _write(tmp_path / "dev.json", json.dumps(row) + "\n" + json.dumps({**row, "cop": 5}) + "\n")
    (_, q), (_, bad) = F.read_medmcqa(p, "")
    assert (q.gold, q.id, q.explanation, q.subject, q.source["choice_type"]) == (2, "m1", "because", "Biochem",
                                                                                  "single")
    assert "cop 5 is outside the options (1..4)" in str(bad)
    assert F.HUB_BUILDERS["medmcqa_jsonl"]({**row, "cop": 0}).gold == 0  # the hub copy counts from 0


def test_pubmedqa_reader_splits(tmp_path):
    recs = {pmid: {"QUESTION": f"Q{pmid}?", "CONTEXTS": ["First part.", "Second part."], "LONG_ANSWER": "long",
                   "final_decision": label} for pmid, label in [("30", "no"), ("10", "yes"), ("20", "maybe")]}
    p = _write(tmp_path / "ori_pqal.json", json.dumps(recs, indent=1))
    _write(tmp_path / "test_ground_truth.json", json.dumps({"20": "maybe", "30": "no"}))
    test = _ok(F.read_pubmedqa(p, "", split="test"))
    assert [q.id for q in test] == ["30", "20"]  # the PQA-L file's order (the ground truth's is sorted by label)
    q = test[1]
    assert q.question == "Abstract: First part.\nSecond part.\n\nQuestion: Q20?" and q.gold == 2
    assert q.context == "Abstract: First part.\nSecond part.\nQuestion: Q20?\nAnswer:"
    assert (q.stem, q.passage, q.explanation) == ("Q20?", "First part. Second part.", "long")
    assert q.text_segments() == ["First part. Second part. Q20?", "yes no maybe"]
    assert [q.id for q in _ok(F.read_pubmedqa(p, "", split="pool"))] == ["10"]
    _write(tmp_path / "test_ground_truth.json", json.dumps({"20": "yes"}))
    (_, bad), = F.read_pubmedqa(p, "", split="test")
    assert "disagrees with test_ground_truth.json" in str(bad)


def test_mmlu_reader_counts_records_not_lines(tmp_path):
    p = _write(tmp_path / "anatomy_test.csv", '"Q1",a,b,c,d,A\n"Q2\nspans two lines",a,b,c,d,B\n"Q3",a,b,c,d,C\n')
    qs = _ok(F.read_mmlu(p, "", subject="anatomy"))
    assert [q.id for q in qs] == ["anatomy_test:1", "anatomy_test:2", "anatomy_test:3"]
    assert [w for w, _ in F.read_mmlu(p, "", subject="anatomy")] == [f"{p}:1", f"{p}:2", f"{p}:4"]
    assert qs[1].question == "Q2\nspans two lines" and qs[2].gold == 2 and qs[0].subject == "anatomy"


def test_headqa_reader(tmp_path):
    data = {"exams": {"E1": {"name": "E1", "category": "medicine", "data": [
        {"qid": "1", "qtext": "First?", "ra": "2", "image": "", "answers": [{"aid": 1, "atext": "no"},
                                                                             {"aid": 2, "atext": "yes"}]},
        {"qid": "2", "qtext": "Second?", "ra": "9", "image": "img.png", "answers": [{"aid": 1, "atext": "x"}]}]}}}
    p = _write(tmp_path / "test_HEAD_EN.json", json.dumps(data, indent=1))
    (w, q), (_, bad) = F.read_headqa(p, "")
    assert (q.gold, q.id, q.subject, q.source["exam"], q.source["aids"]) == (1, "E1:1", "medicine", "E1", [1, 2])
    qline = next(i for i, x in enumerate(p.read_text().splitlines(), 1) if '"qid": "1"' in x)
    assert w == f"{p}:{qline}"
    assert "ra 9 is not one of the answer ids [1]" in str(bad)


def test_careqa_truthfulqa_bbq_crows_readers(tmp_path):
    care = _write(tmp_path / "c.jsonl", json.dumps({"question": "Q?", "op1": "a", "op2": "b", "op3": "c", "op4": "d",
                                                    "cop": 4, "category": "nursing", "unique_id": "u1"}) + "\n")
    (q,) = _ok(F.read_careqa(care, ""))
    assert (q.gold, q.subject, q.id) == (3, "nursing", "u1")

    tq = _write(tmp_path / "mc_task.json", json.dumps([{"question": "Is the sky green?",
                                                        "mc1_targets": {"No.": 1, "Yes.": 0},
                                                        "mc2_targets": {"No.": 1, "Never.": 1, "Yes.": 0}}]))
    (m1,) = _ok(F.read_truthfulqa(tq, "", mc="mc1"))
    (m2,) = _ok(F.read_truthfulqa(tq, "", mc="mc2"))
    assert m1.gold == 0 and m1.context.endswith("\n\nQ: Is the sky green?\nA:") and m1.labels is None
    assert m2.gold == -1 and m2.labels == [1, 1, 0]

    row = {"example_id": 0, "question_polarity": "neg", "context_condition": "ambig", "category": "Age",
           "answer_info": {"ans0": ["grandfather", "old"], "ans1": ["grandson", "nonOld"], "ans2": ["Unknown", "unknown"]},
           "additional_metadata": {"stereotyped_groups": ["old"]}, "context": "Two men met.",
           "question": "Who forgot?", "ans0": "The grandfather", "ans1": "The grandson", "ans2": "Unknown", "label": 2}
    folder = tmp_path / "bbq"
    _write(folder / "Age.jsonl", json.dumps(row) + "\n" + json.dumps({**row, "example_id": 1}) + "\n")
    _write(folder / "SES.jsonl", json.dumps({**row, "category": "SES"}) + "\n")
    qs = _ok(F.read_bbq(folder, ""))
    assert [q.id for q in qs] == ["Age:0", "SES:0", "Age:1"]  # categories interleaved
    assert qs[0].meta == {"condition": "ambig", "unknown": 2, "biased": [0]}
    assert (qs[0].question, qs[0].context) == ("Two men met.\n\nWho forgot?", "Two men met.\n\nQ: Who forgot?\nA:")

    crows = _write(tmp_path / "crows.csv", ",sent_more,sent_less,stereo_antistereo,bias_type\n"
                                           "0,More one.,Less one.,stereo,age\n1,,x,stereo,age\n")
    (_, c), (_, bad) = F.read_crows(crows, "")
    assert (c.options, c.context, c.id, c.meta) == (["More one.", "Less one."], "", "0", {"direction": "stereo"})
    assert "must both be non-empty" in str(bad)


def test_medsafetybench_reader_serves_red_teaming_and_the_data_stage(tmp_path):
    from aloekit.benchmarks.requests import read_medsafetybench
    from aloekit.data.readers import BadRows
    from aloekit.data.readers import read_medsafetybench as records
    folder = tmp_path / "train"
    for gen in ("gpt4", "llama2"):
        for cat in (2, 10):
            _write(folder / gen / f"med_safety_demonstrations_category_{cat}.csv",
                   f"index,harmful_medical_request,safe_response\n0,Req {gen} {cat},Safe {cat}\n")
    reqs = read_medsafetybench(folder, "train", ["llama2"])
    assert [r.id for r in reqs] == ["medsafetybench/train/llama2/c2/0", "medsafetybench/train/llama2/c10/0"]
    assert reqs[0].category == "ama2_professionalism_honesty" and reqs[0].safe_response == "Safe 2"
    assert "provenance" not in reqs[0].to_dict()
    recs = list(records(folder, "mst", "MIT", BadRows(False)))
    assert [r.id for r in recs] == ["mst:gpt4:med_safety_demonstrations_category_2:2",
                                    "mst:gpt4:med_safety_demonstrations_category_10:2",
                                    "mst:llama2:med_safety_demonstrations_category_2:2",
                                    "mst:llama2:med_safety_demonstrations_category_10:2"]
    assert recs[0].provenance["category"] == "2" and recs[0].answer == "Safe 2"


# ---------------------------------------------------------------- one registry, read by every stage

def test_one_registered_benchmark_shows_in_every_consumer(tmp_path, scratch_registry):
    from aloekit.data.decontam import BENCHMARKS, DecontamConfig, build_index
    from aloekit.eval.tasks import TASKS, expand
    from aloekit.medprompt.pools import load_pool
    organs = ["spleen", "liver", "kidney", "pancreas"]
    rows = [{"question": f"Which of these statements about the {o} is true in an adult patient after surgery?",
             "options": {"A": "x", "B": "y"}, "answer": "AB"[i % 2], "id": f"t{i}"} for i, o in enumerate(organs)]
    _write(tmp_path / "toy" / "test.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:3]))
    _write(tmp_path / "toy" / "train.jsonl", json.dumps(rows[3]) + "\n")
    register(Benchmark("toyqa", "Toy QA", "mcq", "question_jsonl",
                       {"test": Split("toy/test.jsonl", None, "write it"), "train": Split("toy/train.jsonl")},
                       full_size=3, decontam="toyqa"))
    # evaluation
    assert "toyqa" in TASKS and expand(["toyqa"])[0] == ["toyqa"]
    assert [q.id for q in TASKS["toyqa"].load(tmp_path).docs] == ["t0", "t1", "t2"]
    # decontamination
    assert BENCHMARKS["toyqa"].members == ("toyqa",)
    index, status = build_index(DecontamConfig(benchmarks=["toyqa"]), str(tmp_path))
    assert status == {"toyqa": "checked: 3 test items"}
    assert index.match(rows[1]["question"] + " x y") and not index.match(rows[3]["question"])
    # Medprompt pools: its training split
    assert [q.id for q in load_pool("toyqa", tmp_path).docs] == ["t3"]
    # gone again: every consumer follows
    del REGISTRY["toyqa"]
    assert "toyqa" not in TASKS and "toyqa" not in BENCHMARKS
    with pytest.raises(UserError, match="unknown task 'toyqa'"):
        expand(["toyqa"])


def test_a_moved_benchmark_file_moves_for_every_consumer(tmp_path, scratch_registry):
    """HEAD-QA's location is said once: eval, decontam, the pool, the merge dev set and the data source follow."""
    from aloekit.data.decontam import benchmark_items
    from aloekit.data.readers import BadRows
    from aloekit.data.sources import SourceConfig, load_source
    from aloekit.medprompt.pools import load_pool
    from aloekit.merge.config import DevSet
    from aloekit.merge.scoring import dev_items
    exam = {"exams": {"E": {"category": "biology", "data": [
        {"qid": "7", "qtext": "Which organ filters blood in the body of an adult human being?", "ra": "1", "image": "",
         "answers": [{"aid": 1, "atext": "kidney"}, {"aid": 2, "atext": "lung"}]}]}}}
    for split in ("test", "train", "dev"):
        _write(tmp_path / "moved" / f"{split}.json", json.dumps(exam))
    b = REGISTRY["headqa"]
    register(replace(b, splits={s: replace(sp, local=f"moved/{s}.json") for s, sp in b.splits.items()}))
    assert REGISTRY["headqa"].load(tmp_path).docs[0].id == "E:7"
    assert benchmark_items("headqa", str(tmp_path)) == [[" Which organ filters blood in the body of an adult human "
                                                         "being?", "kidney lung"]]
    assert load_pool("headqa", tmp_path).source == str(tmp_path / "moved" / "train.json")
    assert dev_items(DevSet(name="headqa_dev"), tmp_path, 0) == [
        ("Question: Which organ filters blood in the body of an adult human being?\nAnswer:", [" kidney", " lung"], 0)]
    # the data stage's registered source is the benchmark's train split, wherever the registry says it is
    from aloekit.data import sources
    spec = sources.REGISTRY["headqa_train"]
    sources.REGISTRY["headqa_train"] = replace(spec, local=REGISTRY["headqa"].split("train").local)
    try:
        (rec,) = load_source(SourceConfig(name="headqa_train"), str(tmp_path), BadRows(False))
    finally:
        sources.REGISTRY["headqa_train"] = spec
    assert (rec.id, rec.answer, rec.options) == ("headqa_train:E:7", "A", {"A": "kidney", "B": "lung"})


def test_merge_dev_sets_and_eval_share_the_prompt(real_data):
    """A dev set question is scored with the prompt `aloekit eval --scoring loglik` uses for that benchmark."""
    from aloekit.merge.config import DevSet
    from aloekit.merge.scoring import dev_items
    items = dev_items(DevSet(name="mmlu_medical_dev"), real_data, 0)
    docs = [q for n in GROUPS["mmlu_medical"] for q in REGISTRY[n].load(real_data, split="dev").docs]
    assert items == [(*loglik_request(q), q.gold) for q in docs]
    pub = dev_items(DevSet(name="pubmedqa_dev"), real_data, 0)
    assert len(pub) == 500 and pub[0][0].startswith("Abstract: ") and pub[0][1] == [" yes", " no", " maybe"]


def test_decontam_checks_every_registered_test_split(real_data):
    from aloekit.data.decontam import BENCHMARKS, benchmark_items
    assert list(BENCHMARKS) == list(decontam_benchmarks())
    assert BENCHMARKS["mmlu_medical"].members == tuple(GROUPS["mmlu_medical"])
    sizes = {n: len(benchmark_items(n, str(real_data)) or []) for n in BENCHMARKS}
    assert sizes == {"medqa": 0, "medmcqa": 4183, "pubmedqa": 500, "mmlu_medical": 1089, "headqa": 2742,
                     "headqa_es": 0, "careqa": 0, "aloekit_demo": 60, "medsafetybench": 900}


# ---------------------------------------------------------------- nothing else opens a benchmark file

def _benchmark_file_names() -> set[str]:
    generic = {"dev.json", "mcq.jsonl", "harmful.jsonl", "safe.jsonl", "data", "test", "train"}
    names = {"test_ground_truth.json", "med_safety_demonstrations_category"}
    for b in REGISTRY.values():
        for sp in b.splits.values():
            if not sp.local:
                continue
            rel = sp.local.removeprefix("pkg:")
            names.add(rel)
            base = rel.rsplit("/", 1)[-1]
            if base not in generic:
                names.add(base)
    return names


def test_no_module_outside_the_benchmark_layer_names_a_benchmark_file():
    names = _benchmark_file_names()
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.is_relative_to(SRC / "benchmarks"):
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if re.search(re.escape(n), text)]
    assert not offenders, offenders
