"""aloekit's medical tasks as lm-eval task YAMLs (src/aloekit/lmeval/tasks): they load in lm-eval's TaskManager, read
the same questions as `aloekit eval`, and lm-eval's own `hf` model scores them as `aloekit eval` does (tiny random
Llama, fp32)."""

import subprocess
import sys

import pytest
from conftest import REPO, save_tiny_llama

from aloekit.lmeval import TASKS_DIR

FIX = REPO / "tests" / "fixtures" / "benchmark_data"
TOL = 1e-4  # fp32, same model: only the batch layout differs between the two tools


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 64-wide model gains nothing from threads; on a busy machine their synchronisation costs seconds."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("lmeval_tasks_tiny"), real_tokenizer)


@pytest.fixture(scope="module")
def hf_lm(tiny_dir):
    from lm_eval.models.huggingface import HFLM
    return HFLM(pretrained=str(tiny_dir), dtype="float32", batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def all_data(tmp_path_factory, data_dir):
    """One data folder with every benchmark of the Aloe set: the shared real files, and the fixtures in the
    original formats for MedQA, CareQA and Spanish HEAD-QA (not in the shared data)."""
    root = tmp_path_factory.mktemp("all_data")
    for sub in ("medmcqa_dev", "pubmedqa_pqal", "mmlu_medical", "headqa_en"):
        (root / sub).symlink_to(data_dir / sub)
    for sub in ("medqa_usmle_4opt", "careqa", "headqa_es"):
        (root / sub).symlink_to(FIX / sub)
    return root


def task_manager(**metadata):
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata or None)


def lm_eval_run(lm, tasks, limit, **metadata):
    import lm_eval
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager(**metadata), limit=limit,
                                   log_samples=True, bootstrap_iters=0)


def aloekit_run(model_dir, tasks, limit, data, **kw):
    from aloekit.config import ModelConfig
    from aloekit.eval.runner import EvalConfig, run
    return run(EvalConfig(model=ModelConfig(name=str(model_dir), dtype="float32", batch_size=8), tasks=tasks,
                          limit=limit, data_dir=str(data), **kw))


def shipped():
    """(file, task or group name) of every task YAML in the package."""
    import yaml
    out = []
    for p in sorted(TASKS_DIR.glob("*.yaml")):
        text = p.read_text().replace("!function", "")
        cfg = yaml.safe_load(text)
        out.append((p, cfg.get("task") if "group" not in cfg else cfg["group"]))
    return out


def test_every_shipped_yaml_loads_in_lm_eval(all_data, monkeypatch):
    """Every YAML is indexed under its name, from our folder, next to lm-eval's own tasks (no name taken over in
    either direction; lm-eval skips a YAML it cannot parse, so a broken one shows as a missing name), and every
    task and group builds, data included, from the original files."""
    from lm_eval.tasks import TaskManager
    files = shipped()
    names = [n for _, n in files]
    assert len(files) == 15 and len(set(names)) == 15 and all(n.startswith("aloe_") for n in names)
    tm = TaskManager(include_path=str(TASKS_DIR))
    for path, name in files:
        entry = tm.task_index[name]
        assert entry.yaml_path.resolve() == path.resolve(), name
    builtin = TaskManager()
    assert not set(names) & set(builtin.all_tasks)

    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(all_data))
    groups = ("aloe_medical", "aloe_mmlu_medical")
    tm = task_manager(skip_bad_rows=True)
    tasks = tm.load([n for n in names if n not in groups])["tasks"]
    assert len(tasks) == 13
    # a task is in one group of a run, so each group is built on its own
    assert set(tm.load(["aloe_medical"])["groups"]) == set(groups)
    assert len(tm.load(["aloe_mmlu_medical"])["tasks"]) == 6
    from aloekit.benchmarks import REGISTRY
    for name, task in tasks.items():
        bench = REGISTRY[task.config.dataset_kwargs["benchmark"]]
        docs = list(task.test_docs())
        assert len(docs) == len(bench.load(None if bench.bundled else all_data, skip_bad=True).docs), name
        assert task.OUTPUT_TYPE == "multiple_choice" and task.config.target_delimiter == bench.delimiter


def test_lm_eval_tasks_path_printed_by_aloekit_eval():
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "eval", "--lm-eval-tasks-path"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(TASKS_DIR) and TASKS_DIR.is_dir()


