"""The GPU paths of aloekit, run once on a lent GPU machine (the device tool), as the real CLI commands.

The default model cannot travel (98 MB; 64 MiB per call), so the check builds random weights in SmolLM2-135M's
exact architecture with its real tokenizer and chat template: speeds are those of the default model, accuracies are
meaningless (a random model answers at chance and never stops before the token cap). Same for the embedder.

    .venv/bin/python scripts/gpu/gpu_bundle.py             # here: pack wheels, configs, data into .gpu/
    # device: python3 scripts/gpu/gpu_check.py --out $OUT   (PYTHONPATH=.gpusite:src, wheels installed first)
    .venv/bin/python scripts/gpu/gpu_check.py --report F [F ...]  # here: returned gpu_check.json files -> results

Each step is one `aloekit` command with a time limit; a failing step is recorded and the next one runs.
See scripts/gpu/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
G = Path(os.environ.get("ALOEKIT_GPU_BUNDLE") or REPO / ".gpu")
W = REPO / ".gpuwork"


def sh(cmd: list[str], log, limit: float) -> tuple[int, float, str]:
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(limit, 5))
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"timeout after {limit:.0f}s\n" + (e.stdout or b"").decode(errors="replace")[-3000:]
    wall = time.time() - t
    log.write(f"\n$ {' '.join(cmd)}\n[rc={rc} wall={wall:.1f}s]\n{text[-6000:]}\n")
    log.flush()
    return rc, round(wall, 2), text[-1500:]


def aloekit(*args: str) -> list[str]:
    return [sys.executable, "-m", "aloekit.cli", *args]


def make_models(info: dict) -> tuple[str, str]:
    """Random weights in the default model's (and the default embedder's) architecture."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel
    model = W / "smollm2-random"
    if not (model / "model.safetensors").is_file():
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(G / "smollm2"), dtype=torch.bfloat16)
        m.save_pretrained(model)
        AutoTokenizer.from_pretrained(G / "smollm2").save_pretrained(model)
        for f in ("chat_template.jinja", "generation_config.json"):
            shutil.copy(G / "smollm2" / f, model / f)
    emb = W / "minilm-random"
    if (G / "minilm").is_dir() and not (emb / "model.safetensors").is_file():
        shutil.copytree(G / "minilm", emb, dirs_exist_ok=True)
        torch.manual_seed(0)
        BertModel(BertConfig.from_pretrained(G / "minilm")).save_pretrained(emb)
    info["params"] = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
    return str(model), str(emb)


