"""`aloekit run`: the stage graph on a tiny random Llama — caching, kill -9 + resume, gates, bad recipes, dry run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, save_tiny_llama

from aloekit.stage import numbers

CLI = [sys.executable, "-m", "aloekit.cli", "-q"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_recipe_model"), real_tokenizer)


def recipe(tiny_dir, out, **over) -> dict:
    """data -> sft -> merge -> dpo1 on the tiny model, every model evaluated on the bundled benchmark."""
    r = {
        "name": "tiny", "output": str(out), "seed": 0, "models": {"base": str(tiny_dir)},
        "stages": {
            "data": {"kind": "data", "config": {
                "sources": [{"name": "demo_mcq"}, {"name": "demo_qa"}, {"name": "demo_preference"}],
                "cot": {"enabled": False}, "decontam": {"enabled": False}}},
            "sft": {"kind": "sft", "config": {
                "model": "base", "dataset": "@data", "method": "lora", "precision": "fp32", "max_length": 96,
                "save_steps": 1, "lora": {"r": 4, "alpha": 8}, "optim": {"lr": 0.01, "max_steps": 12, "batch_size": 2}}},
            "merge": {"kind": "merge", "config": {
                "method": "dare_ties", "base_model": "base",
                "models": [{"model": "@sft", "weight": 0.7, "density": 0.7}, {"model": "base", "weight": 0.3,
                                                                            "density": 0.7}]}},
            "dpo1": {"kind": "dpo", "config": {
                "model": "@merge", "method": "lora", "precision": "fp32", "max_length": 96, "lora": {"r": 4, "alpha": 8},
                "stages": [{"name": "preferences", "dataset": "@data",
                            "optim": {"lr": 0.001, "max_steps": 2, "batch_size": 2}}]}},
        },
        "evaluation": {"models": ["base", "sft", "merge", "dpo1"], "model": {"dtype": "float32"},
                       "benchmarks": {"tasks": ["aloekit_demo"], "limit": 24}},
        "gates": [{"after": "sft", "metric": "aloekit_demo.acc", "max_drop": 1.0}],
        "report": False,
    }
    for k, v in over.items():
        r[k] = v
    return r


def write(tmp_path, r, name="recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(r, sort_keys=False))
    return p


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def metrics(out: Path) -> dict:
    """The evaluation metrics of every evaluated model (training logs hold timings and, after a resume, the loss
    of the resumed steps only: not results)."""
    return {s["name"]: s["metrics"] for s in manifest(out)["stages"] if s["kind"] == "eval"}


def weights(folder: Path) -> dict:
    import hashlib
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.safetensors"))}


def cli(*args, cwd=None, timeout=900):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def kill_when(proc, ready, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_run_caches_and_kill9_resume_matches_uninterrupted(tiny_dir, tmp_path):
    ref_out = tmp_path / "ref"
    r = cli("run", write(tmp_path, recipe(tiny_dir, ref_out), "ref.yaml"))
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(ref_out)
    assert m["status"] == "done"
    assert [s["name"] for s in m["stages"]] == ["eval:base", "data", "sft", "eval:sft", "merge", "eval:merge",
                                                "dpo1", "eval:dpo1"]
    assert all(s["status"] == "done" for s in m["stages"])
    assert m["final_model"].endswith("/stage1-preferences/model")
    assert (ref_out / m["final_model"] / "config.json").is_file()
    assert m["gates"][0]["passed"] and m["gates"][0]["reference_stage"] == "base"
    ref_metrics = metrics(ref_out)
    assert 0.0 <= ref_metrics["eval:dpo1"]["aloekit_demo.acc"] <= 1.0

    # a rerun does no work
    t = time.time()
    r = cli("run", tmp_path / "ref.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(s["status"] == "cached" for s in manifest(ref_out)["stages"])
    assert time.time() - t < 60

    # kill -9 in the middle of sft, then in the middle of an evaluation; each rerun continues
    out = tmp_path / "cut"
    path = write(tmp_path, recipe(tiny_dir, out), "cut.yaml")
    proc = subprocess.Popen([*CLI, "run", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any(out.glob("stages/sft-*/checkpoints/checkpoint-2/trainer_state.json")), "sft")
    sft_dir = next(out.glob("stages/sft-*"))
    assert not (sft_dir / "stage.json").exists() and not (sft_dir / "model").exists()
    proc = subprocess.Popen([*CLI, "run", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any(out.glob("stages/eval-merge-*")), "eval:merge")
    assert not any(out.glob("stages/eval-merge-*/stage.json"))
    assert json.loads((sft_dir / "train_run.json").read_text())["metrics"]["resumed_from"] is not None
    r = cli("run", path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert manifest(out)["status"] == "done"
    assert metrics(out) == ref_metrics  # every evaluation: same numbers as the uninterrupted run
    final = manifest(out)["final_model"]
    assert final == m["final_model"].replace("ref/", "cut/") or final == m["final_model"]
    assert weights(out / final) == weights(ref_out / m["final_model"])  # bit-identical final model
    assert [s["key"] for s in manifest(out)["stages"]] == [s["key"] for s in m["stages"]]


def test_failing_gate_stops_the_run_and_says_why(tiny_dir, tmp_path):
    out = tmp_path / "gated"
    # a random model is at chance (about 25%) on 24 questions: even its 95% interval stays below 80%
    gates = [{"after": "sft", "metric": "aloekit_demo.acc", "min": 0.8}]
    r = cli("run", write(tmp_path, recipe(tiny_dir, out, gates=gates)))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: gate 0 on sft failed: aloekit_demo.acc ") and "beyond min 0.8" in lines[-1]
    m = manifest(out)
    assert m["status"] == "gate_failed"
    assert m["stopped_by"]["stage"] == "sft" and "beyond min 0.8" in m["stopped_by"]["message"]
    g = m["gates"][0]
    assert g["decision"] == "fail" and g["n"] == 24 and g["method"] == "Wilson" and g["interval"][1] < 0.8
    status = {s["name"]: s["status"] for s in m["stages"]}
    assert status["eval:sft"] == "done" and status["merge"] == "pending" and status["dpo1"] == "pending"
    assert not any(out.glob("stages/merge-*"))
    # the failed gate still bars the way when a later stage is asked for alone
    r = cli("run", tmp_path / "recipe.yaml", "--only", "merge")
    assert r.returncode == 1 and "gate 0 on sft failed" in r.stderr
    assert not any(out.glob("stages/merge-*"))


def test_selection_flags(tiny_dir, tmp_path):
    out = tmp_path / "sel"
    path = write(tmp_path, recipe(tiny_dir, out))
    r = cli("run", path, "--only", "merge")  # its input (sft) has not run
    assert r.returncode == 2 and "needs the output of sft" in r.stderr
    r = cli("run", path, "--until", "sft")
    assert r.returncode == 0, r.stderr[-3000:]
    status = {s["name"]: s["status"] for s in manifest(out)["stages"]}
    assert status == {"eval:base": "done", "data": "done", "sft": "done", "eval:sft": "done", "merge": "skipped",
                      "eval:merge": "skipped", "dpo1": "skipped", "eval:dpo1": "skipped"}
    r = cli("run", path, "--only", "merge")
    assert r.returncode == 0, r.stderr[-3000:]
    status = {s["name"]: s["status"] for s in manifest(out)["stages"]}
    assert status["merge"] == "done" and status["eval:merge"] == "done" and status["sft"] == "cached"
    assert status["dpo1"] == "skipped"
    r = cli("run", path, "--from", "nope")
    assert r.returncode == 2 and "'nope' is not a stage" in r.stderr


BAD = {
    "missing stage output": (lambda r: r["stages"]["sft"]["config"].update(dataset="@dataa"),
                             "stages.sft.config.dataset: '@dataa' names no stage"),
    "cycle": (lambda r: r["stages"]["sft"]["config"].update(dataset="@dpo1"),
              "is a model, not a dataset"),
    "true cycle": (lambda r: (r["stages"]["sft"]["config"].update(model="@dpo1"),
                              r["stages"]["merge"]["config"].update(base_model="base")),
                   "the references form a cycle among"),
    "gate on unknown metric": (lambda r: r["gates"].append({"after": "sft", "metric": "medqa.acc", "min": 0.3}),
                               "gates[1].metric: 'medqa.acc' is not produced by the evaluation"),
    "undeclared model": (lambda r: r["stages"]["merge"]["config"]["models"][1].update(model="qwen2.5-7b"),
                         "model 'qwen2.5-7b' is not one of the recipe's models"),
    "inconsistent models": (lambda r: (r["models"].update(other=r["models"]["base"] + "/../other"),
                                       r["stages"]["merge"]["config"].update(base_model="other")),
                            "task vectors need the model the inputs were fine-tuned from"),
    "model field given a dataset": (lambda r: r["stages"]["dpo1"]["config"].update(model="@data"),
                                    "is a data stage, which outputs no model"),
    "stage config key typo": (lambda r: r["stages"]["sft"]["config"].update(lerning_rate=1),
                              "unknown key 'lerning_rate'"),
    "output set in a stage": (lambda r: r["stages"]["sft"]["config"].update(output="x"),
                              "'output' is set by the recipe runner"),
    "gate that can never be decided": (
        lambda r: r["gates"].append({"after": "sft", "metric": "aloekit_demo.acc", "min": 0.95}),
        "gates[1]: aloekit_demo.acc on sft can never be decided: with 24 items even a perfect score"),
    "gate with two rules": (
        lambda r: r["gates"].append({"after": "sft", "metric": "aloekit_demo.acc", "min": 0.1, "max_drop": 0.1}),
        "one rule per gate"),
    "gate needs an unevaluated reference": (
        lambda r: r["gates"].append({"after": "sft", "metric": "aloekit_demo.acc", "max_drop": 0, "vs": "merge2"}),
        "which is not evaluated"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipe_is_one_line_before_any_work(case, tiny_dir, tmp_path):
    r = recipe(tiny_dir, tmp_path / "out")
    edit, expected = BAD[case]
    edit(r)
    res = cli("run", write(tmp_path, r))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["demo.yaml", "aloe-llama3.1-8b.yaml", "aloe-qwen2.5-7b.yaml"])
def test_dry_run_validates_shipped_recipes(name, tmp_path):
    r = cli("run", REPO / "configs" / name, "--dry-run", "-o", tmp_path / "plan", cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("data", "sft", "merge", "dpo1", "redteam", "dpo2", "eval:dpo2"):
        assert f"\n{stage} " in r.stdout, stage
    assert "GPU hours" in r.stdout
    assert not (tmp_path / "plan").exists()  # a dry run writes nothing
    if name != "demo.yaml":
        total = float(r.stdout.split("total: ~")[1].split(" GPU hours")[0])
        assert total > 50  # an 8B SFT on billions of tokens is hundreds of GPU hours, not zero


def test_dry_run_validates_safety_dpo_recipe(tmp_path):
    """The safety DPO experiment as a recipe: red team -> DPO from base -> safety evaluation of both, two gates."""
    r = cli("run", REPO / "configs" / "safety_dpo.yaml", "--dry-run", "-o", tmp_path / "plan", cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("eval:base", "redteam", "safety_dpo", "eval:safety_dpo"):
        assert f"\n{stage} " in r.stdout, stage
    assert "gate 0: after safety_dpo: safety.asr max_rise 0;" in r.stdout
    assert "gate 1: after safety_dpo: safety.over_refusal max_rise 0.1;" in r.stdout
    assert not (tmp_path / "plan").exists()


def test_full_graph_with_safety_medprompt_report_and_card(tiny_dir, tmp_path):
    """The demo's shape on the tiny model: red team -> safety DPO -> safety evaluation, Medprompt, report, card."""
    r = recipe(tiny_dir, tmp_path / "full", report=True, model_card={"license": "apache-2.0"})
    r["stages"]["redteam"] = {"kind": "redteam", "config": {
        "model": {"name": "@dpo1", "dtype": "float32"}, "budget": 12,
        # sampled: a random model's greedy output is a loop the judge calls 'unclear', and makes no pairs
        "sampling": {"max_new_tokens": 24, "temperature": 1.0},
        "sources": [{"name": "demo_harmful", "split": "train"}], "attacks": ["programmatic"], "judges": ["marker"],
        "xstest": {"enabled": False}, "medsafety_refusal": {"enabled": False}, "pairs": {"chosen": "auto"}}}
    r["stages"]["dpo2"] = {"kind": "dpo", "config": {
        "model": "@dpo1", "method": "lora", "precision": "fp32", "max_length": 96, "lora": {"r": 4, "alpha": 8},
        "stages": [{"name": "safety", "dataset": "@redteam", "eval_fraction": 0.0,
                    "optim": {"lr": 0.001, "max_steps": 2, "batch_size": 2}}]}}
    r["stages"]["medprompt"] = {"kind": "medprompt", "config": {
        "model": "@dpo2", "backend": {"dtype": "float32"}, "pool_limit": 6, "limit": 4,
        # no database: a random model's chains never reach the gold answer (build_db refuses an empty one)
        "strategies": ["zeroshot", "sc-cot"],
        "params": {"shots": 1, "members": 2, "max_new_tokens": 8, "answer_tokens": 4}}}
    r["evaluation"]["models"] = ["base", "dpo1", "dpo2"]
    r["evaluation"]["safety"] = {"sampling": {"max_new_tokens": 8}, "budget": 8,
                                 "sources": [{"name": "demo_harmful", "split": "test"}],
                                 "attacks": ["programmatic"], "judges": ["marker"],
                                 "xstest": {"source": "demo_safe", "limit": 4}, "medsafety_refusal": {"enabled": False}}
    r["evaluation"]["safety_models"] = ["dpo1", "dpo2"]
    r["gates"] = [{"after": "dpo2", "metric": "safety.over_refusal", "max_rise": 1.0}]
    res = cli("run", write(tmp_path, r))
    assert res.returncode == 0, res.stderr[-3000:]
    m = manifest(tmp_path / "full")
    by = {s["name"]: s for s in m["stages"]}
    assert [s["name"] for s in m["stages"]] == ["eval:base", "data", "sft", "merge", "dpo1", "eval:dpo1", "redteam",
                                                "dpo2", "eval:dpo2", "medprompt"]
    assert "safety.asr" in by["eval:dpo2"]["metrics"] and "safety.over_refusal" in by["eval:dpo2"]["metrics"]
    assert "safety.asr" not in by["eval:base"]["metrics"]  # only the listed safety_models get the safety run
    assert "sc-cot.accuracy" in by["medprompt"]["metrics"]
    # every stage kind's run directory (aloekit/stage.py): a manifest with an outputs map and the metrics map the
    # recipe recorded for it
    for s in m["stages"]:
        own = json.loads((tmp_path / "full" / s["dir"] / "manifest.json").read_text())
        assert own["status"] == "done" and own["outputs"], s["name"]
        assert numbers(own["metrics"]) == s["metrics"] and s["metrics"], s["name"]
    assert set(json.loads((tmp_path / "full" / by["eval:dpo2"]["dir"] / "items.json").read_text())) >= {
        "aloekit_demo.acc", "safety.asr", "safety.over_refusal"}  # what the gates read
    assert m["gates"][0]["reference_stage"] == "dpo1" and m["gates"][0]["passed"]
    pairs = (tmp_path / "full" / by["redteam"]["dir"] / "pairs.jsonl").read_text().splitlines()
    bundled = REPO / "src" / "aloekit" / "resources" / "demo_redteam" / "harmful.jsonl"
    split = {json.loads(x)["id"]: json.loads(x)["split"] for x in bundled.read_text().splitlines() if x.strip()}
    assert pairs and all(split[json.loads(p)["request_id"].split("/")[-1]] == "train" for p in pairs)
    html = (tmp_path / "full" / "report.html").read_text()
    assert "aloekit_demo" in html and "safety.asr" in html
    card = (tmp_path / "full" / "model_card" / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "not a medical device" in card


def test_inconclusive_gate_stops_or_warns_as_configured(tiny_dir, tmp_path):
    out = tmp_path / "undecided"
    # 24 questions cannot show that a fine-tune costs at most 2 points
    gate = {"after": "sft", "metric": "aloekit_demo.acc", "max_drop": 0.02, "on_inconclusive": "stop"}
    r = cli("run", write(tmp_path, recipe(tiny_dir, out, gates=[gate])), "--until", "sft")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "gate 0 on sft was inconclusive: aloekit_demo.acc " in r.stderr.strip().splitlines()[-1]
    g = manifest(out)["gates"][0]
    assert g["decision"] == "inconclusive" and g["paired"] and g["n"] == 24 and not g["passed"]
    assert g["interval"][0] < -0.02 <= g["interval"][1] and (g["needed_n"] is None or g["needed_n"] > 24)
    # warn: the run goes on (stages are cached: gates are not part of their keys), the gate stays undecided
    gate["on_inconclusive"] = "warn"
    r = cli("run", write(tmp_path, recipe(tiny_dir, out, gates=[gate])), "--until", "sft")
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert m["status"] == "done" and m["stopped_by"] is None
    assert m["gates"][0]["decision"] == "inconclusive" and "inconclusive" in r.stderr