def test_medmcqa_lm_eval_hf_same_as_aloekit_eval(hf_lm, tiny_dir, data_dir, monkeypatch):
    """`aloe_medmcqa` through lm-eval's own hf model = `aloekit eval --tasks medmcqa --limit 20` on the same
    model: per-option log-likelihoods within 1e-4, the same predictions, acc and acc_norm."""
    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(data_dir))
    res = lm_eval_run(hf_lm, ["aloe_medmcqa"], 20)
    theirs = sorted(res["samples"]["aloe_medmcqa"], key=lambda s: s["doc_id"])
    ours = aloekit_run(tiny_dir, ["medmcqa"], 20, data_dir)
    mine = ours["samples"]["medmcqa"]
    assert len(theirs) == len(mine) == 20
    for a, b in zip(mine, theirs):
        lls = [x[0] for x in b["filtered_resps"]]
        assert a["doc_id"] == b["doc_id"] and a["gold"] == b["target"] and len(lls) == 4
        assert max(abs(x - y) for x, y in zip(a["scores"], lls)) < TOL
        assert a["pred"] == max(range(4), key=lls.__getitem__)
        assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])
    r = res["results"]["aloe_medmcqa"]
    assert (r["acc,none"], r["acc_norm,none"]) == (ours["results"]["medmcqa"]["acc,none"],
                                                 ours["results"]["medmcqa"]["acc_norm,none"])
    # the same prompt, literally: lm-eval's requests are aloekit's (context, " " + option)
    from aloekit.benchmarks import REGISTRY, loglik_request
    q = REGISTRY["medmcqa"].load(data_dir, limit=1).docs[0]
    context, options = loglik_request(q)
    assert [tuple(a) for a in theirs[0]["arguments"]] == [(context, o) for o in options]


def test_aloe_medical_group_same_as_aloekit_eval(hf_lm, tiny_dir, all_data, monkeypatch):
    """The whole Aloe set (3 questions per task; MedQA and CareQA from the fixtures, their bad rows skipped on both
    sides): every task's acc/acc_norm and the group's size-weighted mean as aloekit eval reports them."""
    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(all_data))
    res = lm_eval_run(hf_lm, ["aloe_medical"], 3, skip_bad_rows=True)
    ours = aloekit_run(tiny_dir, ["aloe_medical"], 3, all_data, skip_bad_rows=True)
    members = ours["group_subtasks"]["aloe_medical"]
    assert len(members) == 11
    for m in members:
        for metric in ("acc,none", "acc_norm,none"):
            assert res["results"][f"aloe_{m}"][metric] == ours["results"][m][metric], (m, metric)
    for g in ("aloe_medical", "mmlu_medical"):
        for metric in ("acc,none", "acc_norm,none"):
            assert res["results"][f"aloe_{g}" if g == "mmlu_medical" else g][metric] == \
                pytest.approx(ours["results"][g][metric], abs=1e-12), (g, metric)


def test_medqa_careqa_fixtures_same_docs_and_bad_rows(monkeypatch):
    """Against the fixtures in the original formats: the same questions (text, options, gold, order) as aloekit's
    readers; a bad row stops the load with its file:line, or is skipped with metadata skip_bad_rows."""
    from aloekit.benchmarks import REGISTRY
    from aloekit.errors import UserError
    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(FIX))
    for bench in ("medqa", "careqa"):
        want = REGISTRY[bench].load(FIX, skip_bad=True).docs
        task = task_manager(skip_bad_rows=True).load([f"aloe_{bench}"])["tasks"][f"aloe_{bench}"]
        docs = list(task.test_docs())
        assert [(d["context"], d["options"], d["gold"], d["where"]) for d in docs] == \
            [(q.context, q.options, q.gold, q.where) for q in want]
        assert all(task.doc_to_text(d) == d["context"] and task.doc_to_choice(d) == d["options"] for d in docs)
        with pytest.raises(UserError, match=rf"{bench}.*:\d+: .*--skip-bad-rows"):
            task_manager().load([f"aloe_{bench}"])


def test_missing_file_falls_back_to_the_hub_copy(tmp_path, monkeypatch, caplog):
    """No file under the data folder: the hub copy, read by aloekit's hub builder (MedMCQA's cop 0-3 there)."""
    import aloekit.benchmarks.registry as registry
    from aloekit.lmeval.tasks.utils import load
    asked = []

    def hub_rows(repo, name, split):
        asked.append((repo, name, split))
        rows = [{"question": f"Q{i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": i % 4} for i in range(5)]
        return ((f"{repo}[{split}] row {i}", r) for i, r in enumerate(rows))
    monkeypatch.setattr(registry, "hub_rows", hub_rows)
    with caplog.at_level("WARNING", logger="aloekit.lmeval.tasks"):
        ds = load("medmcqa", data_dir=str(tmp_path))
    assert asked == [("openlifescienceai/medmcqa", None, "validation")]
    assert "medmcqa_dev/dev.json not found; loading the hub copy openlifescienceai/medmcqa" in caplog.text
    assert ds["test"]["gold"] == [0, 1, 2, 3, 0] and ds["test"][0]["context"] == "Question: Q0?\nAnswer:"
    asked.clear()
    load("medmcqa", data_dir=str(REPO), hub="true")  # --metadata hub=true: the hub even with a folder
    assert len(asked) == 1
