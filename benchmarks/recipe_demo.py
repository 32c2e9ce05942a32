"""The demo recipe end to end on the default model, as a new user runs it: fresh clones, repeated.

    python benchmarks/recipe_demo.py                      # 2 fresh clones of HEAD with the shared data
    python benchmarks/recipe_demo.py --runs 1 --no-data   # + the bundled-sets-only path
    python benchmarks/recipe_demo.py --runs 1 --cpu-capability avx2   # another CPU's bf16 kernels
    python benchmarks/recipe_demo.py --kill               # kill -9 in sft and eval:sft, resume, compare

Each run: `git clone` of HEAD into a temporary folder, `make install` there (a new .venv, timed on its own as
install_s; pip's download cache is the machine's, as a user's would be), a new empty ALOEKIT_HOME (so the GGUF
conversion is timed too), then `aloekit run configs/demo.yaml` with the clone's own venv. Wall time is the demo
command's, start to exit; the goal is on that, install excluded. `--reuse-venv` skips the install and runs the
clone's source with this venv's packages (faster, for repeated checks; the results say which).
`--cpu-capability avx2` sets ATEN_CPU_CAPABILITY so torch runs its AVX2 kernels instead of AVX-512: greedy bf16
text differs between the two (measured: 47 of 64 answers), which is what another machine of this kind may do.

Results are merged into results/recipe_demo.{json,md} by configuration (data / no-data / capability), so each
configuration keeps its latest runs; the goal is 10 minutes per run on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, RESULTS, data_dir, machine, write

GOAL_S = 10 * 60


def load(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# the commit every run of this invocation clones (taken once: a commit made meanwhile does not mix in), and the
# sha the results name: the code that ran, whatever the working tree holds
HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def fresh_clone(where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(where)], check=True)
    subprocess.run(["git", "checkout", "-q", HEAD], cwd=where, check=True)
    return where


def fresh_venv(clone: Path) -> float:
    """`make install` in the clone, as the README's first command does; returns its wall seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    t = time.time()
    r = subprocess.run(["make", "install"], cwd=clone, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"make install failed in the fresh clone: {r.stderr.strip()[-2000:]}")
    return round(time.time() - t, 1)


def env_for(clone: Path, home: Path, data: str | None, capability: str | None, own_venv: bool = False) -> dict:
    env = dict(os.environ, ALOEKIT_HOME=str(home))
    env.pop("VIRTUAL_ENV", None)
    if own_venv:
        env.pop("PYTHONPATH", None)   # the clone's venv has the clone installed (editable)
    else:
        env["PYTHONPATH"] = str(clone / "src")
    env["ALOEKIT_DATA_DIR"] = data if data else str(clone / "no-shared-data")
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    return env


