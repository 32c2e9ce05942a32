"""Safety DPO on the held-out safety split, once: configs/safety_dpo.yaml, before (base) vs after.

    ALOEKIT_DATA_DIR=../shared/data python benchmarks/safety_holdout.py                 # runs the recipe (~1.5 h)
    ALOEKIT_DATA_DIR=../shared/data python benchmarks/safety_holdout.py --run-dir DIR   # resume / read that run

The recipe red-teams MedSafetyBench train + AdvBench into safety pairs, trains one DPO stage, and red-teams base and
trained model on the split frozen in src/aloekit/resources/safety_holdout/ (200 HarmBench test + SimpleSafetyTests
requests x 19 attacks, 60 safe medical prompts), which no training, tuning or selection ever read. `aloekit run` skips
finished stages, so `--run-dir` on a finished run only reads it. The marker judge's ASR is printed next to what it
implies once the judge's measured error is taken out (benchmarks/safety_judges.py: its TPR and FPR on 260
hand-labelled answers of the base model, at their 95% Wilson bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, data_dir, write
from safety_judges import asr_interval, corrected_asr, load_calibration, run_judges

RECIPE = REPO / "configs" / "safety_dpo.yaml"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def stage(manifest: dict, name: str) -> dict:
    return next(s for s in manifest["stages"] if s["name"] == name)


def summary(run: Path, manifest: dict, name: str) -> dict:
    return json.loads((run / stage(manifest, name)["dir"] / "safety" / "summary.json").read_text())


def markdown(p: dict) -> str:
    b, a = p["before"], p["after"]
    lines = [
        "# Safety DPO on the held-out safety split", "",
        f"[configs/safety_dpo.yaml](../../configs/safety_dpo.yaml) on SmolLM2-135M-Instruct (bf16, CPU, greedy, "
        f"{b['max_new_tokens']} new tokens): red team of MedSafetyBench train + AdvBench -> {p['pairs']['n']} safety and contrast "
        f"pairs {p['pairs'].get('chosen_sources')} -> one full DPO stage. Evaluated once on the split frozen on 2026-12-05 "
        "([docs/redteam.md](../../docs/redteam.md#held-out-safety-split)): requests no training, tuning or selection "
        "read. Judge: refusal markers (an upper bound on ASR; corrected below).", "",
        "| metric | base | after safety DPO | change, 95% paired interval | gate |",
        "|---|---:|---:|---|---|"]
    for g in p["gates"]:
        lines.append(f"| {g['metric']} | {pct(g['reference'])} | {pct(g['value'])} | "
                     f"{100 * g['estimate']:+.1f} pts [{100 * g['interval'][0]:+.1f}, {100 * g['interval'][1]:+.1f}]"
                     f" (n={g['n']}) | {g['rule']}: **{g['decision']}** |")
    lines += [f"| refusal rate under attack | {pct(b['attacks']['refusal_rate'])} | "
              f"{pct(a['attacks']['refusal_rate'])} | | |",
              f"| empty / degenerate answers under attack | {pct(b['attacks']['unclear_rate'])} | "
              f"{pct(a['attacks']['unclear_rate'])} | | |"]
    if b.get("medsafety_refusal"):
        lines.append(f"| MedSafetyBench test refusal, no attack ({b['medsafety_refusal']['n']}; not held out) | "
                     f"{pct(b['medsafety_refusal']['refusal_rate'])} | {pct(a['medsafety_refusal']['refusal_rate'])} "
                     "| | |")
    rel = (a["attacks"]["asr"] - b["attacks"]["asr"]) / b["attacks"]["asr"] if b["attacks"]["asr"] else None
    lines += ["", f"Relative ASR change: {pct(rel)}. Safe medical prompts = the 60 written for the split "
              "(over-refusal = refused).", "",
              "## The marker ASR with its judge's measured error", "",
              f"On {p['calibration']['n']} hand-labelled answers of the base model the marker judge has TPR "
              f"{pct(p['calibration']['tpr'])} and FPR {pct(p['calibration']['fpr'])} "
              "([safety_judges.md](safety_judges.md)). The implied true ASR is (m - FPR) / (TPR - FPR); the range "
              "takes TPR and FPR anywhere in their 95% Wilson intervals. It assumes answers like the calibration "
              "set's (base model, written attacks); the trained model refuses more and the HarmBench templates are "
              "not in that set, so read it as a rough bound, not a measurement.", "",
              "| model | marker ASR | implied true ASR | range |", "|---|---:|---:|---|"]
    for name, c in p["corrected"].items():
        rng = "n/a" if c["range"] is None else f"{pct(c['range'][0])} – {pct(c['range'][1])}"
        lines.append(f"| {name} | {pct(c['reported'])} | {pct(c['implied'])} | {rng} |")
    lines += ["", "## Per source and attack family (marker ASR)", "",
              "| group | n | base | after |", "|---|---:|---:|---:|"]
    for kind in ("per_source", "per_family"):
        for k, v in b["attacks"][kind].items():
            lines.append(f"| {k} | {v['n']} | {pct(v['rate'])} | {pct(a['attacks'][kind][k]['rate'])} |")
    lines += ["", "## Training", "",
              "| | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in p["dpo_metrics"].items()]
    lines += ["", f"Stage times (s): {p['stage_seconds']}. Run started {p['run_started']}, finished "
              f"{p['run_finished']}; recipe exit code {p['exit_code']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=None, help="run folder (default: runs/safety_holdout)")
    args = ap.parse_args()
    root = data_dir()
    run = Path(args.run_dir or REPO / "runs" / "safety_holdout").resolve()
    t0 = time.perf_counter()
    # a failed gate stops the run with a nonzero exit but is a result here, not an error
    proc = subprocess.run([sys.executable, "-m", "aloekit.cli", "run", str(RECIPE), "--output", str(run)],
                          env={**os.environ, "ALOEKIT_DATA_DIR": str(root)})
    manifest = json.loads((run / "manifest.json").read_text())
    if manifest["status"] not in ("done", "gate_failed"):
        raise SystemExit(f"the recipe did not finish (exit {proc.returncode}, status {manifest['status']})")
    before, after = summary(run, manifest, "eval:base"), summary(run, manifest, "eval:safety_dpo")

    rows = load_calibration(root)
    m = run_judges(rows, ["marker"])["marker"]["harmful_compliance_on_harmful_requests"]
    tpr, fpr = m["tp"] / (m["tp"] + m["fn"]), m["fp"] / (m["fp"] + m["tn"])
    corrected = {name: {"reported": s["attacks"]["asr"], "implied": corrected_asr(s["attacks"]["asr"], tpr, fpr),
                        "range": asr_interval(s["attacks"]["asr"], m)}
                 for name, s in (("base", before), ("after safety DPO", after))}
    payload = {"recipe": str(RECIPE.relative_to(REPO)), "run_dir": str(run), "exit_code": proc.returncode,
               "status": manifest["status"], "run_started": manifest.get("started"),
               "run_finished": manifest.get("finished"), "gates": manifest.get("gates", []),
               "pairs": json.loads((run / stage(manifest, "redteam")["dir"] / "summary.json").read_text())["pairs"],
               "dpo_metrics": stage(manifest, "safety_dpo")["metrics"],
               "stage_seconds": {s["name"]: s["seconds"] for s in manifest["stages"]},
               "before": before, "after": after,
               "calibration": {"n": m["n"], "tpr": tpr, "fpr": fpr, **{k: m[k] for k in ("tp", "fp", "fn", "tn")}},
               "corrected": corrected, "wall_s": round(time.perf_counter() - t0, 1)}
    write("safety_holdout", payload, markdown(payload))


if __name__ == "__main__":
    main()
