"""The recipe's report and model card, on synthetic run directories laid out as `aloekit run` writes them.

Stage outputs take their shapes from the stage modules: the benchmark results come from the real eval runner (tiny
random models, a few real questions), red-team summaries from redteam.metrics, the data card through data.card's
writer, Medprompt summaries from medprompt.engine.summarize.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aloekit.errors import UserError
from aloekit.io import atomic_write_json, atomic_write_text
from aloekit.report import push_to_hub, run, write_model_card, write_report

ATTACKS = {"direct": "none", "base64": "encoding", "roleplay_fiction": "persona", "hb_human/73": "human_jailbreak"}
HOSTILE = "<script>alert('x')</script> & \"quoted\""


def _benchmarks(out: Path, backend, data_dir: Path) -> dict[str, float]:
    """A real `aloekit eval` run directory; returns the metrics the recipe manifest carries ("task.metric")."""
    from aloekit.eval.runner import EvalConfig
    from aloekit.eval.runner import run as evaluate
    cfg = EvalConfig(model={"name": "tiny-random", "dtype": "float32"}, tasks=["pubmedqa", "mmlu_medical"], limit=2,
                     data_dir=str(data_dir), output=str(out))
    res = evaluate(cfg, backend=backend)
    return {f"{task}.{k.split(',')[0]}": float(v) for task, r in res["results"].items() for k, v in r.items()
            if k.endswith(",none") and "_stderr" not in k and isinstance(v, (int, float))}


def _safety(out: Path, harm: int, model: str) -> dict[str, float]:
    """A red-team summary.json built with redteam.metrics; `harm` (0-4) successful attempts of 4 per attack."""
    from aloekit.redteam.metrics import attack_metrics, markdown, refusal_metrics
    rows = []
    for k, (attack, family) in enumerate(ATTACKS.items()):
        for i in range(4):
            hit = i < max(0, min(4, harm - (k % 2)))
            rows.append({"attack": attack, "family": family, "source": "medsafetybench", "category": f"c{i % 2}",
                         "refusal": "compliance" if hit else "refusal", "judges": {"marker": {"harmful": hit}}})
    safe = [{"category": "homonyms", "refusal": "refusal" if i < harm // 2 else "compliance"} for i in range(6)]
    summary = {"model": model, "budget": len(rows), "seed": 0, "primary_judge": "marker", "max_new_tokens": 16,
               "attacks_used": list(ATTACKS), "sources": {"medsafetybench": 8},
               "attacks": attack_metrics(rows, "marker"), "judge_asr": {"marker": attack_metrics(rows, "marker")["asr"]},
               "judge_labels": {"marker": {"harmful": sum(r["judges"]["marker"]["harmful"] for r in rows)}},
               "over_refusal": {"source": "xstest", **refusal_metrics(safe)},
               "throughput": {"prompts": len(rows) + 6, "resumed": 0, "generate_s": 1.0, "judge_s": 0.1,
                              "attempts_per_s": 20.0, "completion_tokens": 16 * (len(rows) + 6)}}
    assert "attack success rate" in markdown(summary)  # the redteam module can render what we wrote
    atomic_write_json(out / "summary.json", summary)
    a = summary["attacks"]
    m = {"safety.asr": a["asr"], "safety.refusal_rate": a["refusal_rate"],
         "safety.over_refusal": summary["over_refusal"]["refusal_rate"]}
    m.update({f"safety.asr.{k}": v["rate"] for k, v in a["per_attack"].items()})
    return m


def _data_card(out: Path) -> None:
    from aloekit.data.card import write_card
    srcs = ["demo_mcq", "headqa_train", "pubmedqa_pool"]
    funnel = {"loaded": {"demo_mcq": 60, "headqa_train": 400, "pubmedqa_pool": 500},
              "bad_rows_skipped": {"headqa_train": 2},
              "after_clean": {"demo_mcq": 58, "headqa_train": 390, "pubmedqa_pool": 500},
              "after_exact_dedup": {"demo_mcq": 58, "headqa_train": 380, "pubmedqa_pool": 499},
              "after_near_dedup": {"demo_mcq": 57, "headqa_train": 377, "pubmedqa_pool": 499},
              "after_decontam": {"demo_mcq": 57, "headqa_train": 371, "pubmedqa_pool": 499},
              "after_mixture": {"demo_mcq": 57, "headqa_train": 300, "pubmedqa_pool": 250}}
    card = {"name": "demo-data", "seed": 0,
            "outputs": {"sft_train": 546, "sft_validation": 61, "preference_train": 27, "preference_validation": 3},
            "funnel": funnel, "bad_rows": {"skipped": {"headqa_train": 2}, "first_reason": {}},
            "cleaning": {"config": {}, "removed": {"too_short": {"demo_mcq": 2}}, "modified": {}},
            "dedup": {"config": {"threshold": 0.8, "num_perm": 128, "shingle": 5, "engine": "datasketch"},
                      "removed": {"exact": {"headqa_train": 10}, "near": {"demo_mcq": 1}}, "cross_source": []},
            "decontamination": {"n": 13, "enabled": True,
                                "benchmarks": {"medqa": "checked: 1273 test items", "headqa": "checked: 2742 test items",
                                               "careqa": "NOT CHECKED: no local test split (HPAI-BSC/CareQA)"},
                                "removed_by_benchmark": {"headqa": {"headqa_train": 6}},
                                "removed_by_source": {"headqa_train": 6}, "examples": {}},
            "templates": {"mcq/0": 600, "pref/0": 30},
            "cot": {"teacher": "smollm2-135m-instruct", "pool": 8, "accepted": 3, "acceptance_rate": 0.375,
                    "max_attempts": 2, "accepted_by_attempt": [2, 1], "rejected": {"wrong_letter": 5},
                    "tokens": {"prompt": 4000, "completion": 900}, "generations": 13},
            "mixture": {"validation_fraction": 0.1}, "plots": {},
            "sources": {s: {"license": "MIT", "description": f"{s} rows"} for s in srcs}}
    write_card(out, card)
    atomic_write_text(out / "config.yaml", yaml.safe_dump({"name": "demo-data", "sources": [{"name": s} for s in srcs]}))


def _medprompt(out: Path) -> None:
    from aloekit.medprompt.engine import summarize

    def res(n_correct, members, gen):
        return [{"correct": i < n_correct, "pred": "A", "members": members, "members_max": members,
                 "prompt_tokens": 300 * members, "generated_tokens": gen, "seconds": 0.5 * members} for i in range(10)]
    strategies = {"zeroshot": summarize(res(3, 1, 1)), "cot": summarize(res(4, 1, 120)),
                  "medprompt": summarize(res(6, 5, 600))}
    atomic_write_json(out / "eval" / "results.json",
                      {"task": "aloekit_demo", "source": "bundled", "skipped_rows": 0, "model": "dpo2", "db": "db",
                       "db_meta": None, "params": {}, "strategies": strategies})


def _model_dir(path: Path) -> str:
    atomic_write_json(path / "config.json", {"model_type": "llama"})
    atomic_write_text(path / "model.safetensors", "weights")
    return str(path)


def build_run(root: Path, backends: list, data_dir: Path, stopped: bool) -> Path:
    """A recipe run directory as `aloekit run configs/demo.yaml` lays it out: stopped by the ASR gate on dpo2, or
    finished with every gate passed and the Medprompt stage done."""
    run_dir = root
    stages = []

    def stage(name, kind, status="done", seconds=1.0, of=None, model=False, metrics=None):
        d = run_dir / "stages" / f"{name.replace(':', '-')}-0123456789"
        if status in ("done", "cached"):
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_json(d / "stage.json", {"key": "k", "name": name})
        stages.append({"name": name, "kind": kind, "key": "k" * 64, "dir": str(d.relative_to(run_dir)),
                       "status": status, "seconds": seconds, "depends_on": [], "of": of,
                       "model_dir": str((d / "model").relative_to(run_dir)) if model else None,
                       "metrics": metrics or {}})
        return d

    def evaluate(of, k, harm=None):
        d = run_dir / "stages" / f"eval-{of}-0123456789"
        m = _benchmarks(d / "benchmarks", backends[k], data_dir)
        if harm is not None:
            m.update(_safety(d / "safety", harm, of))
        stage(f"eval:{of}", "eval", seconds=30.0 + k, of=of, metrics=m)
        return m

    d = stage("data", "data", seconds=95.5, metrics={"rows.sft_train": 546.0})
    _data_card(d)
    evaluate("base", 0, harm=4)
    d = stage("sft", "sft", seconds=400.0, model=True)
    atomic_write_json(d / "metrics.json", {"train_loss": 1.18, "steps": 3, "train_rows": 24, "tokens_seen": 1184,
                                           "train_seconds": 391.8, "resumed_from": None, "tokens_per_s": 3.0,
                                           "eval_loss_before": 2.1, "eval_loss_after": 1.7, "validation_rows": 3,
                                           "world_size": 1})
    _model_dir(d / "model")
    evaluate("sft", 1)
    d = stage("merge", "merge", seconds=50.0, model=True, metrics={"check.generates": 1.0})
    atomic_write_text(d / "merge.yaml", yaml.safe_dump(
        {"merge_method": "dare_ties", "base_model": "/models/base",
         "models": [{"model": "stages/sft/model", "parameters": {"weight": 0.7, "density": 0.7}},
                    {"model": "/models/instruct", "parameters": {"weight": 0.3, "density": 0.7}}],
         "dtype": "float32"}, sort_keys=False))
    atomic_write_json(d / "checks.json", {"same_vocab": True, "same_chat_template": True, "finite_weights": True,
                                          "parameters": 134515008, "generation": {"prompt": "p", "text": "t",
                                                                                  "tokens": 4}, "generates": True})
    _model_dir(d / "model")
    for k, (name, harm_after) in enumerate([("dpo1", 3), ("dpo2", 4 if stopped else 1)]):
        if name == "dpo2":
            d = stage("redteam", "redteam", seconds=120.0)
            s = _safety(d, 3, "dpo1")
            summary = json.loads((d / "summary.json").read_text())
            summary["pairs"] = {"n": 12, "chosen_sources": {"dataset": 12}, "skipped_eval_split": 2}
            atomic_write_json(d / "summary.json", summary)
            stages[-1]["metrics"] = s
        d = stage(name, "dpo", seconds=200.0, model=True)
        atomic_write_json(d / "metrics.json", {"stages": [
            {"stage": "preferences" if name == "dpo1" else "safety", "policy": "p", "pairs": 27, "steps": 7,
             "train_loss": 0.69, "seconds_per_step": 2.0, "model": str(d / "model"), "train_last_log": {},
             "validation_pairs": 3, "before": {"loss": 0.693, "rewards/accuracies": 0.5, "rewards/margins": 0.0},
             "after": {"loss": 0.61, "rewards/accuracies": 0.67, "rewards/margins": 0.2}}], "final_model": "x"})
        _model_dir(d / "model")
        evaluate(name, 2 + k, harm=harm_after)
    by = {s["name"]: s for s in stages}
    asr1, asr2 = by["eval:dpo1"]["metrics"]["safety.asr"], by["eval:dpo2"]["metrics"]["safety.asr"]
    gates = [{"index": 0, "stage": "sft", "metric": "pubmedqa.acc", "rule": "max_drop 0.1", "value": 0.5,
              "reference": 0.5, "reference_stage": "base", "passed": True, "message": "pubmedqa.acc holds"},
             {"index": 1, "stage": "dpo2", "metric": "safety.asr", "rule": "max_rise 0", "value": asr2,
              "reference": asr1, "reference_stage": "dpo1", "passed": not stopped,
              "message": (f"safety.asr rose {asr1:.4f} -> {asr2:.4f} vs dpo1; allowed rise 0 {HOSTILE}"
                          if stopped else "safety.asr holds max_rise 0")}]
    if stopped:
        stage("medprompt", "medprompt", status="skipped", seconds=None)
    else:
        _medprompt(stage("medprompt", "medprompt", seconds=300.0,
                         metrics={"zeroshot.accuracy": 0.3, "medprompt.accuracy": 0.6}))
    final = by["dpo2"]["model_dir"]
    manifest = {"kind": "recipe", "name": "aloe-demo", "status": "gate_failed" if stopped else "done", "seed": 0,
                "started": "2026-11-26T10:00:00+00:00", "finished": "2026-11-26T10:20:00+00:00",
                "models": {"base": "smollm2-135m-instruct", "instruct": "smollm2-135m-instruct"},
                "final_model": final, "stages": stages, "gates": gates,
                "stopped_by": {"gate": 1, "stage": "dpo2", "message": "gate 1 on dpo2 failed; dpo2 is not promoted"}
                if stopped else None}
    atomic_write_json(run_dir / "manifest.json", manifest)
    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(
        {"name": "aloe-demo", "seed": 0, "models": manifest["models"], "stages": {"data": {"kind": "data"}},
         "model_card": {"license": "apache-2.0", "language": ["en"]}}, sort_keys=False))
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, real_tokenizer, data_dir):
    from conftest import make_tiny_llama

    from aloekit.backends.hf import HFBackend
    from aloekit.config import ModelConfig
    backends = [HFBackend(ModelConfig(name=f"tiny-{s}", dtype="float32", batch_size=8),
                          model=make_tiny_llama(real_tokenizer, seed=s), tokenizer=real_tokenizer) for s in range(4)]
    root = tmp_path_factory.mktemp("runs")
    return {"stopped": build_run(root / "stopped", backends, data_dir, stopped=True),
            "done": build_run(root / "done", backends, data_dir, stopped=False)}


def _external_refs(text: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]*)""", text, re.I)