def run_once(data: str | None, capability: str | None, keep: Path | None, new_venv: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="aloekit-demo-") as tmp:
        clone = fresh_clone(Path(tmp) / "aloekit")
        install_s = fresh_venv(clone) if new_venv else None
        python = str(clone / ".venv" / "bin" / "python") if new_venv else sys.executable
        env = env_for(clone, Path(tmp) / "home", data, capability, own_venv=new_venv)
        load_before = os.getloadavg()
        t = time.time()
        r = subprocess.run([python, "-m", "aloekit.cli", "-q", "run", "configs/demo.yaml"], cwd=clone,
                           env=env, capture_output=True, text=True)
        wall = time.time() - t
        out = clone / "runs" / "demo"
        m = load(out)
        res = {"returncode": r.returncode, "last_line": (r.stderr.strip().splitlines() or [""])[-1],
               "status": m["status"], "wall_s": round(wall, 1), "data_dir": m["data_dir"],
               "venv": "new (make install in the clone)" if new_venv else "reused (this venv, clone source)",
               "install_s": install_s,
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in os.getloadavg()],
               "stages": [{k: s[k] for k in ("name", "kind", "status", "seconds")} for s in m["stages"]],
               "gates": [{k: g.get(k) for k in ("stage", "metric", "rule", "value", "reference", "n", "interval",
                                                 "decision", "message")} for g in m["gates"]],
               "metrics": {s["name"]: {k: v for k, v in s["metrics"].items()
                                       if k.startswith(("safety.asr", "safety.over_refusal", "aloekit_demo.acc",
                                                        "medprompt", "zeroshot", "cot"))
                                       and not k.startswith("safety.asr.")}
                           for s in m["stages"] if s["kind"] in ("eval", "medprompt")},
               "report_written": (out / "report.html").is_file() and (out / "model_card" / "README.md").is_file()}
        if keep:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(out, keep, ignore=shutil.ignore_patterns("*.safetensors", "checkpoints", "pairs_hf"))
        return res


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def kill_check() -> dict:
    """kill -9 in sft and in eval:sft, then a rerun: same metrics and sft weights as an uninterrupted run."""
    with tempfile.TemporaryDirectory(prefix="aloekit-kill-") as tmp:
        clone = fresh_clone(Path(tmp) / "aloekit")
        env = env_for(clone, Path(tmp) / "home", str(data_dir()), None)
        cli = [sys.executable, "-m", "aloekit.cli", "-q", "run", "configs/demo.yaml"]
        subprocess.run([*cli, "-o", "runs/ref"], cwd=clone, env=env, capture_output=True)
        cut = clone / "runs" / "cut"
        for what, ready in (("sft", lambda: any(cut.glob("stages/sft-*/checkpoints/checkpoint-*/trainer_state.json"))),
                            ("eval:sft", lambda: any(cut.glob("stages/eval-sft-*/benchmarks")))):
            proc = subprocess.Popen([*cli, "-o", "runs/cut"], cwd=clone, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            while not ready():
                if proc.poll() is not None:
                    raise SystemExit(f"the run ended before {what}")
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        r = subprocess.run([*cli, "-o", "runs/cut"], cwd=clone, env=env, capture_output=True)
        a, b = load(clone / "runs" / "ref"), load(cut)
        evals = lambda m: {s["name"]: s["metrics"] for s in m["stages"] if s["kind"] == "eval"}  # noqa: E731
        sft_a, sft_b = next((clone / "runs" / "ref").glob("stages/sft-*/model")), next(cut.glob("stages/sft-*/model"))
        return {"returncode": r.returncode, "status": b["status"],
                "sft_resumed_from": json.loads((sft_b.parent / "train_run.json").read_text())["metrics"]
                .get("resumed_from"),
                "sft_weights_identical": folder_hash(sft_a) == folder_hash(sft_b),
                "all_eval_metrics_identical": evals(a) == evals(b),
                "same_keys": [s["key"] for s in a["stages"]] == [s["key"] for s in b["stages"]]}


def config_name(no_data: bool, capability: str | None) -> str:
    return ("bundled sets only" if no_data else "with shared data") + (f", {capability} kernels" if capability
                                                                        else "")


def markdown(res: dict) -> str:
    lines = ["# Demo recipe (`aloekit run configs/demo.yaml`) on the default model", "",
             f"Fresh `git clone` of the commit below per run, a new venv (`make install`, timed apart) unless "
             f"marked reused, new empty `ALOEKIT_HOME` (GGUF conversion included), new run folder; 2 CPU cores; the "
             f"goal is on the demo command, install excluded. Goal: each run <= {GOAL_S // 60} min, exit 0, the same gate decisions "
             "every time. `python benchmarks/recipe_demo.py` (options in its docstring).", ""]
    for name, c in res["configs"].items():
        runs = c["runs"]
        walls = [r["wall_s"] for r in runs]
        decisions = [[g["decision"] for g in r["gates"]] for r in runs]
        lines += [f"## {name}", "",
                  f"git {c['git']}, {c['date']}; data dir: {runs[0]['data_dir'] or 'none'}; venv: "
                  f"{runs[0].get('venv', 'reused (this venv, clone source)')}"
                  + (f"; `make install` {', '.join(str(r['install_s']) for r in runs)} s" if runs[0].get('install_s')
                     else "") + ".", "",
                  f"**{len(runs)} run(s): wall {', '.join(f'{w / 60:.1f}' for w in walls)} min** (median "
                  f"{statistics.median(walls) / 60:.1f}, goal <= {GOAL_S // 60}: "
                  f"{'met' if all(w <= GOAL_S for w in walls) else 'NOT met'}); exit codes "
                  f"{[r['returncode'] for r in runs]}; same gate decisions in every run: "
                  f"**{all(d == decisions[0] for d in decisions)}**; load average before each run "
                  f"{[r['loadavg_before'][0] for r in runs]}.", "",
                  "| gate | n | " + " | ".join(f"run {i + 1}: value vs ref, interval, decision" for i in range(len(runs)))
                  + " |", "|---|---:|" + "---|" * len(runs)]
        for gi, g in enumerate(runs[0]["gates"]):
            cells = []
            for r in runs:
                x = r["gates"][gi] if gi < len(r["gates"]) else {}
                iv = x.get("interval") or [float("nan")] * 2
                ref = f" vs {x['reference']:.3f}" if x.get("reference") is not None else ""
                cells.append(f"{x.get('value', float('nan')):.3f}{ref}, [{iv[0]:+.3f}, {iv[1]:+.3f}], "
                             f"**{x.get('decision')}**")
            lines.append(f"| {g['stage']}: {g['metric']} {g['rule']} | {g['n']} | " + " | ".join(cells) + " |")
        lines += ["", "| stage | " + " | ".join(f"run {i + 1} s" for i in range(len(runs))) + " |",
                  "|---|" + "---:|" * len(runs)]
        for si, s in enumerate(runs[0]["stages"]):
            lines.append(f"| {s['name']} | " + " | ".join(str(r["stages"][si]["seconds"]) for r in runs) + " |")
        lines += ["", "| model | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |",
                  "|---|" + "---|" * len(runs)]
        for model in runs[0]["metrics"]:
            lines.append(f"| {model} | " + " | ".join(
                ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["metrics"].get(model, {}).items())) for r in runs)
                + " |")
        lines.append("")
    if res.get("kill9"):
        k = res["kill9"]
        lines += ["## kill -9 in sft and in eval:sft, then rerun", "",
                  f"status {k['status']}; sft resumed from `{k['sft_resumed_from']}`; sft weights identical to the "
                  f"uninterrupted run: **{k['sft_weights_identical']}**; every evaluation's metrics identical: "
                  f"**{k['all_eval_metrics_identical']}**; same stage keys: {k['same_keys']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-data", action="store_true", help="without the shared data (bundled sets only)")
    ap.add_argument("--cpu-capability", choices=["avx2", "avx512", "default"], default=None)
    ap.add_argument("--kill", action="store_true", help="only the kill -9 + resume check")
    ap.add_argument("--keep", type=Path, help="copy the last run's folder here (no weights)")
    ap.add_argument("--reuse-venv", action="store_true",
                    help="skip `make install` in the clone: run its source with this venv's packages")
    args = ap.parse_args()
    previous = json.loads((RESULTS / "recipe_demo.json").read_text()) if (RESULTS / "recipe_demo.json").is_file() else {}
    res = {"configs": previous.get("configs", {}), "kill9": previous.get("kill9")}
    if args.kill:
        res["kill9"] = {"git": HEAD[:7], **kill_check()}
    else:
        cap = None if args.cpu_capability in (None, "default") else args.cpu_capability
        runs = []
        for i in range(args.runs):
            r = run_once(None if args.no_data else str(data_dir()), cap, args.keep, new_venv=not args.reuse_venv)
            print(f"run {i + 1}: exit {r['returncode']}, {r['wall_s']:.0f} s, gates "
                  f"{[g['decision'] for g in r['gates']]}", flush=True)
            runs.append(r)
        res["configs"][config_name(args.no_data, cap)] = {"git": HEAD[:7], "date": machine()["date"], "runs": runs}
    write("recipe_demo", res, markdown(res))


if __name__ == "__main__":
    main()
