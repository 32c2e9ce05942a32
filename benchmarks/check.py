"""Which results files are stale: measured at a commit older than the last change to the code they measure.

Each results file (benchmarks/results/<name>.json) records the git sha its script ran at (`_common.write`). A
result is stale when a commit after that sha touched its script or the source it measures (MEASURES below), when
it has no sha (written before scripts recorded one), or when its sha is not in this history. A "+dirty" sha means
uncommitted changes were present: the result is shown as such, and checked from its base commit.

    python benchmarks/check.py            # table; exit 0
    python benchmarks/check.py --strict   # exit 1 if any result is stale (`make bench-check`)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# result name -> (script under benchmarks/ or the repo, source paths it measures). Everything a result depends on
# beyond its script: the stage code, and the shared layers under it that change what is measured.
CORE = ["src/aloekit/backends", "src/aloekit/models.py", "src/aloekit/config.py"]
BENCH = ["src/aloekit/benchmarks"]
MEASURES: dict[str, tuple[str, list[str]]] = {
    "data_speed": ("data_speed.py", ["src/aloekit/data", *BENCH]),
    "default_model_scores": ("eval_default_model.py", ["src/aloekit/eval", *BENCH, *CORE]),
    "demo_safety_dev": ("demo_safety_dev.py", ["src/aloekit/redteam", "src/aloekit/train", *CORE]),
    "demo_safety_dev_retain48": ("demo_safety_dev.py", ["src/aloekit/redteam", "src/aloekit/train", *CORE]),
    "eval_speed": ("eval_speed.py", ["src/aloekit/eval", *BENCH, *CORE]),
    "eval_speed_bf16": ("eval_speed.py", ["src/aloekit/eval", *BENCH, *CORE]),
    "eval_speed_lmeval_float32": ("eval_speed.py", ["src/aloekit/lmeval", *BENCH, *CORE]),
    "eval_speed_lmeval_bfloat16": ("eval_speed.py", ["src/aloekit/lmeval", *BENCH, *CORE]),
    "generation": ("generation.py", CORE),
    "gpu_check": ("../scripts/gpu/gpu_check.py", ["src/aloekit/train", "src/aloekit/eval", *CORE]),
    "medprompt_real": ("medprompt_real.py", ["src/aloekit/medprompt", "src/aloekit/retrieval", *BENCH, *CORE]),
    "medprompt_real_pubmedqa": ("medprompt_real.py", ["src/aloekit/medprompt", "src/aloekit/retrieval", *BENCH,
                                                      *CORE]),
    "medprompt_speed": ("medprompt_speed.py", ["src/aloekit/medprompt", "src/aloekit/retrieval", *CORE]),
    "medprompt_stop_risk": ("medprompt_speed.py", ["src/aloekit/medprompt", "src/aloekit/retrieval", *CORE]),
    "medprompt_speed_fp32": ("medprompt_speed.py", ["src/aloekit/medprompt", "src/aloekit/retrieval", *CORE]),
    "merge_memory": ("merge_memory.py", ["src/aloekit/merge"]),
    "merge_real": ("merge_real.py", ["src/aloekit/merge", "src/aloekit/train", *CORE]),
    "openended": ("openended.py", ["src/aloekit/eval", *BENCH, *CORE,
                                   "src/aloekit/resources/judge_calibration/open_qa.jsonl"]),
    "rag": ("rag.py", ["src/aloekit/rag", "src/aloekit/retrieval", "src/aloekit/medprompt", *BENCH, *CORE]),
    "recipe_demo": ("recipe_demo.py", ["src"]),
    "redteam": ("redteam.py", ["src/aloekit/redteam", *BENCH, *CORE]),
    "safety_judges": ("safety_judges.py", ["src/aloekit/redteam", "src/aloekit/resources/judge_calibration/safety.jsonl",
                                           *CORE]),
    "safety_holdout": ("safety_holdout.py", ["src/aloekit/redteam", "src/aloekit/train", "src/aloekit/recipe",
                                             "configs/safety_dpo.yaml", "src/aloekit/resources/safety_holdout",
                                             "src/aloekit/resources/judge_calibration/safety.jsonl",
                                             "src/aloekit/resources/judge_calibration/holdout_sample.jsonl", *CORE]),
    "safety_dpo": ("../configs/safety_dpo.yaml", ["src/aloekit/redteam", "src/aloekit/train", *CORE]),
    "serve": ("serve.py", ["src/aloekit/serve", *CORE]),
    "train_real": ("train_real.py", ["src/aloekit/train", "src/aloekit/data", *CORE]),
    "train_real_hh_dpo": ("train_real.py", ["src/aloekit/train", *CORE]),
    "train_speed": ("train_speed.py", ["src/aloekit/train"]),
}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def check(repo: Path, results: Path, measures: dict[str, tuple[str, list[str]]]) -> list[dict]:
    """One row per results file: name, sha, status (fresh | stale | unknown), why."""
    rows = []
    for path in sorted(results.glob("*.json")):
        name = path.stem
        try:
            sha_field = json.loads(path.read_text(encoding="utf-8")).get("git")
        except (json.JSONDecodeError, AttributeError):
            rows.append({"name": name, "sha": None, "status": "stale", "why": "not a JSON object"})
            continue
        if name not in measures:
            rows.append({"name": name, "sha": sha_field, "status": "unknown",
                         "why": "not in benchmarks/check.py MEASURES: say what it measures"})
            continue
        script, paths = measures[name]
        script_path = str((Path("benchmarks") / script)) if not script.startswith("../") else script[3:]
        if not sha_field:
            rows.append({"name": name, "sha": None, "status": "stale", "why": "no git sha recorded: rerun"})
            continue
        sha = sha_field.split("+")[0]
        if git(repo, "cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
            rows.append({"name": name, "sha": sha_field, "status": "stale", "why": f"{sha} is not in this history"})
            continue
        changed = git(repo, "log", "--format=%h %s", f"{sha}..HEAD", "--", script_path, *paths).stdout.splitlines()
        dirty = " (measured with uncommitted changes)" if sha_field.endswith("+dirty") else ""
        if changed:
            rows.append({"name": name, "sha": sha_field, "status": "stale",
                         "why": f"{len(changed)} later commit(s) touch what it measures, last: {changed[0][:70]}"})
        else:
            rows.append({"name": name, "sha": sha_field, "status": "fresh", "why": "current" + dirty})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strict", action="store_true", help="exit 1 when a result is stale or unknown")
    args = ap.parse_args()
    rows = check(HERE.parent, HERE / "results", MEASURES)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['status']:<7}  {r['sha'] or '-':<14}  {r['why']}")
    bad = [r for r in rows if r["status"] != "fresh"]
    print(f"\n{len(rows) - len(bad)} fresh, {len(bad)} stale or unknown")
    if args.strict and bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