def make_db(emb: str) -> str:
    """The demo run's real example records, re-embedded with the (random) embedder the check can carry."""
    import faiss
    import numpy as np

    from aloekit.medprompt.db import Embedder, embed_text
    db = W / "db"
    db.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in (G / "db" / "records.jsonl").read_text().splitlines() if x.strip()]
    vecs = Embedder(emb).encode([embed_text(r["question"], r["options"]) for r in rows])
    shutil.copy(G / "db" / "records.jsonl", db / "records.jsonl")
    np.save(db / "embeddings.npy", vecs)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    faiss.write_index(index, str(db / "index.faiss"))
    meta = json.loads((G / "db" / "db.json").read_text())
    meta.update(embedding_model=emb, dim=int(vecs.shape[1]))
    (db / "db.json").write_text(json.dumps(meta))
    return str(db)


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def eval_summary(out: Path, task: str) -> dict:
    r = read(out / "results.json")
    if not r:
        return {}
    res = r["results"][task]
    t = r.get("timings_s", {})
    scoring = (t.get("scoring") or {}).get(task)
    preds = [json.loads(x)["pred"] for x in (out / f"samples_{task}.jsonl").read_text().splitlines() if x.strip()]
    n = len(preds)
    return {"n": n, "acc": res.get("acc,none"), "acc_norm": res.get("acc_norm,none"), "timings_s": t,
            "scoring_q_per_s": round(n / scoring, 1) if n and scoring else None, "preds": preds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_out"))
    ap.add_argument("--budget-s", type=float, default=500)
    ap.add_argument("--only", default="", help="comma-separated step names")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to try the script on a CPU first")
    ap.add_argument("--report", nargs="+", help="returned gpu_check.json files -> benchmarks/results/gpu_check.*")
    args = ap.parse_args()
    if args.report:
        return report([Path(p) for p in args.report])
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    W.mkdir(exist_ok=True)
    log = open(out / "gpu_check.log", "a")
    result_file = out / "gpu_check.json"
    res: dict = read(result_file) or {"steps": {}}
    import torch
    res["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for mod in ("transformers", "trl", "peft", "accelerate", "datasets", "sentence_transformers", "bitsandbytes",
                "vllm"):
        try:
            res["env"][mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - a missing optional package is a finding, not a failure
            res["env"][mod] = f"missing ({type(e).__name__})"
    model, emb = make_models(res["env"])
    data = str(G / "data")
    only = set(filter(None, args.only.split(",")))

    def n(x: int, small: int = 4) -> str:
        return str(small if args.smoke else x)

    def left() -> float:
        return args.budget_s - (time.time() - t0)

    def step(name: str, cmd: list[str], limit: float, collect=None) -> None:
        if only and name not in only:
            return
        if left() < 15:
            res["steps"][name] = {"rc": None, "skipped": "out of time"}
            return
        rc, wall, tail = sh(cmd, log, min(limit, left() - 5))
        entry = {"rc": rc, "wall_s": wall}
        if rc != 0:
            entry["tail"] = tail
        if collect:
            try:
                entry.update(collect())
            except Exception as e:  # noqa: BLE001
                entry["collect_error"] = f"{type(e).__name__}: {e}"
        res["steps"][name] = entry
        result_file.write_text(json.dumps(res, indent=1))
        print(f"{name}: rc={rc} {wall:.1f}s", flush=True)

    ev = ["eval", "-m", model, "--data-dir", data]
    # 1. evaluation: speed, and batch-size invariance of the predictions under bf16 CUDA kernels
    step("eval_loglik_medmcqa_500", aloekit(*ev, "-t", "medmcqa", "--scoring", "loglik", "--limit", n(500),
                                            "--batch-size", "32", "-o", str(W / "ev_ll")),
         90, lambda: eval_summary(W / "ev_ll", "medmcqa"))
    for bs in (1, 8, 32):
        step(f"eval_loglik_medmcqa_200_bs{bs}", aloekit(*ev, "-t", "medmcqa", "--limit", n(200, 12), "--batch-size",
                                                        str(bs), "-o", str(W / f"ev_bs{bs}")),
             90, lambda bs=bs: eval_summary(W / f"ev_bs{bs}", "medmcqa"))
    step("eval_letter_medmcqa_500", aloekit(*ev, "-t", "medmcqa", "--scoring", "letter", "--limit", n(500),
                                            "--batch-size", "32", "-o", str(W / "ev_letter")),
         60, lambda: eval_summary(W / "ev_letter", "medmcqa"))
    step("eval_loglik_pubmedqa_500", aloekit(*ev, "-t", "pubmedqa", "--limit", n(500), "--batch-size", "16", "-o", str(W / "ev_pqa")),
         90, lambda: eval_summary(W / "ev_pqa", "pubmedqa"))
    # 2. a GPU-only backend that is not installed: one-line error, exit 2
    step("vllm_backend_missing", aloekit("eval", "-m", model, "-b", "vllm", "-t", "medmcqa", "--limit", "2",
                                         "--data-dir", data, "-o", str(W / "ev_vllm")), 60)
    # 3. medprompt strategies on the hf backend (CUDA): tokens/s
    db = make_db(emb) if not only or "medprompt_headqa_64" in only else ""

    def mp_collect(folder: str) -> dict:
        r = read(W / folder / "results.json")
        keep = ("n", "members_per_question", "prompt_tokens_per_question", "generated_tokens_per_question",
                "seconds_per_question", "wall_seconds", "early_stopped", "accuracy")
        strat = {k: {f: v.get(f) for f in keep} for k, v in r.get("strategies", {}).items()}
        for v in strat.values():
            if v.get("wall_seconds"):
                v["generated_tokens_per_s"] = round(v["generated_tokens_per_question"] * v["n"] / v["wall_seconds"], 1)
        return {"strategies": strat}
    step("medprompt_headqa_64", aloekit("medprompt", "eval", "-t", "headqa", "-s", "zeroshot,cot,sc-cot,medprompt",
                                        "-m", model, "--db", db, "--limit", n(64), "--members", "5", "--shots", "3",
                                        "--max-new-tokens", n(128, 8), "--batch-size", "32", "--data-dir", data,
                                        "-o", str(W / "mp")), 320, lambda: mp_collect("mp"))
    # 3b. the same on the vLLM backend (prefix caching, n>1 from one prompt), where the machine has vLLM
    if str(res["env"].get("vllm", "missing")).startswith("missing"):
        if not only or "medprompt_vllm_headqa_64" in only:
            res["steps"]["medprompt_vllm_headqa_64"] = {"rc": None, "skipped": "vllm is not installed here"}
    else:
        step("medprompt_vllm_headqa_64", aloekit("medprompt", "eval", "-b", "vllm", "-t", "headqa",
                                                 "-s", "cot,sc-cot,medprompt", "-m", model, "--db", db or make_db(emb),
                                                 "--limit", n(64), "--members", "5", "--shots", "3",
                                                 "--max-new-tokens", n(128, 8), "--batch-size", "64",
                                                 "--data-dir", data, "-o", str(W / "mp_vllm")), 240,
             lambda: mp_collect("mp_vllm"))
    # 4. training on CUDA: LoRA SFT, full SFT under accelerate + FSDP, two DPO stages with/without precomputed refs
    import yaml

    def cfg(name: str, body: dict) -> str:
        p = W / f"{name}.yaml"
        p.write_text(yaml.safe_dump(body))
        return str(p)

    def saved(folder: Path) -> dict:
        """The final folder is a plain, full model (no 4-bit weights, no sharded leftovers) that generates."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda()
        tok = AutoTokenizer.from_pretrained(folder)
        ids = tok("The normal range of serum sodium is", return_tensors="pt").to("cuda")
        gen = m.generate(**ids, max_new_tokens=8, do_sample=False)
        return {"saved_params": sum(p.numel() for p in m.parameters()),
                "saved_quantized": getattr(m.config, "quantization_config", None) is not None,
                "saved_generates_tokens": int(gen.shape[1] - ids["input_ids"].shape[1])}

    def metrics(path: Path) -> dict:
        return {str(p.relative_to(path)): read(p) for p in sorted(path.rglob("metrics.json"))}

    sft = {"model": model, "dataset": str(G / "datastage"), "method": "lora", "max_length": 512, "packing": True,
           "save_steps": 20, "optim": {"lr": 2e-4, "max_steps": int(n(40, 2)), "batch_size": 8}, "seed": 0}
    step("sft_lora", aloekit("train", "sft", cfg("sft_lora", {**sft, "output": str(W / "sft_lora")})), 120,
         lambda: metrics(W / "sft_lora"))
    full = {**sft, "method": "full", "optim": {"lr": 2e-5, "max_steps": int(n(10, 2)), "batch_size": 8}, "output": str(W / "sft_fsdp")}
    step("sft_full_fsdp_accelerate", [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                      str(REPO / "configs/accelerate/fsdp.yaml"), "--num_processes", "1",
                                      "-m", "aloekit.cli", "train", "sft", cfg("sft_fsdp", full)], 120,
         lambda: {**metrics(W / "sft_fsdp"), **saved(W / "sft_fsdp" / "model")})
    lora_fsdp = {**sft, "optim": {"lr": 2e-4, "max_steps": int(n(10, 2)), "batch_size": 8},
                 "output": str(W / "sft_lora_fsdp")}
    step("sft_lora_fsdp_accelerate", [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                      str(REPO / "configs/accelerate/fsdp.yaml"), "--num_processes", "1",
                                      "-m", "aloekit.cli", "train", "sft", cfg("sft_lora_fsdp", lora_fsdp)], 120,
         lambda: {**metrics(W / "sft_lora_fsdp"), **saved(W / "sft_lora_fsdp" / "model")})
    for pre in (False, True):
        dpo = {"model": model, "method": "full", "max_length": 384, "save_steps": 50, "precompute_ref_log_probs": pre,
               "output": str(W / f"dpo_pre{int(pre)}"), "seed": 0,
               "stages": [{"name": "preferences", "dataset": str(G / "datastage"), "beta": 0.1,
                           "optim": {"lr": 5e-6, "max_steps": int(n(10, 2)), "batch_size": 4}},
                          {"name": "safety", "dataset": str(G / "redteam"), "beta": 0.1,
                           "optim": {"lr": 1e-6, "max_steps": int(n(10, 2)), "batch_size": 4}}]}
        step(f"dpo_two_stages_precompute_{pre}", aloekit("train", "dpo", cfg(f"dpo{int(pre)}", dpo)), 150,
             lambda pre=pre: metrics(W / f"dpo_pre{int(pre)}"))
    # 5. QLoRA (GPU only; bitsandbytes travels in a second call)
    step("sft_qlora", aloekit("train", "sft", cfg("sft_qlora", {**sft, "method": "qlora", "output": str(W / "sft_qlora"),
                                                              "optim": {"lr": 2e-4, "max_steps": int(n(20, 2)), "batch_size": 8}})),
         120, lambda: {**metrics(W / "sft_qlora"), **saved(W / "sft_qlora" / "model")})
    dq = {"model": model, "method": "qlora", "max_length": 384, "save_steps": 50, "output": str(W / "dpo_qlora"),
          "seed": 0, "stages": [{"name": "preferences", "dataset": str(G / "datastage"), "beta": 0.1,
                                 "optim": {"lr": 5e-5, "max_steps": int(n(10, 2)), "batch_size": 4}}]}
    step("dpo_qlora", aloekit("train", "dpo", cfg("dpo_qlora", dq)), 120,
         lambda: {**metrics(W / "dpo_qlora"), **saved(W / "dpo_qlora" / "stage1-preferences" / "model")})
    res["wall_s"] = round(time.time() - t0, 1)
    result_file.write_text(json.dumps(res, indent=1))


def report(paths: list[Path]) -> None:
    """Merge the returned gpu_check.json files (later calls win per step) into benchmarks/results/gpu_check.*"""
    # results stay with the benchmarks' (benchmarks/results/), whose path benchmarks/_common.py owns
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import RESULTS
    res: dict = {"env": {}, "steps": {}}
    for p in paths:
        r = json.loads(p.read_text())
        for k, v in r.get("env", {}).items():  # a later call without the training bundle lacks bitsandbytes
            if not (str(v).startswith("missing") and k in res["env"]):
                res["env"][k] = v
        res["steps"].update(r["steps"])
    st = res["steps"]
    bs = {b: st.get(f"eval_loglik_medmcqa_200_bs{b}", {}) for b in (1, 8, 32)}
    if all("preds" in v for v in bs.values()):
        res["batch_invariance"] = {
            "questions": len(bs[1]["preds"]),
            "same_preds_bs1_bs8": sum(a == b for a, b in zip(bs[1]["preds"], bs[8]["preds"])),
            "same_preds_bs1_bs32": sum(a == b for a, b in zip(bs[1]["preds"], bs[32]["preds"])),
            "same_metrics": len({(v["acc"], v["acc_norm"]) for v in bs.values()}) == 1}
    for v in st.values():
        v.pop("preds", None)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
    e = res["env"]
    lines = [f"# GPU check: {e.get('gpu')} (torch {e.get('torch')}, CUDA {e.get('cuda')})", "",
             "`scripts/gpu/gpu_check.py` on a lent GPU machine: the real `aloekit` commands, on random weights in "
             "SmolLM2-135M's architecture with its real tokenizer (the 98 MB model cannot travel to that machine), so "
             "speeds are the default model's and accuracies are meaningless. "
             f"transformers {e.get('transformers')}, trl {e.get('trl')}, peft {e.get('peft')}, accelerate "
             f"{e.get('accelerate')}, bitsandbytes {e.get('bitsandbytes')}; vLLM: {e.get('vllm')}.", "",
             "| step | exit | wall s | result |", "|---|---:|---:|---|"]
    for name, v in st.items():
        out = ""
        if "scoring_q_per_s" in v:
            out = f"{v['n']} questions, scoring {v['scoring_q_per_s']} q/s (model load {v['timings_s'].get('load_model')} s)"
        elif "strategies" in v:
            out = "; ".join(f"{k}: {x['generated_tokens_per_question']} gen tok/q, {x.get('generated_tokens_per_s')} "
                            f"tok/s" for k, x in v["strategies"].items())
        else:
            mets = [m for k, m in v.items() if k.endswith("metrics.json") and isinstance(m, dict)]
            for m in mets[:1]:
                if "tokens_per_s" in m:
                    out = (f"{m['steps']} steps, {m['tokens_per_s']} tok/s, val loss {m['eval_loss_before']:.3f} -> "
                           f"{m['eval_loss_after']:.3f}")
                elif "stages" in m:
                    out = "; ".join(f"{s_['stage']}: {s_['steps']} steps, {s_['seconds_per_step']} s/step, val reward "
                                    f"acc {s_['after'].get('rewards/accuracies')}" for s_ in m["stages"])
            if "saved_params" in v:
                out += (f"; saved folder: {v['saved_params'] / 1e6:.1f}M params, quantized={v['saved_quantized']}, "
                        f"generates {v['saved_generates_tokens']} tokens")
            if v.get("rc") == 2 and not out:
                out = "one-line error, exit 2 (expected: vLLM is not installed there)"
        lines.append(f"| {name} | {v.get('rc')} | {v.get('wall_s')} | {out} |")
    if "batch_invariance" in res:
        b = res["batch_invariance"]
        lines += ["", f"Batch sizes 1 / 8 / 32 on CUDA bf16: {b['same_preds_bs1_bs8']}/{b['questions']} and "
                      f"{b['same_preds_bs1_bs32']}/{b['questions']} identical predictions; identical metrics: "
                      f"{b['same_metrics']}."]
    lines += ["", "Notes:",
              "- The eval steps and medprompt_headqa_64 were rerun after the scoring and sampling changes of the fourth "
              "session (flattened scoring batches; each medprompt member samples from its own seed, with per-row Gumbel "
              "noise drawn on the GPU); the other steps are from the first runs. The rerun machine was slower across "
              "the board (model loads 1.2-1.3x, the unchanged greedy zeroshot generation 1.5x slower than in the first "
              "run), so speeds are not comparable between the runs.",
              "- vLLM is not in the device image, and it cannot travel there: its wheel is 320 MB (0.33.0) and pins "
              "torch 2.13 (the image has 2.11+cu130), while one call carries at most 64 MiB. The vLLM backend stays "
              "unrun.",
              "- Found by this check and fixed before the numbers above: under accelerate's FSDP2, the validation pass "
              "before training failed (FSDP2 prepares model and optimizer together; it now runs at the start of "
              "train()), the final save now gathers the full weights from the shards, and `method: qlora` now loads a "
              "4-bit NF4 base (bitsandbytes) and merges the adapter into a full-precision copy of the base."]
    md = "\n".join(lines) + "\n"
    (RESULTS / "gpu_check.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