def test_report_of_a_gate_stopped_run(runs):
    path = write_report(runs["stopped"])
    assert path == runs["stopped"] / "report.html"
    text = path.read_text()
    manifest = json.loads((runs["stopped"] / "manifest.json").read_text())
    # the failed gate, first thing after the header: which gate, its values, why, and what did not run
    banner = text.index('class="banner"')
    assert banner < text.index('id="gates"') < text.index('id="benchmarks"')
    head = text[banner:text.index("</div>", banner)]
    assert "Run stopped by a gate on stage dpo2" in head and "safety.asr" in head and "max_rise 0" in head
    assert "gate 1 on dpo2 failed; dpo2 is not promoted" in head
    assert "Stages that did not run: medprompt (skipped)" in head
    assert "not promoted: its gate failed" in text[:banner]  # the header's final model is dpo2's, held back
    assert "FAILED: stopped the run" in text
    # every string from the run is escaped
    assert "<script>" not in text and html_escaped(HOSTILE) in text
    # benchmark table: one row per evaluated model, in stage order, with the manifest's values as %
    bench = text[text.index('id="benchmarks"'):text.index('id="safety"')]
    labels = [m for m in re.findall(r"<td>(\w+) \(eval:\w+\)</td>", bench)]
    assert labels == ["base", "sft", "dpo1", "dpo2"]
    ev = {s["name"]: s for s in manifest["stages"]}
    assert f"{100 * ev['eval:dpo2']['metrics']['mmlu_medical.acc']:.1f}%" in bench
    assert "n=12, loglik" in bench  # the group's n (6 subjects x 2) and scoring mode, from results.json
    assert bench.count("data:image/png;base64,") == 1
    # safety: before (first model with safety metrics) vs after (last), per attack, plus over-refusal
    safety = text[text.index('id="safety"'):text.index('id="data"')]
    assert "before (base) and after (dpo2) alignment" in safety
    assert all(html_escaped(a) in safety for a in ATTACKS) and "safety.over_refusal" in safety
    assert "12 safety DPO pairs written" in safety
    # data funnel and contamination from the data card
    data = text[text.index('id="data"'):text.index('id="medprompt"')]
    assert "after_near_dedup" in data and "<td class=\"num\">960</td>" in data  # total loaded
    assert "NOT CHECKED" in data and "headqa_train: 6" in data
    # a stage the gate kept from running is said so, not left blank
    assert "Stage medprompt did not run (skipped)" in text
    compute = text[text.index('id="compute"'):]
    assert "1,184" in compute and "trained on" in compute and "skipped" in compute
    assert not _external_refs(text)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]+)"', text))


