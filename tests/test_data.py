"""Data curation pipeline: readers on the real shared data, cleaning, dedup, decontam, templates, build."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aloekit.config import load_config
from aloekit.data.clean import CleanConfig, clean
from aloekit.data.decontam import DecontamConfig, NgramIndex, build_index, decontaminate
from aloekit.data.dedup import DedupConfig, dedup
from aloekit.data.mixture import apply_general_fraction, apply_weights, split
from aloekit.data.pipeline import DataConfig, run
from aloekit.data.readers import BadRows
from aloekit.data.records import Record
from aloekit.data.sources import REGISTRY, SourceConfig, load_source
from aloekit.data.templates import COUNTS, render_sft
from aloekit.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def load(name, data_dir, **kw):
    return list(load_source(SourceConfig(name=name, **kw), str(data_dir), BadRows(False)))


def mcq(q, opts, ans="A", src="s", rid=None):
    return Record("mcq", src, rid or f"{src}:{q[:20]}", question=q, options=dict(zip("ABCD", opts)), answer=ans)


# ---------------------------------------------------------------- readers on the original formats

def test_readers_real_formats(data_dir):
    head = load("headqa_train", data_dir)
    assert len(head) == 2657
    assert all(len(r.options) == 5 and r.answer in r.options for r in head)
    assert sum("needs_image" in r.tags for r in head) > 0
    pool = load("pubmedqa_pool", data_dir)
    test_ids = set(json.loads((data_dir / "pubmedqa_pqal/test_ground_truth.json").read_text()))
    assert len(pool) == 500 and not {r.provenance["pmid"] for r in pool} & test_ids
    assert all(r.options == {"A": "yes", "B": "no", "C": "maybe"} and r.context for r in pool)
    med = load("medmcqa_dev", data_dir)
    assert len(med) == 4183 and med[0].answer == "A"  # cop 1 -> A
    assert len(load("mmlu_medical_dev", data_dir)) == 30
    safety = load("medsafetybench_train", data_dir)
    assert len(safety) == 900 and all(r.kind == "qa" and r.answer for r in safety)
    hh = load("hh_rlhf_harmless", data_dir)
    assert len(hh) > 2000 and all(r.kind == "preference" and r.chosen != r.rejected for r in hh[:50])
    assert all(r.provenance.get("license") and r.provenance.get("file") for r in head[:5] + safety[:5])


def test_demo_corpus_is_complete_and_consistent():
    counts = {"demo_mcq": 60, "demo_qa": 40, "demo_preference": 30, "demo_safety": 30, "demo_benign": 30}
    seen = set()
    for name, n in counts.items():
        rows = load(name, None)
        assert len(rows) == n, name
        for r in rows:
            assert r.id not in seen
            seen.add(r.id)
            if r.kind == "mcq":
                assert len(r.options) == 4 and r.answer in r.options and len(r.explanation) > 40
            elif r.kind == "qa":
                assert r.question.strip() and len(r.answer) > 40
            else:
                assert r.chosen and r.rejected and r.chosen != r.rejected
    # gold letters are spread over A-D, so a letter-biased model cannot look good on it
    letters = {r.answer for r in load("demo_mcq", None)}
    assert letters == set("ABCD")


def test_generic_jsonl_csv_parquet_with_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"q": "What is the capital organ of digestion?", "a": "The stomach and intestines.", "uid": 7},
            {"q": "Which organ filters blood?", "a": "The kidneys filter blood.", "uid": 8}]
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "x.csv").write_text("q,a,uid\n" + "".join(f"\"{r['q']}\",\"{r['a']}\",{r['uid']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    for ext in ("jsonl", "csv", "parquet"):
        sc = SourceConfig(name=f"mine_{ext}", path=str(tmp_path / f"x.{ext}"), kind="qa",
                          fields={"question": "q", "answer": "a", "id": "uid"}, license="CC0")
        recs = list(load_source(sc, None, BadRows(False)))
        assert [r.question for r in recs] == [r["q"] for r in rows]
        assert recs[0].id == f"mine_{ext}:7" and recs[0].provenance["line"] >= 1
    mc = [{"stem": "Which vitamin prevents scurvy?", "choices": ["A vit", "C vit"], "gold": 1}]
    (tmp_path / "m.jsonl").write_text(json.dumps(mc[0]) + "\n")
    sc = SourceConfig(name="mine_mcq", path=str(tmp_path / "m.jsonl"), kind="mcq",
                      fields={"question": "stem", "options": "choices", "answer": "gold"})
    r = next(load_source(sc, None, BadRows(False)))
    assert r.options == {"A": "A vit", "B": "C vit"} and r.answer == "A"  # 1-based index convention


# ---------------------------------------------------------------- bad input

def test_bad_input_errors_name_source_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"q": "ok question here", "a": "fine"}\n{not json\n')
    sc = SourceConfig(name="mine", path=str(p), kind="qa", fields={"question": "q", "answer": "a"})
    with pytest.raises(UserError, match=r"source 'mine'.*bad.jsonl line 2.*invalid JSON"):
        list(load_source(sc, None, BadRows(False)))
    bad = BadRows(True)
    assert len(list(load_source(sc, None, bad))) == 1 and bad.counts["mine"] == 1
    sc2 = SourceConfig(name="mine", path=str(p), kind="qa", fields={"question": "nope", "answer": "a"})
    with pytest.raises(UserError, match=r"line 1: field 'nope' not found"):
        list(load_source(sc2, None, BadRows(True)))  # a wrong mapping fails even when skipping bad rows
    c = tmp_path / "m.csv"
    c.write_text("q,a\nfirst question?,yes\n")
    with pytest.raises(UserError, match=r"m.csv line 2: field 'answer' not found"):
        list(load_source(SourceConfig(name="c", path=str(c), kind="qa", fields={"question": "q"}), None,
                         BadRows(True)))
    with pytest.raises(UserError, match="does not exist"):
        list(load_source(SourceConfig(name="x", path=str(tmp_path / "missing.jsonl"), kind="qa",
                                      fields={"question": "q"}), None, BadRows(False)))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"q": "caf\xe9", "a": "x"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        list(load_source(SourceConfig(name="l", path=str(latin), kind="qa", fields={"question": "q", "answer": "a"}),
                         None, BadRows(False)))
    with pytest.raises(UserError, match="not registered"):
        list(load_source(SourceConfig(name="no_such_source"), None, BadRows(False)))


def test_cli_bad_config_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"output: {tmp_path}/out\nsources:\n  - name: x\n    path: {tmp_path}/nope.csv\n    kind: qa\n"
                   "    fields: {question: q, answer: a}\n")
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "data", "build", str(cfg)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "nope.csv does not exist" in r.stderr
    cfg.write_text("sources:\n  - name: demo_qa\n    wieght: 2\n")
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "data", "build", str(cfg)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2 and "unknown key 'sources.0.wieght'" in r.stderr


def test_empty_result_after_filtering_is_an_error(tmp_path):
    cfg = DataConfig(output=str(tmp_path / "o"), sources=[SourceConfig(name="demo_qa")],
                     clean=CleanConfig(min_answer_chars=100000), decontam=DecontamConfig(enabled=False))
    with pytest.raises(UserError, match="no rows left"):
        run(cfg)


# ---------------------------------------------------------------- cleaning

def test_cleaning_fixes_text_and_counts_every_filter():
    recs = [
        Record("qa", "s", "1", question="what is  BP?\x07 see https://x.org/a or mail me@x.com", answer="ok answer"),
        mcq("Which one is right here?", ["a", "b"], ans="E"),  # answer outside options
        Record("qa", "s", "3", question="Is this garbled?", answer="Ã©Ã©Ã© broken"),
        Record("qa", "s", "4", question="short", answer="x"),
        Record("qa", "t", "5", question="A normal question about health?", answer=""),
    ]
    kept, removed, modified = clean(recs, CleanConfig())
    assert [r.id for r in kept] == ["1"]
    assert kept[0].question == "What is BP? see or mail"
    assert removed == {"answer_not_in_options": {"s": 1}, "garbled": {"s": 1}, "question_too_short": {"s": 1},
                       "empty_answer": {"t": 1}}
    assert modified["urls"] == {"s": 1} and modified["emails"] == {"s": 1} and modified["control_chars"] == {"s": 1}
    # "safe" casing leaves identifiers like mRNA / pH alone
    kept, _, _ = clean([Record("qa", "s", "6", question="mRNA vaccines: how do they work?", answer="pH is 7")],
                       CleanConfig())
    assert kept[0].question.startswith("mRNA") and kept[0].answer == "pH is 7"


# ---------------------------------------------------------------- dedup

def test_exact_and_near_dedup_within_and_across_sources():
    base = "Which nerve is compressed in carpal tunnel syndrome at the wrist in adults"
    recs = [mcq(base, ["Ulnar", "Median", "Radial", "Axillary"], src="a", rid="a1"),
            mcq(base.upper() + "!!", ["ulnar", "median", "radial", "axillary"], src="b", rid="b1"),  # exact
            mcq(base.replace("adults", "grown adults"), ["Ulnar", "Median", "Radial", "Axillary"], src="b",
                rid="b2"),  # near
            mcq("What is the antidote for paracetamol overdose in the emergency room", ["NAC", "Naloxone",
                "Atropine", "Flumazenil"], src="b", rid="b3")]
    kept, rep = dedup(recs, DedupConfig(threshold=0.7))
    assert [r.id for r in kept] == ["a1", "b3"]  # the first-listed source wins
    assert rep["removed"] == {"exact": {"b": 1}, "near": {"b": 1}}
    assert {c["removed_from"]: c["duplicate_of"] for c in rep["cross_source"]} == {"b": "a"}
    kept2, _ = dedup(recs, DedupConfig(threshold=0.7, near=False))
    assert [r.id for r in kept2] == ["a1", "b2", "b3"]


def test_dedup_keeps_what_a_plain_datasketch_loop_keeps():
    """The fast path (one normalisation, shared permutations, update_batch, xxHash) must keep exactly the records a
    plain per-record datasketch MinHash + MinHashLSH loop keeps, near-duplicates included."""
    import random

    from datasketch import MinHash, MinHashLSH
    from xxhash import xxh32_intdigest

    from aloekit.data.dedup import normalise
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(400)]
    texts = []
    for _ in range(300):
        if texts and rng.random() < 0.4:  # an edited copy of an earlier text: a few words swapped
            words = rng.choice(texts).split()
            for _ in range(rng.randint(1, 4)):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 40))))
    recs = [mcq(t, ["A", "B", "C", "D"], src="s", rid=f"r{i}") for i, t in enumerate(texts)]
    cfg = DedupConfig(threshold=0.7)
    kept, rep = dedup(recs, cfg)

    lsh, seen, expect = MinHashLSH(threshold=0.7, num_perm=cfg.num_perm), set(), []
    for i, r in enumerate(recs):
        words = normalise(r.dedup_text()).split()
        if " ".join(words) in seen:
            continue
        seen.add(" ".join(words))
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=xxh32_intdigest)
        for j in range(max(1, len(words) - cfg.shingle + 1)):
            m.update(" ".join(words[j:j + cfg.shingle]).encode())
        if not lsh.query(m):
            lsh.insert(i, m)
            expect.append(r.id)
    assert [r.id for r in kept] == expect
    assert rep["removed"]["near"]["s"] > 20  # the workload really has near-duplicates


# ---------------------------------------------------------------- decontamination

def test_ngram_index_uses_question_and_options():
    idx = NgramIndex(n=13)
    bench = mcq("Drug of choice?", ["intramuscular adrenaline into the anterolateral thigh muscle",
                                    "oral antihistamine", "intravenous hydrocortisone", "nebulised salbutamol"])
    idx.add_benchmark("toy", [bench.prompt_text(), "short item here"])
    # same short question, same options in another wording of the stem: options carry the 13-gram
    rec = mcq("Which is the drug of choice for anaphylaxis?", bench.options.values())
    assert idx.names_of(idx.match(rec.prompt_text())) == ["toy"]
    # only the answer letter/option overlaps: clean
    assert idx.match(mcq("Unrelated stem about asthma control?", ["oral antihistamine", "x", "y", "z"]
                         ).prompt_text()) == 0
    # items shorter than n are indexed whole
    assert idx.match("a Short item, here!") and not idx.match("short item")


def test_medmcqa_dev_as_source_is_removed(data_dir):
    recs = load("medmcqa_dev", data_dir) + load("pubmedqa_pool", data_dir)
    index, status = build_index(DecontamConfig(), str(data_dir))
    assert status["medmcqa"].startswith("checked") and status["medqa"].startswith("NOT CHECKED")
    kept, rep = decontaminate(recs, index)
    assert rep["removed_by_benchmark"]["medmcqa"]["medmcqa_dev"] >= 0.99 * 4183
    assert sum(r.source == "pubmedqa_pool" for r in kept) == 500  # the non-test pool is clean
    # still found after rendering with any template ("A. ...", "(B) ..." option labels, instructions)
    from aloekit.data.templates import render_sft
    med = [r for r in recs if r.source == "medmcqa_dev"]
    chats = [Record("chat", "rendered", r.id, messages=render_sft(r, seed=0)[0]) for r in med]
    kept_chats, _ = decontaminate(chats, index)
    assert len(kept_chats) <= 0.01 * len(chats)
    with pytest.raises(UserError, match="unknown benchmark"):
        build_index(DecontamConfig(benchmarks=["nope"]), str(data_dir))


def test_decontam_cli_audit(tmp_path, data_dir):
    rows = [{"question": r.question, "options": r.options} for r in load("medmcqa_dev", data_dir)[:20]]
    rows += [{"messages": [{"role": "user", "content": "How should a mild burn be cared for at home?"}]}]
    p = tmp_path / "x.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "data", "decontam", "--dataset", str(p), "-b",
                        "medmcqa", "--data-dir", str(data_dir)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["rows"] == 21 and rep["contaminated_rows"] == 20 and rep["contaminated_by_benchmark"] == {"medmcqa": 20}


# ---------------------------------------------------------------- templates and mixture

def test_templates_ten_per_kind_seeded():
    assert all(n >= 10 for n in COUNTS.values())
    r = load("demo_mcq", None)
    used = {render_sft(x, seed=0)[1] for x in r}
    assert len(used) >= 8 and all(t.startswith("mcq/") for t in used)
    assert [render_sft(x, 0) for x in r[:5]] == [render_sft(x, 0) for x in r[:5]]
    assert [render_sft(x, 0)[1] for x in r] != [render_sft(x, 1)[1] for x in r]
    msgs, _ = render_sft(r[0], 0)
    assert msgs[-1]["role"] == "assistant" and r[0].options[r[0].answer] in msgs[-1]["content"]


def test_mixture_weights_general_fraction_and_split():
    recs = [Record("qa", "med", f"m{i}", question="q", answer="a") for i in range(100)]
    recs += [Record("qa", "gen", f"g{i}", question="q", answer="a") for i in range(100)]
    w = apply_weights(recs, {"med": 2.0, "gen": 0.5}, {}, seed=0)
    assert sum(r.source == "med" for r in w) == 200 and sum(r.source == "gen" for r in w) == 50
    mixed, rep = apply_general_fraction(w, {"gen"}, 0.1, seed=0)
    assert rep["general_rows"] == 22 and abs(rep["achieved_general_fraction"] - 0.1) < 0.01
    rows = [{"record_id": r.id} for r in w]
    tr, va = split(rows, 0.2, seed=0)
    assert 0.1 < len(va) / len(rows) < 0.3
    assert not {x["record_id"] for x in tr} & {x["record_id"] for x in va}  # repeats stay on one side


# ---------------------------------------------------------------- end to end

def _cfg(tmp_path, data_dir, out):
    text = f"""
