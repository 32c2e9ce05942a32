"""MedQA, CareQA and Spanish HEAD-QA on fixtures in their original formats (rows written for aloekit, malformed rows
included), MedQA decontamination when its test file is present, and the `aloe_medical` group over the members
whose files are present. tests/fixtures/benchmark_data is laid out as a data folder (--data-dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloekit.backends.base import Backend
from aloekit.benchmarks import GROUPS, REGISTRY, Question
from aloekit.benchmarks import formats as F
from aloekit.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "benchmark_data"
MEDQA = FIX / "medqa_usmle_4opt" / "phrases_no_exclude_test.jsonl"
CAREQA = FIX / "careqa" / "CareQA_en.jsonl"
HEADQA_ES = FIX / "headqa_es" / "test_HEAD.json"


def rows_of(path: Path) -> list[tuple[int, dict]]:
    """(line, row) for each line of a JSON Lines fixture that parses."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError:
            pass
    return out


def _bad_rows(items) -> dict[str, str]:
    """where -> what is wrong, for the reader's bad rows."""
    return {w: str(x) for w, x in items if not isinstance(x, Question)}


def _one_line_error(load, where: str, what: str) -> None:
    with pytest.raises(UserError) as e:
        load()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{where}: {what}"), msg
    assert msg.endswith("; fix the row or pass --skip-bad-rows to skip it"), msg


# ---------------------------------------------------------------- MedQA (jind11 US 4-option JSONL)

def test_medqa_fixture_good_rows_load():
    rows = REGISTRY["medqa"].load(FIX, skip_bad=True)
    assert rows.source == str(MEDQA) and len(rows.docs) == 20
    first = rows.docs[0]
    assert first.options == ["Anti-thyroid peroxidase antibody", "Thyroid-stimulating hormone receptor antibody",
                             "Anti-thyroglobulin antibody", "Anti-mitochondrial antibody"]
    assert (first.gold, first.subject, first.id, first.where) == (1, "step1", "phrases_no_exclude_test:1",
                                                                   f"{MEDQA}:1")
    assert first.context == f"Question: {first.question}\nAnswer:"
    # the `answer` text of each good row is its gold option (answer_idx is what the reader reads)
    by_q = {r["question"]: r for _, r in rows_of(MEDQA)}
    assert all(q.options[q.gold] == by_q[q.question]["answer"] for q in rows.docs)
    assert {q.subject for q in rows.docs} == {"step1", "step2&3"}
    # rows after a bad one keep their own line numbers
    assert rows.docs[4].where == f"{MEDQA}:6" and rows.docs[-1].where == f"{MEDQA}:24"


def test_medqa_fixture_bad_rows_named_by_file_and_line():
    bad = _bad_rows(REGISTRY["medqa"].items(FIX))
    assert bad == {
        f"{MEDQA}:5": "field 'answer_idx' (the gold option: letter or 0-based index) is missing",
        f"{MEDQA}:11": "answer_idx 'E' is not one of the options A, B, C, D",
        f"{MEDQA}:17": "field 'question' is missing or empty",
        f"{MEDQA}:23": bad[f"{MEDQA}:23"],
    }
    assert bad[f"{MEDQA}:23"].startswith("invalid JSON")
    _one_line_error(lambda: REGISTRY["medqa"].load(FIX), f"{MEDQA}:5", "field 'answer_idx'")
    rows = REGISTRY["medqa"].load(FIX, skip_bad=True)
    assert rows.skipped == 4 and rows.skipped_where == [f"{MEDQA}:{n}" for n in (5, 11, 17, 23)]
    # --limit stops before the rows it does not need
    assert REGISTRY["medqa"].load(FIX, limit=4).skipped == 0


# ---------------------------------------------------------------- CareQA (hub HPAI-BSC/CareQA schema, JSON Lines)

def test_careqa_fixture_good_rows_load():
    rows = REGISTRY["careqa"].load(FIX, skip_bad=True)
    assert rows.source == str(CAREQA) and len(rows.docs) == 20
    q = rows.docs[0]
    assert (q.question, q.gold, q.subject, q.id, q.where) == (
        "Which organelle is the main site of fatty acid beta-oxidation in human cells?", 1, "biology",
        "aloekit-careqa-001", f"{CAREQA}:1")
    assert q.options == ["Golgi apparatus", "Mitochondrion", "Rough endoplasmic reticulum", "Lysosome"]
    assert {d.subject for d in rows.docs} == {"biology", "chemistry", "medicine", "nursing", "pharmacology",
                                               "psychology"}
    assert sorted({d.gold for d in rows.docs}) == [0, 1, 2, 3]  # cop 1-4 -> 0-3
    assert len({d.id for d in rows.docs}) == 20


