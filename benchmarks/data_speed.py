"""Dedup + decontamination throughput: aloekit's pipeline vs the strongest off-the-shelf configuration.

Ours: exactly what `aloekit data build` runs, `aloekit.data.dedup.dedup` (exact normalised-hash step, then
MinHash LSH near dedup) and `aloekit.data.decontam.build_index` / `decontaminate` (13-gram index).

Peer, in the same process on the same records:
- dedup: datasketch as a user would tune it, with the same exact-hash prefilter (SHA-1 of the same normalised
  text, exact repeats skipped before any MinHash), the same word shingles, `MinHash.bulk` (one prototype whose
  permutations every signature shares, `update_batch` per record) with xxHash (`xxhash.xxh32_intdigest`,
  passed straight as `hashfunc`), the same permutations and seed, and `MinHashLSH.query` then `insert`
  (`check_duplication=False`). The signatures are the same as ours, so the kept sets must be identical
  (checked on every run).
- decontamination: lm-eval's `lm_eval.decontamination.janitor.Janitor` (13-grams), every benchmark test item
  registered as a contaminant, run on the same deduplicated records; a record counts as contaminated when the
  janitor changes it (`clean_python(text) != [text]`, with `minimum_slice_length=0` so that a clean short record
  comes back whole). Its normalisation and short-item handling differ from ours, so the removed sets are
  compared (both / only ours / only janitor), not required to be equal.

Workload: the real rows we have readers for in the shared data folder (HEAD-QA train+dev, MedMCQA dev, PubMedQA,
MMLU dev, MedSafetyBench train, HH-RLHF, BBQ), filled up with synthetic records, each made from a real row by
replacing a random share (2-30 %) of its words with words drawn from the real corpus (at least one in the main
field, so no copy is an exact duplicate by construction) and, for half the MCQ rows, taking the options of
another real row. Exact duplicates (real repeats, or chance collisions) and near duplicates (lightly edited long
rows, BBQ templates) arise as they happen; their counts are reported per size.

Paired runs per size (ours, peer, ours, peer, ...): median and min-max of each, and of the per-run ratio.

Run: .venv/bin/python benchmarks/data_speed.py [--records 100000,1000000] [--runs 3] [--quick]
     [--data-dir DIR]   (default $ALOEKIT_DATA_DIR, else ../shared/data beside the checkout)
--quick: 20,000 records, 1 run, for checking the script (the results file says so).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import hashlib
import io
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_dir, fmt, spread, write  # noqa: E402

from aloekit.data.decontam import BENCHMARKS, DecontamConfig, benchmark_items, build_index, decontaminate  # noqa: E402
from aloekit.data.dedup import DedupConfig, dedup, normalise  # noqa: E402
from aloekit.data.readers import BadRows  # noqa: E402
from aloekit.data.records import Record  # noqa: E402
from aloekit.data.sources import SourceConfig, load_source  # noqa: E402

SOURCES = ["headqa_train", "headqa_dev", "medmcqa_dev", "pubmedqa_pool", "mmlu_medical_dev",
           "medsafetybench_train", "hh_rlhf_harmless"]


# ---------------------------------------------------------------- workload

def real_records(data_dir: str) -> list[Record]:
    bad = BadRows(skip=True)
    recs = [r for s in SOURCES for r in load_source(SourceConfig(name=s), data_dir, bad)]
    bbq = Path(data_dir) / "bbq" / "data"
    for f in sorted(bbq.glob("*.jsonl")):
        sc = SourceConfig(name=f"bbq_{f.stem}", path=str(f), kind="mcq", fields={
            "question": "question", "context": "context", "options": ["ans0", "ans1", "ans2"], "answer": "label",
            "answer_base": 0, "id": "example_id"})
        recs.extend(load_source(sc, data_dir, bad))
    return recs


class Synth:
    """New records from real ones: word substitutions from the corpus vocabulary (by frequency), and for MCQ
    half the time the options of another MCQ row."""

    def __init__(self, real: list[Record], seed: int = 0):
        self.real = real
        self.mcq = [r for r in real if r.kind == "mcq"]
        self.vocab = [w for r in real for w in normalise(r.dedup_text()).split()]  # frequency-weighted
        self.rng = random.Random(seed)

    def edit(self, text: str, p: float, at_least_one: bool) -> str:
        words = text.split()
        if not words:
            return text
        k = min(len(words), max(int(at_least_one), round(p * len(words))))
        rng, vocab = self.rng, self.vocab
        for j in rng.sample(range(len(words)), k):
            old = normalise(words[j])
            new = rng.choice(vocab)
            while new == old:  # a real change after normalisation, so the main field always differs
                new = rng.choice(vocab)
            words[j] = new
        return " ".join(words)

    def make(self, i: int) -> Record:
        rng = self.rng
        r = self.real[rng.randrange(len(self.real))]
        p = rng.uniform(0.02, 0.30)
        ch: dict = {"id": f"{r.id}~{i}"}
        if r.kind in ("mcq", "qa"):
            ch["question"] = self.edit(r.question, p, True)
            if r.context:
                ch["context"] = self.edit(r.context, p, False)
            if r.kind == "mcq":
                opts = r.options if rng.random() < 0.5 else self.mcq[rng.randrange(len(self.mcq))].options
                ch["options"] = {k: self.edit(v, p, False) for k, v in opts.items()}
                if r.answer not in ch["options"]:
                    ch["answer"] = next(iter(ch["options"]), "")
            else:
                ch["answer"] = self.edit(r.answer, p, False)
        elif r.kind == "preference":
            ch["prompt"] = self.edit(r.prompt, p, True)
            ch["chosen"] = self.edit(r.chosen, p, False)
        else:  # chat: the user turns
            ch["messages"] = [{**m, "content": self.edit(m["content"], p, m.get("role") == "user")}
                              for m in r.messages]
        return dataclasses.replace(r, **ch)  # shallow: provenance and tags are shared with the real row


def workloads(data_dir: str, sizes: list[int], seed: int = 0) -> tuple[dict[int, list[Record]], dict]:
    """size -> records: min(all real rows, size/2) real rows + synthetic fill; a smaller size's synthetic
    records are a prefix of a larger one's. Each list is shuffled (first occurrence wins in dedup)."""
    real = real_records(data_dir)
    assert not any("~" in r.id for r in real), "a real id contains '~', the synthetic-id marker"
    random.Random(seed).shuffle(real)
    synth = Synth(real, seed)
    fill = [synth.make(i) for i in range(max(n - min(len(real), n // 2) for n in sizes))]
    out = {}
    for n in sizes:
        k = min(len(real), n // 2)
        recs = real[:k] + fill[:n - k]
        random.Random(seed + n).shuffle(recs)
        out[n] = recs
    return out, {"real_rows_available": len(real), "vocab_tokens": len(synth.vocab)}


# ---------------------------------------------------------------- peer

def peer_dedup(records: list[Record], cfg: DedupConfig, chunk: int = 4096) -> list[Record]:
    """datasketch, tuned: exact-hash prefilter, MinHash.bulk (shared permutations, update_batch), xxHash,
    MinHashLSH query-then-insert."""
    from datasketch import MinHash, MinHashLSH
    from xxhash import xxh32_intdigest
    n = cfg.shingle

    def shingle_set(norm: str):
        w = norm.split()
        if len(w) <= n:
            return [" ".join(w).encode()] if w else []
        return {" ".join(w[i:i + n]).encode() for i in range(len(w) - n + 1)}

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    seen: set[bytes] = set()
    kept: list[Record] = []
    batch: list[tuple[Record, str]] = []

    def flush():
        sigs = MinHash.bulk([shingle_set(norm) for _, norm in batch], num_perm=cfg.num_perm, seed=cfg.seed,
                            hashfunc=xxh32_intdigest)
        for (r, _), m in zip(batch, sigs):
            if lsh.query(m):
                continue
            lsh.insert(len(kept), m, check_duplication=False)
            kept.append(r)
        batch.clear()

    for r in records:
        norm = normalise(r.dedup_text())
        h = hashlib.sha1(norm.encode()).digest()
        if h in seen:
            continue
        seen.add(h)
        batch.append((r, norm))
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    return kept


def janitor_class():
    """lm-eval's Janitor; its import prints a warning and a traceback when the optional C++ helper
    (janitor_util, compiled by hand from lm-eval's source tree, not in the wheel) is absent."""
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        from lm_eval.decontamination import janitor
    return janitor.Janitor, janitor.JANITOR_CPP


def build_janitor(data_dir: str, n: int):
    Janitor, cpp = janitor_class()
    jan = Janitor(ngram_n=n, minimum_slice_length=0)
    # the public register_contaminant/clean print a warning line per call in python mode; call what they
    # dispatch to directly (the C++ path when the helper is built)
    register = jan.register_contaminant_cpp if cpp else jan.register_contaminant_python
    items = too_short = 0
    for b in BENCHMARKS:
        for item in benchmark_items(b, data_dir) or []:
            text = " ".join(item)
            register(text)
            items += 1
            too_short += len(jan.normalize_string(text).split()) < n
    return jan, cpp, {"items": items, "items_under_n_words": too_short}


def janitor_decontaminate(records: list[Record], jan, cpp: bool) -> list[Record]:
    clean = jan.clean_cpp if cpp else jan.clean_python
    kept = []
    for r in records:
        text = r.prompt_text()
        if clean(text) == [text]:
            kept.append(r)
    return kept


# ---------------------------------------------------------------- main

def timed(fn, *a):
    """-> result, wall seconds, CPU seconds of this process (less sensitive to other jobs on the machine)."""
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, time.perf_counter() - t, time.process_time() - c


def run_size(records: list[Record], runs: int, dcfg: DedupConfig, index, jan, cpp: bool) -> dict:
    t = {k: [] for k in ("ours_dedup", "ours_decontam", "peer_dedup", "peer_decontam")}
    cpu = {k: [] for k in t}
    identical, first = [], None
    load = [os.getloadavg()[0]]
    for _ in range(runs):
        (deduped, rep), *tc = timed(dedup, records, dcfg)
        (kept, crep), *td = timed(decontaminate, deduped, index)
        p_deduped, *te = timed(peer_dedup, records, dcfg)
        p_kept, *tf = timed(janitor_decontaminate, p_deduped, jan, cpp)
        for key, (wall, c) in zip(t, (tc, td, te, tf)):
            t[key].append(wall)
            cpu[key].append(c)
        same = [r.id for r in deduped] == [r.id for r in p_deduped]
        identical.append(same)
        if first is None:
            ours_removed = {r.id for r in deduped} - {r.id for r in kept}
            jan_removed = {r.id for r in p_deduped} - {r.id for r in p_kept}
            first = {
                "kept_after_dedup": len(deduped),
                "removed_exact": sum(rep["removed"]["exact"].values()),
                "removed_near": sum(rep["removed"]["near"].values()),
                "decontam_removed": {"ours": len(ours_removed), "janitor": len(jan_removed),
                                     "both": len(ours_removed & jan_removed),
                                     "only_ours": len(ours_removed - jan_removed),
                                     "only_janitor": len(jan_removed - ours_removed)},
                "kept_final": {"ours": len(kept), "peer": len(p_kept)},
            }
        del deduped, kept, p_deduped, p_kept, rep, crep
        load.append(os.getloadavg()[0])
    ours = [a + b for a, b in zip(t["ours_dedup"], t["ours_decontam"])]
    peer = [a + b for a, b in zip(t["peer_dedup"], t["peer_decontam"])]
    steps = {"dedup": (t["ours_dedup"], t["peer_dedup"]), "decontam": (t["ours_decontam"], t["peer_decontam"]),
             "total": (ours, peer)}
    out = {step: {"ours_s": spread(o), "peer_s": spread(p), "ratio_peer_over_ours": spread([y / x for x, y in zip(o, p)])}
           for step, (o, p) in steps.items()}
    c_ours = [a + b for a, b in zip(cpu["ours_dedup"], cpu["ours_decontam"])]
    c_peer = [a + b for a, b in zip(cpu["peer_dedup"], cpu["peer_decontam"])]
    out["cpu_s"] = {k: spread(v) for k, v in cpu.items()} | {
        "ours_total": spread(c_ours), "peer_total": spread(c_peer),
        "ratio_total_peer_over_ours": spread([y / x for x, y in zip(c_ours, c_peer)])}
    n = len(records)
    out["records_per_s"] = {"ours": spread([n / x for x in ours], 0), "peer": spread([n / x for x in peer], 0)}
    out["identical_kept_set_after_dedup"] = all(identical)
    out["load_average_1min_between_runs"] = [round(x, 2) for x in load]
    return {**first, **out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", default="100000,1000000", help="comma-separated sizes")
    ap.add_argument("--runs", type=int, default=3, help="paired runs per size (ours, peer, ours, peer, ...)")
    ap.add_argument("--quick", action="store_true", help="20,000 records, 1 run: a check of the script")
    ap.add_argument("--data-dir", default=str(data_dir()))
    args = ap.parse_args()
    sizes = [20_000] if args.quick else [int(x) for x in args.records.split(",")]
    runs = 1 if args.quick else args.runs
    dcfg, ccfg = DedupConfig(), DecontamConfig()

    t = time.perf_counter()
    work, winfo = workloads(args.data_dir, sizes)
    t_load = time.perf_counter() - t
    (index, status), t_index, _ = timed(build_index, ccfg, args.data_dir)
    (jan, cpp, jinfo), t_jan, _ = timed(build_janitor, args.data_dir, ccfg.n)

    results = {}
    for n in sizes:
        recs = work[n]
        res = run_size(recs, runs, dcfg, index, jan, cpp)
        real_ids = {r.id for r in recs if "~" not in r.id}
        res["real_rows"] = len(real_ids)
        res["synthetic"] = n - len(real_ids)
        reals = [r for r in recs if "~" not in r.id]
        res["removed_exact_real_rows_only"] = len(reals) - len({hashlib.sha1(normalise(r.dedup_text()).encode())
                                                                .digest() for r in reals})
        res["max_rss_gib_so_far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        results[str(n)] = res
        print(f"{n:,} records: ours {fmt(res['total']['ours_s'], 's')}, peer {fmt(res['total']['peer_s'], 's')}, "
              f"identical {res['identical_kept_set_after_dedup']}", flush=True)

    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=dcfg.threshold, num_perm=dcfg.num_perm)
    peer_cfg = {
        "dedup": f"datasketch: SHA-1 of normalised text as exact prefilter; MinHash.bulk(num_perm={dcfg.num_perm}, "
                 f"seed={dcfg.seed}, hashfunc=xxhash.xxh32_intdigest) in chunks of 4096 (update_batch per record, "
                 f"shared permutations, affine32 scheme, uint32 signatures); MinHashLSH(threshold={dcfg.threshold}, "
                 f"num_perm={dcfg.num_perm}) -> b={lsh.b} bands x r={lsh.r} rows; query then insert "
                 "(check_duplication=False)",
        "decontam": f"lm-eval Janitor(ngram_n={ccfg.n}, minimum_slice_length=0), "
                    f"{'C++ janitor_util' if cpp else 'python mode (janitor_util C++ helper not built)'}; each "
                    "benchmark item's segments joined and registered; record removed when clean(text) != [text]",
    }
    payload = {
        "quick": args.quick, "sizes": sizes, "runs": runs, "dedup": dcfg.model_dump(), "decontam_n": ccfg.n,
        "benchmarks": status, "peer": peer_cfg, "janitor": jinfo, "workload": winfo,
        "threads": {"python": 1, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "signature_dtype": "uint32 (datasketch affine32)",
        "load_s": round(t_load, 2), "index_build_s": {"ours": round(t_index, 2), "janitor": round(t_jan, 2)},
        "results": results,
    }

    rows, notes = [], []
    for n in sizes:
        r = results[str(n)]
        for step in ("dedup", "decontam", "total"):
            s = r[step]
            rows.append(f"| {n:,} | {step} | {fmt(s['ours_s'])} | {fmt(s['peer_s'])} | "
                        f"{fmt(s['ratio_peer_over_ours'], 'x')} |")
        c = r["cpu_s"]
        rows.append(f"| {n:,} | total, CPU s | {fmt(c['ours_total'])} | {fmt(c['peer_total'])} | "
                    f"{fmt(c['ratio_total_peer_over_ours'], 'x')} |")
        rows.append(f"| {n:,} | records/s | {fmt(r['records_per_s']['ours'])} | {fmt(r['records_per_s']['peer'])} | |")
        dr = r["decontam_removed"]
        notes.append(
            f"- **{n:,}** records ({r['real_rows']:,} real + {r['synthetic']:,} synthetic): exact duplicates "
            f"{r['removed_exact']:,} ({r['removed_exact_real_rows_only']:,} of them among the real rows alone), "
            f"near duplicates {r['removed_near']:,}, {r['kept_after_dedup']:,} kept. Identical kept set after dedup "
            f"(ours vs datasketch peer, every run): **{r['identical_kept_set_after_dedup']}**. Decontamination "
            f"removed {dr['ours']:,} (ours) vs {dr['janitor']:,} (janitor): {dr['both']:,} by both, "
            f"{dr['only_ours']:,} only ours, {dr['only_janitor']:,} only janitor. Max RSS so far "
            f"{r['max_rss_gib_so_far']} GiB; 1-min load average between runs "
            f"{', '.join(str(x) for x in r['load_average_1min_between_runs'])}.")
    quick = ("**QUICK RUN (--quick): 20,000 records, 1 run; a check of the script, not a result.**\n\n"
             if args.quick else "")
    md = f"""# Data pipeline: dedup + decontamination throughput

{quick}Ours: `aloekit.data.dedup.dedup` + `aloekit.data.decontam.decontaminate` (what `aloekit data build` runs):
exact normalised-hash step, MinHash LSH threshold {dcfg.threshold}, {dcfg.num_perm} permutations, {dcfg.shingle}-word
shingles; {ccfg.n}-gram decontamination against {sum(s.startswith('checked') for s in status.values())} local
benchmark test splits.

Peer (same process, same records):
- dedup: {peer_cfg['dedup']}.
- decontamination: {peer_cfg['decontam']}.

{runs} paired run(s) per size (ours, peer, ...); wall seconds as median (min–max); ratio = peer / ours per run;
"total, CPU s" is the process CPU time of the same runs (less sensitive to other jobs on the machine).

| records | step | aloekit (s) | peer (s) | peer / aloekit |
|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(notes)}

Workload: real rows (at most half of each size) from the shared data, filled with synthetic records (a real row
with 2–30 % of its words replaced by corpus words, at least one in the main field; half the MCQ rows take another
row's options): no exact duplicate is made on purpose, near duplicates occur where few words of a long row were
replaced. The same synthetic stream is used for every size (a smaller size's is a prefix).
The janitor's removed set differs by design: it lower-cases and deletes ASCII punctuation (ours maps every
non-alphanumeric character to a space and drops one-character words), so it cannot match across option labels or
punctuation-only tokens, and it has no rule for benchmark items under {ccfg.n} words
({jinfo['items_under_n_words']:,} of {jinfo['items']:,} registered items), which ours indexes whole.
Index build (once, not in the timings): ours {t_index:.1f}s, janitor {t_jan:.1f}s. Workload build {t_load:.1f}s.
Single Python thread on both sides; signatures uint32. Machine info, git sha, date and load average are in
data_speed.json.
"""
    write("data_speed", payload, md)
    if not all(r["identical_kept_set_after_dedup"] for r in results.values()):
        sys.exit("kept sets differ")


if __name__ == "__main__":
    main()
