"""`aloekit eval --tasks` with lm-eval's tasks (issue 23 item 3) and lm-eval's file schema (item 4), offline.

The lm-eval task is tests/fixtures/lmeval/aloekit_arc_style.yaml (arc_easy's format over 20 questions written for
aloekit's tests), a task aloekit never wrote a loader for. Run by `aloekit eval` (lm-eval's TaskManager and
evaluator, the aloekit-hf model on eval's backend) it must give what lm-eval's own `hf` model gives on the same
YAML; and the files `aloekit eval` writes must have every key the files lm-eval writes (its EvaluationTracker, in
the same test) have, at every level, and load with lm-eval's own readers.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, one_line_error, save_tiny_llama

FIXTURES = REPO / "tests" / "fixtures" / "lmeval"
TASK = "aloekit_arc_style"
TOL = 1e-4  # fp32, same weights: only the batch layout differs


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "aloekit.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"), real_tokenizer)


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """The fixture task YAMLs with their data files' absolute paths (lm-eval resolves data_files from the cwd)."""
    out = tmp_path_factory.mktemp("lm_eval_tasks")
    shutil.copytree(FIXTURES, out, dirs_exist_ok=True)
    for y in out.glob("*.yaml"):
        y.write_text(y.read_text().replace("@FIXTURES@", str(out)))
    return out