def test_careqa_fixture_bad_rows_named_by_file_and_line():
    bad = _bad_rows(REGISTRY["careqa"].items(FIX))
    assert set(bad) == {f"{CAREQA}:{n}" for n in (4, 9, 15, 22)}
    assert bad[f"{CAREQA}:4"] == "field 'cop' (the gold option, 1-4) is missing"
    assert bad[f"{CAREQA}:9"] == "cop 5 is outside the options (1..4)"
    assert bad[f"{CAREQA}:15"] == "field 'question' is missing or empty"
    assert bad[f"{CAREQA}:22"].startswith("invalid JSON")
    _one_line_error(lambda: REGISTRY["careqa"].load(FIX), f"{CAREQA}:4", "field 'cop'")
    rows = REGISTRY["careqa"].load(FIX, skip_bad=True)
    assert rows.skipped == 4 and rows.skipped_where == [f"{CAREQA}:{n}" for n in (4, 9, 15, 22)]


# ---------------------------------------------------------------- HEAD-QA, the Spanish original

def test_headqa_es_reads_the_spanish_file_with_the_headqa_reader(tmp_path):
    es = REGISTRY["headqa_es"]
    assert es.format == REGISTRY["headqa"].format == "headqa_json" and es.hub_config == "es"
    assert es.path(FIX) == HEADQA_ES
    rows = es.load(FIX, skip_bad=True)
    assert len(rows.docs) == 9 and rows.skipped == 1
    q = rows.docs[0]
    assert q.question == ("¿Cuál es el agente etiológico más frecuente de la neumonía adquirida en la comunidad en "
                          "adultos?")
    assert (q.gold, q.id, q.subject, q.where) == (1, "Cuaderno_2014_1_M:1", "medicine", f"{HEADQA_ES}:3")
    assert q.context == f"Question: {q.question}\nAnswer:"  # lm-eval's headqa_es prompt is the English one's
    assert rows.docs[3].source["image"] == "images/M_2014_5.png"
    assert [d.id for d in rows.docs[5:]] == [f"Cuaderno_2014_1_E:{n}" for n in (1, 2, 3, 6)]
    assert rows.docs[-1].options[rows.docs[-1].gold] == "N-acetilcisteína" and rows.docs[-1].subject == "nursery"
    _one_line_error(lambda: es.load(FIX), f"{HEADQA_ES}:7", "ra 9 is not one of the answer ids [1, 2, 3, 4]")
    # the same file written as HEAD-QA's own files are (one line, non-ASCII as \u escapes) reads the same
    data = json.loads(HEADQA_ES.read_text(encoding="utf-8"))
    one_line = tmp_path / "test_HEAD.json"
    one_line.write_text(json.dumps(data), encoding="utf-8")
    assert "\\u00bf" in one_line.read_text()
    again = [q for _, q in F.read_headqa(one_line, "") if isinstance(q, Question)]
    assert [(d.question, d.options, d.gold, d.id) for d in again] == [
        (d.question, d.options, d.gold, d.id) for d in rows.docs]


def test_headqa_es_absent_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError, match=r"headqa_es/test_HEAD.json: benchmark file not found; get HEAD-QA's "
                                        r"Spanish test_HEAD.json, or pass --hub"):
        REGISTRY["headqa_es"].load(tmp_path)


# ---------------------------------------------------------------- decontamination: MedQA checked when present