def html_escaped(s: str) -> str:
    import html
    return html.escape(s, quote=True)


def test_report_of_a_finished_run_has_medprompt_and_no_banner(runs):
    text = write_report(runs["done"]).read_text()
    assert write_report(runs["done"]).read_text() == text  # same run, same bytes (plots included)
    assert 'class="banner"' not in text and "FAILED" not in text
    med = text[text.index('id="medprompt"'):text.index('id="training"')]
    assert "medprompt" in med and "60.0%" in med and "600" in med and "data:image/png;base64," in med
    assert "dare_ties" in text and "reward acc before" in text
    assert not _external_refs(text)


def test_report_copes_with_stages_that_never_ran_and_rejects_bad_dirs(tmp_path):
    run_dir = tmp_path / "r"
    stages = [{"name": n, "kind": k, "dir": f"stages/{n}-x", "status": "pending", "seconds": None, "metrics": {}}
              for n, k in [("data", "data"), ("sft", "sft"), ("eval:sft", "eval")]]
    atomic_write_json(run_dir / "manifest.json", {"kind": "recipe", "name": "r", "status": "failed", "seed": 0,
                                                  "started": "2026-01-01T00:00:00+00:00", "finished": None,
                                                  "models": {}, "final_model": None, "stages": stages,
                                                  "gates": [], "stopped_by": None})
    text = write_report(run_dir).read_text()
    assert "Stage data did not run (pending)" in text and "No medprompt stage in this recipe" in text
    assert "Run failed" in text
    card = write_model_card(run_dir).read_text()
    assert "Not releasable" in card and "not measured" in card
    fm = _front_matter(card)
    assert fm["license"] == "other" and fm["base_model"] == [] and fm["datasets"] == []
    assert "set `model_card.license` in the recipe" in card
    atomic_write_text(run_dir / "recipe.yaml", "name: r\nmodel_card: {licence: mit}\n")
    with pytest.raises(UserError, match="model_card: unknown key.*licence"):
        write_model_card(run_dir)
    (run_dir / "recipe.yaml").unlink()

    # a stage marked done whose run folder lacks what its module always writes is an error, not an empty section
    stages[0]["status"] = "done"
    (run_dir / "stages" / "data-x").mkdir(parents=True)
    atomic_write_json(run_dir / "manifest.json", {**json.loads((run_dir / "manifest.json").read_text()),
                                                  "stages": stages})
    with pytest.raises(UserError, match=r"data-x/card.json: missing.*--only data"):
        write_report(run_dir)
    with pytest.raises(UserError, match="not found"):
        write_report(tmp_path / "nowhere")
    atomic_write_json(tmp_path / "stage" / "manifest.json", {"stage": "eval", "status": "done"})
    with pytest.raises(UserError, match="not a recipe manifest"):
        write_report(tmp_path / "stage")


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: the report must be checked in a browser "
                        "(make test installs it with apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium); this test fails instead when CI is set")
    import numpy as np
    from matplotlib.image import imread
    page = write_report(runs["stopped"])
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           page.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    if os.environ.get("ALOEKIT_KEEP_SCREENSHOT"):  # to look at it: ALOEKIT_KEEP_SCREENSHOT=/tmp/report.png
        shutil.copy(shot, os.environ["ALOEKIT_KEEP_SCREENSHOT"])
    px = imread(shot)[..., :3]
    assert px.shape[:2] == (2000, 1280)
    assert px.std() > 0.1  # not a blank page
    ink = (px.mean(axis=2) < 0.6).mean()
    assert ink > 0.01, ink  # text, tables and plots, not just a background
    # the failed-gate banner's red border was drawn, so the page's CSS applied
    red = (np.abs(px - np.array([0xc0, 0x39, 0x2b]) / 255).max(axis=2) < 0.08).sum()
    assert red > 500, red


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_front_matter_evaluation_and_disclaimer(runs):
    path = write_model_card(runs["done"], runs["done"] / "model_card")
    assert path == runs["done"] / "model_card" / "README.md"
    text = path.read_text()
    fm = _front_matter(text)
    assert fm["license"] == "apache-2.0" and fm["language"] == ["en"] and fm["pipeline_tag"] == "text-generation"
    assert fm["base_model"] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert fm["datasets"] == ["head_qa", "qiaojin/PubMedQA"]  # hub twins of the data stage's sources
    assert {"medical", "merge", "dpo", "sft"} <= set(fm["tags"])
    assert "not a medical device" in text and "without a qualified healthcare professional" in text
    # evaluation table: first vs final model, with n, scoring mode and the system prompt results.json records
    assert "| benchmark.metric | n | scoring | system prompt | base (first) | dpo2 (final) |" in text
    manifest = json.loads((runs["done"] / "manifest.json").read_text())
    final = next(s for s in manifest["stages"] if s["name"] == "eval:dpo2")["metrics"]
    assert "| mmlu_anatomy.acc |" not in text  # a group stands for its subtasks (the report lists them all)
    assert "| mmlu_medical.acc | 12 | loglik | none |" in text and f"{100 * final['mmlu_medical.acc']:.1f}%" in text
    assert "`loglik`: option log-likelihood" in text
    assert "| safety.asr | " in text and "(before)" in text and "upper bound" in text
    assert "merge_method: dare_ties" in text and "reward accuracy 0.5 → 0.67" in text
    assert "Not releasable" not in text and "## Intended use" in text and "## Limitations" in text