@pytest.fixture(scope="module")
def ours(tiny_dir, tasks_dir, tmp_path_factory):
    """`aloekit eval` on an aloekit task and the lm-eval task YAML together: its output folder."""
    out = tmp_path_factory.mktemp("ours") / "run"
    r = cli("eval", "--tasks", f"aloekit_demo,{tasks_dir / (TASK + '.yaml')}", "--model", str(tiny_dir),
            "--dtype", "float32", "--batch-size", "8", "--limit", "20", "--output", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def theirs(tiny_dir, tasks_dir, tmp_path_factory):
    """lm-eval itself, its `hf` model on the same YAML, its files written by its EvaluationTracker:
    (results dict with samples, the results file, the samples file)."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model gains nothing from threads on a busy machine
    try:
        lm = HFLM(pretrained=str(tiny_dir), dtype="float32", batch_size=8, device="cpu")
        out = tmp_path_factory.mktemp("theirs")
        tracker = EvaluationTracker(output_path=str(out))
        res = simple_evaluate(model=lm, tasks=[TASK], limit=20, log_samples=True, evaluation_tracker=tracker,
                              task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False))
    finally:
        torch.set_num_threads(threads)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples)
    tracker.save_results_samples(task_name=TASK, samples=samples[TASK])
    results_file = next(out.rglob("results_*.json"))
    samples_file = next(out.rglob(f"samples_{TASK}_*.jsonl"))
    return json.loads(results_file.read_text()), results_file, samples_file


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ---------- item 3: a task aloekit never wrote, through lm-eval, with aloekit's model ----------

def test_lm_eval_yaml_task_same_as_lm_eval_hf(ours, theirs):
    """Same predictions, log-likelihoods (1e-4) and acc/acc_norm as lm-eval's hf on the same YAML; the aloekit
    task of the same run is in the same results.json."""
    res = json.loads((ours / "results.json").read_text())
    ref, _, ref_samples_file = theirs
    mine = rows(ours / f"samples_{TASK}.jsonl")
    ref_rows = rows(ref_samples_file)
    assert [r["doc_id"] for r in mine] == [r["doc_id"] for r in ref_rows] == list(range(20))
    for a, b in zip(mine, ref_rows):
        la = [float(x[0]) for x in a["filtered_resps"]]
        lb = [float(x[0]) for x in b["filtered_resps"]]
        assert max(abs(x - y) for x, y in zip(la, lb)) < TOL and np.argmax(la) == np.argmax(lb)
        assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])
    for metric in ("acc,none", "acc_norm,none"):
        assert res["results"][TASK][metric] == ref["results"][TASK][metric]
    assert res["n-samples"][TASK] == ref["n-samples"][TASK] == {"original": 20, "effective": 20}
    assert res["configs"][TASK]["scoring"] == "lm-eval" and res["n-samples"]["aloekit_demo"]["effective"] == 20
    assert "| aloekit_arc_style | 20 | acc |" in (ours / "results.md").read_text()
    manifest = json.loads((ours / "manifest.json").read_text())
    assert manifest["metrics"][f"{TASK}.acc"] == res["results"][TASK]["acc,none"]
    assert {"samples_aloekit_demo", f"samples_{TASK}"} <= set(manifest["outputs"])


def test_a_folder_of_task_yamls_runs_its_tasks(tasks_dir):
    from aloekit.eval import harness as H
    tasks = H.load([str(tasks_dir)])
    assert sorted(tasks.names) == ["aloekit_arc_gen", "aloekit_arc_style", "aloekit_passages"]


def test_bad_task_yaml_is_one_line_naming_the_file(tmp_path, tiny_dir):
    bad = tmp_path / "broken.yaml"
    bad.write_text("task: broken\ndataset_path: json\n  output_type: [\n")
    line = one_line_error(cli("eval", "--tasks", str(bad), "--model", str(tiny_dir)), str(bad))
    assert "line 3" in line


@pytest.mark.parametrize("case", ["unknown task", "data file missing", "no task key", "unknown model arg",
                                  "model arg value", "strategy", "not hf"])
def test_bad_lm_eval_input_stops_before_the_model(case, tasks_dir, tmp_path):
    """One UserError each (the CLI prints it as one line, exit 2), before any model is loaded."""
    from aloekit.cli import _AloekitHF
    from aloekit.config import ModelConfig
    from aloekit.errors import UserError
    from aloekit.eval import EvalConfig, run

    yaml = str(tasks_dir / f"{TASK}.yaml")
    kw, want, answerer = {"tasks": [yaml]}, "", None
    if case == "unknown task":
        kw, want = {"tasks": ["aloekit_demo", "no_such_task_xyz"]}, "unknown task 'no_such_task_xyz'"
    elif case == "data file missing":
        moved = tmp_path / "moved.yaml"
        moved.write_text((tasks_dir / f"{TASK}.yaml").read_text().replace(str(tasks_dir), str(tmp_path / "gone")))
        kw, want = {"tasks": [str(moved)]}, str(moved)
    elif case == "no task key":
        odd = tmp_path / "odd.yaml"
        odd.write_text("dataset_path: json\n")
        kw, want = {"tasks": [str(odd)]}, "neither a `task:` nor a `group:` key"
    elif case == "unknown model arg":
        kw["lm_eval_model_args"], want = {"max_lenght": 64}, "max_lenght: not a model argument of aloekit-hf"
    elif case == "model arg value":
        kw["lm_eval_model_args"], want = {"max_length": "long"}, "max_length takes a number"
    elif case == "strategy":
        answerer, want = type("A", (), {"name": "cot"})(), "--strategy cot"
    else:
        kw["model"], want = ModelConfig(name="x", backend="openai", base_url="http://x"), "hf backend"
    with pytest.raises(UserError, match=None) as e:
        run(EvalConfig(**kw), backend=object(), answerer=answerer, lm_eval_model=_AloekitHF())
    assert want in str(e.value) and "\n" not in str(e.value)


def test_without_the_lm_eval_model_an_unknown_name_says_so():
    from aloekit.errors import UserError
    from aloekit.eval import EvalConfig, run
    with pytest.raises(UserError, match="not an aloekit task.*aloekit eval --list"):
        run(EvalConfig(tasks=["arc_easy"]), backend=object())


# ---------- item 4: lm-eval's file schema ----------

def test_results_json_has_every_key_lm_eval_writes(ours, theirs):
    res = json.loads((ours / "results.json").read_text())
    ref, _, _ = theirs
    assert set(ref) <= set(res), set(ref) - set(res)
    assert {"aloekit_versions", "tasks_skipped", "subjects", "timings_s"} <= set(res)  # ours, added
    assert "torch" in res["aloekit_versions"] and res["versions"]["aloekit_demo"] == 1.0
    assert set(ref["config"]) <= set(res["config"]), set(ref["config"]) - set(res["config"])
    for task in ("aloekit_demo", TASK):  # aloekit's own task and lm-eval's, at every level
        assert set(ref["results"][TASK]) <= set(res["results"][task])
        assert set(ref["configs"][TASK]) <= set(res["configs"][task]), set(ref["configs"][TASK]) - set(
            res["configs"][task])
        for key in ("versions", "n-shot", "higher_is_better", "n-samples", "task_hashes"):
            assert task in res[key], key
        assert set(ref["n-samples"][TASK]) <= set(res["n-samples"][task])
    assert res["higher_is_better"]["aloekit_demo"] == {"acc": True, "acc_norm": True}
    assert res["n-shot"]["aloekit_demo"] == 0 and res["results"]["aloekit_demo"]["sample_len"] == 20
    assert res["configs"]["aloekit_demo"]["output_type"] == "multiple_choice"
    # the same hashes as lm-eval for the task lm-eval ran, computed the same way for aloekit's
    assert res["task_hashes"][TASK] == ref["task_hashes"][TASK]


def test_samples_rows_have_every_key_lm_eval_writes(ours, theirs):
    _, _, ref_file = theirs
    ref = rows(ref_file)
    mine = rows(ours / "samples_aloekit_demo.jsonl")
    for row in mine + rows(ours / f"samples_{TASK}.jsonl"):
        assert set(ref[0]) <= set(row), set(ref[0]) - set(row)
    for a, b in zip(rows(ours / f"samples_{TASK}.jsonl"), ref):
        assert (a["doc_hash"], a["prompt_hash"], a["target_hash"]) == (b["doc_hash"], b["prompt_hash"],
                                                                       b["target_hash"])
        assert a["arguments"] == b["arguments"] and a["target"] == b["target"] and a["doc"] == b["doc"]
    # aloekit's rows in lm-eval's form: one request per option, the scores as lm-eval's [logprob, is_greedy]
    row = mine[0]
    assert list(row["arguments"]) == [f"gen_args_{i}" for i in range(len(row["doc"]["options"]))]
    assert row["arguments"]["gen_args_0"] == {"arg_0": row["doc"]["context"],
                                              "arg_1": " " + row["doc"]["options"][0]}
    assert [float(r[0]) for r in row["filtered_resps"]] == pytest.approx(row["scores"], abs=1e-6)
    assert row["target"] == str(row["gold"]) and row["filter"] == "none" and row["metrics"] == ["acc", "acc_norm"]
    from aloekit.eval.schema import hash_string
    assert row["prompt_hash"] == hash_string(row["doc"]["context"]) and row["target_hash"] == hash_string(
        row["target"])
    assert row["doc_hash"] == hash_string(json.dumps(row["doc"], indent=2, ensure_ascii=False))


def test_lm_eval_readers_load_our_files(ours):
    """lm-eval's table printer reads our results.json (tasks and groups columns); `datasets`, as lm-eval's tracker
    intends for its samples files, loads ours."""
    from datasets import load_dataset
    from lm_eval.utils import make_table
    res = json.loads((ours / "results.json").read_text())
    table = make_table(res)
    assert "aloekit_demo" in table and TASK in table and "acc_norm" in table
    for task in ("aloekit_demo", TASK):
        ds = load_dataset("json", data_files=str(ours / f"samples_{task}.jsonl"), split="train")
        assert len(ds) == 20 and ds[0]["filter"] == "none"


def test_groups_follow_lm_eval(tiny_backend, tmp_path):
    """An aloekit group: results and groups entries with lm-eval's name/alias/sample_len, n-shot and
    higher_is_better propagated to it as lm-eval does."""
    from aloekit.eval import EvalConfig, run
    fix = REPO / "tests" / "fixtures" / "benchmark_data"
    out = run(EvalConfig(tasks=["aloe_medical"], data_dir=str(fix), skip_bad_rows=True, limit=4),
              backend=tiny_backend)
    g = out["groups"]["aloe_medical"]
    assert g["name"] == "aloe_medical" and g["sample_len"] == sum(
        out["n-samples"][m]["effective"] for m in out["group_subtasks"]["aloe_medical"])
    assert out["n-shot"]["aloe_medical"] == 0 and out["higher_is_better"]["aloe_medical"]["acc"] is True
