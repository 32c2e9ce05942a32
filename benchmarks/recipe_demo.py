"""The demo recipe end to end on the default model: wall time per stage, and kill -9 + resume on the real model.

    python benchmarks/recipe_demo.py                 # fresh run of configs/demo.yaml, timed
    python benchmarks/recipe_demo.py --kill          # + a second run killed (kill -9) in sft and in eval:sft,
                                                     #   resumed, compared with the first (metrics, sft weights)

Writes results/recipe_demo.{json,md}. The peer for the wall time is the issue's goal (15 minutes on 2 cores);
the peer for resume is the uninterrupted run of the same recipe in the same process run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, write

CLI = [sys.executable, "-m", "aloekit.cli", "-q"]
GOAL_S = 15 * 60


def load(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def run_recipe(recipe: Path, out: Path, *extra: str) -> tuple[int, float]:
    t = time.time()
    r = subprocess.run([*CLI, "run", str(recipe), "-o", str(out), *extra], cwd=REPO)
    return r.returncode, time.time() - t


def kill_when(recipe: Path, out: Path, ready, what: str) -> float:
    t = time.time()
    proc = subprocess.Popen([*CLI, "run", str(recipe), "-o", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before {what}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"killed during {what} after {time.time() - t:.0f}s", flush=True)
    return time.time() - t


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_recipe_demo"))
    ap.add_argument("--kill", action="store_true", help="also the kill -9 + resume comparison")
    ap.add_argument("--existing", action="store_true",
                    help="report on a finished run already in --out (wall time from its manifest) instead of running")
    args = ap.parse_args()
    recipe, out = Path(args.recipe), Path(args.out)
    load_before = os.getloadavg()
    if args.existing:
        m = load(out)
        from datetime import datetime
        wall = (datetime.fromisoformat(m["finished"]) - datetime.fromisoformat(m["started"])).total_seconds()
        rc = 0 if m["status"] == "done" else 1
    else:
        shutil.rmtree(out, ignore_errors=True)
        rc, wall = run_recipe(recipe, out)
        m = load(out)
    res: dict = {"recipe": str(recipe.relative_to(REPO)), "returncode": rc, "status": m["status"],
                 "wall_s": round(wall, 1), "goal_s": GOAL_S, "goal_met": rc == 0 and wall <= GOAL_S,
                 "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()], "data_dir": m["data_dir"],
                 "stages": [{k: s[k] for k in ("name", "kind", "status", "seconds")} for s in m["stages"]],
                 "gates": m["gates"], "final_metrics": next((s["metrics"] for s in reversed(m["stages"])
                                                            if s["kind"] == "eval"), {})}
    res["report_written"] = (out / "report.html").is_file() and (out / "model_card" / "README.md").is_file()

    if args.kill:
        cut = out.with_name(out.name + "_killed")
        shutil.rmtree(cut, ignore_errors=True)
        kill_when(recipe, cut, lambda: any(cut.glob("stages/sft-*/checkpoints/checkpoint-*/trainer_state.json")),
                  "sft")
        kill_when(recipe, cut, lambda: any(cut.glob("stages/eval-sft-*/benchmarks")) or
                  any(cut.glob("stages/eval-sft-*/safety")), "eval:sft")
        rc2, wall2 = run_recipe(recipe, cut)
        a, b = load(out), load(cut)
        evals = lambda m: {s["name"]: s["metrics"] for s in m["stages"] if s["kind"] == "eval"}  # noqa: E731
        same_metrics = evals(a) == evals(b)
        sft_a = next(out.glob("stages/sft-*/model"))
        sft_b = next(cut.glob("stages/sft-*/model"))
        resumed = json.loads((sft_b.parent / "train_run.json").read_text())["metrics"].get("resumed_from")
        res["kill9"] = {"returncode": rc2, "status": b["status"], "resume_wall_s": round(wall2, 1),
                        "sft_resumed_from": resumed, "sft_weights_identical": folder_hash(sft_a) == folder_hash(sft_b),
                        "all_eval_metrics_identical": same_metrics,
                        "same_keys": [s["key"] for s in a["stages"]] == [s["key"] for s in b["stages"]]}

    lines = ["# Demo recipe (`aloekit run configs/demo.yaml`) on the default model", "",
             f"{res['cpus']} CPU cores; load average before {res['loadavg_before']}, after {res['loadavg_after']}; "
             f"data dir: {res['data_dir'] or 'none (bundled sets only)'}.", "",
             f"**Wall time {res['wall_s'] / 60:.1f} min** (goal <= {GOAL_S // 60} min: "
             f"{'met' if res['goal_met'] else 'NOT met'}); status {res['status']}; report and card written: "
             f"{res['report_written']}.", "", "| stage | kind | status | seconds |", "|---|---|---|---:|"]
    lines += [f"| {s['name']} | {s['kind']} | {s['status']} | {s['seconds']} |" for s in res["stages"]]
    lines += ["", "| gate | value | reference | passed |", "|---|---:|---:|---|"]
    lines += [f"| {g['stage']}: {g['metric']} {g['rule']} | {g['value']} | {g['reference']} | {g['passed']} |"
              for g in res["gates"]]
    if "kill9" in res:
        k = res["kill9"]
        lines += ["", "## kill -9 in sft and in eval:sft, then rerun", "",
                  f"status {k['status']}; sft resumed from `{k['sft_resumed_from']}`; sft weights identical to the "
                  f"uninterrupted run: **{k['sft_weights_identical']}**; every evaluation's metrics identical: "
                  f"**{k['all_eval_metrics_identical']}**; same stage keys: {k['same_keys']}."]
    write("recipe_demo", res, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