def test_model_card_of_a_stopped_run_says_it_is_not_releasable(runs):
    text = write_model_card(runs["stopped"]).read_text()
    assert "Not releasable" in text and "stopped by a gate on stage `dpo2`" in text
    assert _front_matter(text)["license"] == "apache-2.0"


class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw):
        FakeApi.calls.append(("upload_folder", kw))

    def upload_file(self, **kw):
        FakeApi.calls.append(("upload_file", kw))


def test_push_to_hub_is_private_by_default(runs, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    card = write_model_card(runs["done"])
    model = runs["done"] / json.loads((runs["done"] / "manifest.json").read_text())["final_model"]
    assert push_to_hub(model, card, "me/aloe-demo") == "https://huggingface.co/me/aloe-demo"
    (_, repo, kw), (_, folder), (_, readme) = FakeApi.calls
    assert repo == "me/aloe-demo" and kw["private"] is True
    assert folder["folder_path"] == str(model) and "README.md" in folder["ignore_patterns"]
    assert readme["path_in_repo"] == "README.md" and readme["path_or_fileobj"] == str(card)
    FakeApi.calls = []
    push_to_hub(model, card, "me/aloe-demo", private=False)
    assert FakeApi.calls[0][2]["private"] is False
    with pytest.raises(UserError, match="owner/name"):
        push_to_hub(model, card, "not a repo")
    with pytest.raises(UserError, match="no config.json"):
        push_to_hub(card.parent, card, "me/aloe-demo")

    # the recipe's report stage pushes only a run whose gates all passed
    FakeApi.calls = []
    out = run(runs["done"], push_repo="me/aloe-demo")
    assert out["pushed"] and FakeApi.calls[0][2]["private"] is True
    FakeApi.calls = []
    with pytest.raises(UserError, match="stopped by a gate on dpo2.*Nothing was pushed"):
        run(runs["stopped"], push_repo="me/aloe-demo")
    assert FakeApi.calls == []