name: test-build
output: {out}
data_dir: {data_dir}
seed: 3
sources:
  - name: headqa_train
    max_rows: 400
  - name: pubmedqa_pool
  - name: medsafetybench_train
  - name: medmcqa_dev
  - name: demo_mcq
  - name: demo_qa
  - name: demo_preference
  - name: demo_safety
    weight: 2
  - name: demo_benign
mixture:
  validation_fraction: 0.1
"""
    p = tmp_path / f"{Path(out).name}.yaml"
    p.write_text(text)
    return load_config(DataConfig, p)


def test_build_end_to_end_is_deterministic(tmp_path, data_dir):
    import datasets
    out1 = run(_cfg(tmp_path, data_dir, tmp_path / "a"))
    out2 = run(_cfg(tmp_path, data_dir, tmp_path / "b"))
    ds = datasets.load_from_disk(str(out1 / "sft"))
    assert set(ds) == {"train", "validation"} and len(ds["train"]) > 1000
    row = ds["train"][0]
    assert row["messages"][-1]["role"] == "assistant" and row["template_id"] and json.loads(row["provenance"])
    pref = datasets.load_from_disk(str(out1 / "preference"))
    assert len(pref["train"]) + len(pref["validation"]) == 30
    card = json.loads((out1 / "card.json").read_text())
    rem = card["decontamination"]["removed_by_benchmark"]["medmcqa"]["medmcqa_dev"]
    assert rem >= 0.99 * card["funnel"]["loaded"]["medmcqa_dev"]
    assert card["funnel"]["after_decontam"].get("medmcqa_dev", 0) == 0
    assert card["funnel"]["after_mixture"]["headqa_train"] == 400
    assert card["funnel"]["after_mixture"]["demo_safety"] == 60
    assert "medmcqa_dev" in (out1 / "card.md").read_text() and (out1 / "plots/length_prompt.png").stat().st_size
    assert card["sources"]["medsafetybench_train"]["license"].startswith("MIT")
    assert sum(card["templates"].values()) == len(ds["train"]) + len(ds["validation"]) + 30
    # same seed -> byte-identical dataset, JSONL and card
    for rel in ["sft_train.jsonl", "sft_validation.jsonl", "preference_train.jsonl", "card.json", "card.md",
                "records.jsonl", "plots/length_prompt.png"]:
        assert filecmp.cmp(out1 / rel, out2 / rel, shallow=False), rel
    cmp = filecmp.dircmp(out1 / "sft", out2 / "sft")
    assert not cmp.diff_files and all(not filecmp.dircmp(out1 / "sft" / s, out2 / "sft" / s).diff_files
                                      for s in ("train", "validation"))


def test_registry_has_hub_specs_for_aloe_collections():
    assert {"medquad", "wiki_medical_terms", "medmcqa_train", "medqa_train"} <= set(REGISTRY)
    assert all(REGISTRY[n].hub_id for n in ("medquad", "medqa_train", "headqa_train"))


def test_datatrove_engine_local_executor(tmp_path):
    pytest.importorskip("datatrove")
    pytest.importorskip("orjson")
    recs = load("demo_qa", None)
    dups = []
    for r in recs[:8]:
        c = Record.from_dict(r.to_dict())
        c.id, c.source = r.id + "~dup", "copies"
        c.answer = r.answer.replace(".", ". Indeed", 1)
        dups.append(c)
    cfg = DedupConfig(engine="datatrove", datatrove_tasks=2)
    kept, rep = dedup(recs + dups, cfg, workdir=tmp_path / "dt")
    assert [r.id for r in kept] == [r.id for r in recs]  # originals kept, the 8 edited copies removed
    assert rep["removed"]["near"] == {"copies": 8}
    kept_ds, _ = dedup(recs + dups, DedupConfig())
    assert [r.id for r in kept_ds] == [r.id for r in kept]  # agrees with the datasketch engine here