def _leaky_source(tmp_path: Path) -> Path:
    """A MedQA-format training file (the hub copy's schema) into which three MedQA test questions leaked."""
    test_rows = [r for n, r in rows_of(MEDQA) if n in (2, 9, 24)]
    clean = [("A 44-year-old woman has episodes of vertigo lasting hours with fluctuating hearing loss and tinnitus "
              "in the left ear. Which is the most likely diagnosis?",
              ["Vestibular neuritis", "Meniere disease", "Acoustic neuroma", "Benign paroxysmal positional vertigo"],
              "B"),
             ("A 70-year-old man has painless jaundice, weight loss and a palpable non-tender gallbladder. Which "
              "is the most likely diagnosis?",
              ["Choledocholithiasis", "Carcinoma of the head of the pancreas", "Hepatitis A", "Gilbert syndrome"],
              "B"),
             ("A 25-year-old man has recurrent gross haematuria one day after upper respiratory infections. "
              "Which deposit does a renal biopsy most likely show?",
              ["IgA in the mesangium", "IgG along the basement membrane", "No deposits", "Amyloid"], "A")]
    rows = [{"question": q, "answer": o["ABCD".index(a)], "options": dict(zip("ABCD", o)), "meta_info": "step1",
             "answer_idx": a} for q, o, a in clean]
    rows[1:1] = [{k: r[k] for k in ("question", "answer", "options", "meta_info", "answer_idx")} for r in test_rows]
    p = tmp_path / "medqa_train_copy.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_a_medqa_contaminated_source_is_removed(tmp_path):
    from aloekit.data.decontam import DecontamConfig, build_index, decontaminate
    from aloekit.data.readers import BadRows
    from aloekit.data.records import Record
    from aloekit.data.sources import SourceConfig, load_source
    from aloekit.data.templates import render_sft
    src = SourceConfig(name="medqa_train_copy", path=str(_leaky_source(tmp_path)), kind="mcq",
                       fields={"question": "question", "options": "options", "answer": "answer_idx"})
    recs = list(load_source(src, None, BadRows(False)))
    assert len(recs) == 6

    index, status = build_index(DecontamConfig(), str(FIX))
    assert status["medqa"] == "checked: 20 test items"  # the good rows; bad rows are left out
    assert status["careqa"] == "checked: 20 test items" and status["headqa_es"] == "checked: 9 test items"
    assert status["medmcqa"] == (f"NOT CHECKED: no local test split ({FIX / 'medmcqa_dev' / 'dev.json'} not found; "
                                 "hub copy openlifescienceai/medmcqa:validation is not read)")
    kept, rep = decontaminate(recs, index)
    assert [r.question[:12] for r in kept] == ["A 44-year-ol", "A 70-year-ol", "A 25-year-ol"]
    assert rep["removed_by_benchmark"] == {"medqa": {"medqa_train_copy": 3}}
    assert rep["removed_by_source"] == {"medqa_train_copy": 3}
    # still found once rendered as a chat by any template
    chats = [Record("chat", "rendered", r.id, messages=render_sft(r, seed=s)[0]) for s in range(3) for r in recs]
    kept_chats, _ = decontaminate(chats, index)
    assert len(kept_chats) == 9

    # without MedQA's test file the same source passes unchecked, and the card says why
    empty = tmp_path / "no_medqa"
    empty.mkdir()
    index2, status2 = build_index(DecontamConfig(), str(empty))
    assert status2["medqa"].startswith(f"NOT CHECKED: no local test split ({empty / MEDQA.relative_to(FIX)} "
                                       "not found; hub copy GBaker/MedQA-USMLE-4-options:test is not read)")
    assert len(decontaminate(recs, index2)[0]) == 6
    with pytest.raises(UserError, match=r"decontam: benchmark 'medqa' has no local test split \(.*"
                                        r"phrases_no_exclude_test.jsonl not found\)"):
        build_index(DecontamConfig(benchmarks=["medqa"]), str(empty))


# ---------------------------------------------------------------- the aloe_medical group

class _ShortestOption(Backend):
    """Scores each option by minus its length: deterministic, no model."""
    name = "shortest"

    def generate(self, prompts, sampling=None, n=1):
        raise NotImplementedError

    def loglikelihood_batch(self, requests):
        return [[-float(len(c)) for c in conts] for _, conts in requests]


def test_aloe_medical_is_the_papers_set():
    assert GROUPS["aloe_medical"] == ["medqa", "medmcqa", "pubmedqa", *GROUPS["mmlu_medical"], "headqa", "careqa"]
    assert all(REGISTRY[m].kind == "mcq" for m in GROUPS["aloe_medical"])


def test_aloe_medical_skips_members_without_files(tmp_path):
    from aloekit.eval.tasks import present
    tasks, groups, skipped = present(["aloe_medical"], FIX)
    assert tasks == ["medqa", "careqa"] and groups == {"aloe_medical": ["medqa", "careqa"]}
    assert list(skipped) == ["medmcqa", "pubmedqa", *GROUPS["mmlu_medical"], "headqa"]
    assert skipped["headqa"] == f"{FIX / 'headqa_en' / 'test_HEAD_EN.json'} not found"
    # from the hub every member is there; other groups and tasks named on their own still need their file
    assert present(["aloe_medical"], None)[2] == {}
    assert present(["multimedqa"], FIX)[2] == {}
    assert "headqa" in present(["aloe_medical", "headqa"], FIX)[0]
    with pytest.raises(UserError, match="none of the benchmark files found under"):
        present(["aloe_medical"], tmp_path)


def test_aloe_medical_evaluates_what_is_present(tmp_path):
    from aloekit.eval import EvalConfig, run
    out = run(EvalConfig(tasks=["aloe_medical"], data_dir=str(FIX), skip_bad_rows=True, output=str(tmp_path / "o")),
              backend=_ShortestOption())
    assert out["group_subtasks"] == {"aloe_medical": ["medqa", "careqa"]}
    assert set(out["tasks_skipped"]) == {"medmcqa", "pubmedqa", *GROUPS["mmlu_medical"], "headqa"}
    assert out["n-samples"] == {"medqa": {"original": 24, "effective": 20, "skipped": 4},
                                "careqa": {"original": 24, "effective": 20, "skipped": 4}}
    res = out["results"]
    assert res["aloe_medical"]["acc,none"] == pytest.approx((res["medqa"]["acc,none"] + res["careqa"]["acc,none"]) / 2)
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["tasks_skipped"]["headqa"].endswith("test_HEAD_EN.json not found")
    # a member asked for by name is not optional
    with pytest.raises(UserError, match="test_HEAD_EN.json: benchmark file not found"):
        run(EvalConfig(tasks=["aloe_medical", "headqa"], data_dir=str(FIX), skip_bad_rows=True),
            backend=_ShortestOption())
