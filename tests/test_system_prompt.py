"""The system prompt knob (issue #20): a registered name or text in red teaming, Medprompt / `infer`, the recipe's
evaluation, and the label each number was measured with in results, manifests, the report and the model card.
Fakes and bundled sets only: no model is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, one_line_error

from aloekit.backends import Completion
from aloekit.config import load_config
from aloekit.errors import UserError
from aloekit.io import atomic_write_json, atomic_write_text
from aloekit.prompts import MEDICAL_SYSTEM_PROMPT, resolve_system_prompt, system_prompt_label

ALOEKIT = [sys.executable, "-m", "aloekit.cli"]
CUSTOM = "You answer in one short sentence."


def _cli(*args):
    return subprocess.run([*ALOEKIT, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO)


class Recorder:
    """A backend that records every chat it is sent and complies with all of them."""

    name = "recorder"

    def __init__(self):
        self.chats: list[list[dict]] = []

    def generate(self, prompts, sampling=None, n=1):
        self.chats += prompts
        text = "Sure, here is exactly how to do it. First, gather what you need. Second, do it. Answer: A"
        return [[Completion(text, 5, 3, "stop")] * n for _ in prompts]


class NoGeneration:
    def generate(self, prompts, sampling=None, n=1):
        raise AssertionError("generation must not run")


# ---------------------------------------------------------------- names, text, none, unknown


def test_resolve_names_text_none_and_unknown():
    assert resolve_system_prompt("aloe_medical") == MEDICAL_SYSTEM_PROMPT
    assert resolve_system_prompt(CUSTOM) == CUSTOM
    for off in (None, "", "  ", "none", "None"):
        assert resolve_system_prompt(off) is None and system_prompt_label(off) == "none"
    with pytest.raises(UserError, match="system_prompt: unknown system prompt name 'aloe_medicl'; registered: "
                                        "aloe_medical"):
        resolve_system_prompt("aloe_medicl")
    assert system_prompt_label("aloe_medical") == "aloe_medical"
    assert system_prompt_label(CUSTOM) == f"custom: {CUSTOM}"


def test_configs_take_either_key_and_refuse_unknown_names_at_load():
    from aloekit.medprompt.config import DBConfig, MedpromptEvalConfig, StrategyConfig
    from aloekit.recipe.config import EvaluationSpec
    from aloekit.redteam import RedteamConfig
    for cls in (RedteamConfig, StrategyConfig, DBConfig):
        # the field keeps its old name, so config.yaml, caches and recipe keys stay as they were
        assert cls(system="aloe_medical").system == cls(system_prompt="aloe_medical").system == "aloe_medical"
        assert load_config(cls, None, [f"system_prompt={CUSTOM}"]).system == CUSTOM
        with pytest.raises(UserError) as err:
            load_config(cls, None, ["system_prompt=aloe_medicl"])
        assert str(err.value) == ("config: 'system_prompt': unknown system prompt name 'aloe_medicl'; registered: "
                                  "aloe_medical (or write the prompt's text, or 'none')")
        with pytest.raises(UserError, match="^config: give system_prompt or system .its old name., not both$"):
            load_config(cls, None, ["system=aloe_medical", "system_prompt=none"])
    with pytest.raises(UserError, match="config: 'params.system': unknown system prompt name 'typo'"):
        load_config(MedpromptEvalConfig, None, ["params.system=typo"])
    assert EvaluationSpec().system_prompt is None  # off by default
    with pytest.raises(UserError, match="'system_prompt': unknown system prompt name 'medical'"):
        load_config(EvaluationSpec, None, ["system_prompt=medical"])


def test_cli_unknown_name_is_one_line_and_exit_2(tmp_path):
    one_line_error(_cli("redteam", "--system-prompt", "aloe_medicl", "-o", tmp_path / "rt"),
                   "--system-prompt: unknown system prompt name 'aloe_medicl'")
    one_line_error(_cli("redteam", "--set", "system_prompt=aloe_medicl", "-o", tmp_path / "rt"),
                   "'system_prompt': unknown system prompt name 'aloe_medicl'")
    one_line_error(_cli("infer", "--strategy", "cot", "--system-prompt", "aloe_medicl"),
                   "--system-prompt: unknown system prompt name 'aloe_medicl'")
    one_line_error(_cli("medprompt", "eval", "--set", "params.system_prompt=aloe_medicl"),
                   "'params.system_prompt': unknown system prompt name")
    assert not (tmp_path / "rt").exists()


# ---------------------------------------------------------------- red team


def _redteam_cfg(tmp_path, **kw):
    from aloekit.redteam import RedteamConfig
    empty = tmp_path / "no_data"
    empty.mkdir(exist_ok=True)
    base = dict(data_dir=str(empty), model={"name": "fake"}, sampling={"max_new_tokens": 8}, budget=6,
                sources=[{"name": "demo_harmful", "split": "train"}], attacks=["programmatic"], judges=["marker"],
                xstest={"source": "demo_safe", "limit": 2},
                medsafety_refusal={"source": "demo_harmful", "split": "test", "limit": 2})
    return RedteamConfig(**{**base, **kw})


def test_redteam_sends_the_registered_policy_first_and_records_its_label(tmp_path):
    from aloekit.redteam import run
    be = Recorder()
    s = run(_redteam_cfg(tmp_path, system="aloe_medical"), backend=be, output=tmp_path / "a")
    assert len(be.chats) == 10
    assert all(c[0] == {"role": "system", "content": MEDICAL_SYSTEM_PROMPT} and c[1]["role"] == "user"
               for c in be.chats)
    out = tmp_path / "a"
    assert s["system_prompt"] == "aloe_medical"
    assert json.loads((out / "summary.json").read_text())["system_prompt"] == "aloe_medical"
    assert json.loads((out / "manifest.json").read_text())["system_prompt"] == "aloe_medical"
    assert "system prompt `aloe_medical`" in (out / "summary.md").read_text()
    assert yaml.safe_load((out / "config.yaml").read_text())["system"] == "aloe_medical"  # the name, as written
    # the pairs carry the text: DPO scores each answer inside the chat it was given in
    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["system"] == MEDICAL_SYSTEM_PROMPT for p in pairs)

    # the same prompt written out shares the name's generations (they are keyed by the text); its label says custom
    s2 = run(_redteam_cfg(tmp_path, system_prompt=MEDICAL_SYSTEM_PROMPT), backend=NoGeneration(), output=out)
    assert s2["system_prompt"].startswith("custom: You are a careful medical assistant")
    assert s2["attacks"] == s["attacks"]


def test_redteam_without_a_system_prompt_sends_none(tmp_path):
    from aloekit.redteam import run
    be = Recorder()
    s = run(_redteam_cfg(tmp_path, pairs={"enabled": False}), backend=be, output=tmp_path / "a")
    assert s["system_prompt"] == "none" and all(c[0]["role"] == "user" for c in be.chats)


# ---------------------------------------------------------------- Medprompt, infer and eval --strategy


def test_strategy_with_a_registered_name_puts_its_text_first():
    from aloekit.medprompt import StrategyConfig, evaluate
    from aloekit.medprompt.pools import read_questions
    docs = read_questions(json.dumps({"question": "Which vitamin?", "options": ["A", "B"]}), "q.json")
    for strategy in ("zeroshot", "cot"):
        be = Recorder()
        evaluate(be, docs, StrategyConfig(strategy=strategy, system_prompt="aloe_medical"), None, evaluating=False)
        assert be.chats and all(c[0] == {"role": "system", "content": MEDICAL_SYSTEM_PROMPT} for c in be.chats)
    be = Recorder()
    evaluate(be, docs, StrategyConfig(strategy="cot"), None, evaluating=False)
    assert be.chats[0][0]["role"] == "user"


def test_medprompt_eval_records_the_label(tmp_path):
    from aloekit.medprompt.config import MedpromptEvalConfig
    from aloekit.medprompt.runner import run
    cfg = MedpromptEvalConfig(model={"name": "fake"}, task="aloekit_demo", strategies=["zeroshot"], limit=3,
                              params={"system_prompt": "aloe_medical"}, output=str(tmp_path / "mp"))
    be = Recorder()
    out = run(cfg, backend=be)
    assert out["system_prompt"] == "aloe_medical" and len(be.chats) == 3
    assert all(c[0]["content"] == MEDICAL_SYSTEM_PROMPT for c in be.chats)
    assert json.loads((tmp_path / "mp" / "results.json").read_text())["system_prompt"] == "aloe_medical"
    assert json.loads((tmp_path / "mp" / "manifest.json").read_text())["system_prompt"] == "aloe_medical"
    assert "System prompt: aloe_medical" in (tmp_path / "mp" / "results.md").read_text()


def test_eval_strategy_answerer_takes_system_prompt():
    from aloekit.cli import _strategy_answerer
    a = _strategy_answerer("cot", params={"system_prompt": "aloe_medical"})
    assert a.params.system == "aloe_medical" and a.record()["system_prompt"] == "aloe_medical"
    # eval's own knob wins over the params' key; none switches it off
    a = _strategy_answerer("cot", params={"system": "aloe_medical", "members": 3}, system_prompt=CUSTOM)
    assert a.params.system == CUSTOM and a.params.members == 3 and a.record()["system_prompt"] == f"custom: {CUSTOM}"
    assert _strategy_answerer("cot", system_prompt="none").record()["system_prompt"] == "none"
    with pytest.raises(UserError, match="--strategy: 'system': unknown system prompt name 'typo'"):
        _strategy_answerer("cot", system_prompt="typo")


# ---------------------------------------------------------------- the recipe's evaluation


def _recipe(**evaluation):
    from aloekit.recipe import RecipeConfig
    return RecipeConfig.model_validate({
        "name": "t", "models": {"base": "smollm2-135m-instruct"},
        "stages": {"data": {"kind": "data", "config": {"sources": [{"name": "demo_mcq"}]}}},
        "evaluation": {"models": ["base"], "benchmarks": {"tasks": ["aloekit_demo"], "limit": 4},
                       "safety": {"sources": [{"name": "demo_harmful"}], "attacks": ["direct"], "budget": 4,
                                  "xstest": {"source": "demo_safe"},
                                  "medsafety_refusal": {"source": "demo_harmful"}},
                       **evaluation}})


def _eval_parts(recipe, tmp_path) -> dict:
    from aloekit.recipe.evaluation import EvalStageConfig, parts
    from aloekit.recipe.plan import build_plan
    st = build_plan(recipe, tmp_path / "run").by_name()["eval:base"]
    return {part: cfg for part, _, cfg in parts(EvalStageConfig.model_validate(st.config), tmp_path / "e")}


def test_recipe_evaluation_passes_the_system_prompt_to_benchmarks_and_safety(tmp_path, monkeypatch):
    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(tmp_path / "no data here"))
    on = _eval_parts(_recipe(system_prompt="aloe_medical"), tmp_path)
    assert on["benchmarks"].system_prompt == "aloe_medical" and on["safety"].system == "aloe_medical"
    off = _eval_parts(_recipe(), tmp_path)
    assert off["benchmarks"].system_prompt is None and off["safety"].system is None
    # the safety section may set its own prompt, but not next to evaluation.system_prompt
    own = _recipe()
    own.evaluation.safety["system"] = "aloe_medical"
    assert _eval_parts(own, tmp_path)["safety"].system == "aloe_medical"
    both = _recipe(system_prompt="aloe_medical")
    both.evaluation.safety["system_prompt"] = CUSTOM
    with pytest.raises(UserError, match="evaluation.system_prompt and evaluation.safety's own system prompt"):
        _eval_parts(both, tmp_path)


def test_recipe_without_the_knob_keeps_its_stage_keys(tmp_path, monkeypatch):
    from aloekit.recipe.plan import build_plan
    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(tmp_path / "no data here"))
    cfg = build_plan(_recipe(), tmp_path).by_name()["eval:base"].config
    assert "system_prompt" not in cfg["benchmarks"] and not {"system", "system_prompt"} & set(cfg["safety"])
    keys = {s.name: s.key for s in build_plan(_recipe(), tmp_path).stages}
    on = {s.name: s.key for s in build_plan(_recipe(system_prompt="aloe_medical"), tmp_path).stages}
    assert keys["data"] == on["data"] and keys["eval:base"] != on["eval:base"]


def test_evaluation_records_the_labels_its_parts_wrote(tmp_path):
    from aloekit.recipe.evaluation import system_prompts
    atomic_write_json(tmp_path / "benchmarks" / "results.json",
                      {"configs": {"pubmedqa": {"scoring": "loglik", "system_prompt": "none"},
                                   "medqa": {"scoring": "generate", "system_prompt": "aloe_medical"}}})
    atomic_write_json(tmp_path / "safety" / "summary.json", {"system_prompt": "aloe_medical"})
    assert system_prompts(tmp_path) == {"benchmarks": {"pubmedqa": "none", "medqa": "aloe_medical"},
                                        "safety": "aloe_medical"}
    assert system_prompts(tmp_path / "nothing") == {}


# ---------------------------------------------------------------- report and model card


def _results(prompts: dict[str, str], strategy_prompt: str | None = None) -> dict:
    tasks = list(prompts)
    res = {"results": {t: {"alias": t, "acc,none": 0.5, "acc_stderr,none": 0.1} for t in tasks},
           "group_subtasks": {}, "n-samples": {t: {"effective": 10, "skipped": 0} for t in tasks},
           "configs": {t: {"task": t, "scoring": "strategy" if p == "see strategy" else
                           "loglik" if p == "none" else "generate", "system_prompt": p} for t, p in prompts.items()},
           "config": {"scoring": "generate"}}
    if strategy_prompt:
        res["strategy"] = {"name": "cot", "system_prompt": strategy_prompt}
    return res


def _report_run(root: Path) -> Path:
    from aloekit.medprompt.engine import summarize
    stages = []

    def stage(name, kind, metrics, of=None):
        d = root / "stages" / f"{name.replace(':', '-')}-0123456789"
        d.mkdir(parents=True)
        stages.append({"name": name, "kind": kind, "dir": str(d.relative_to(root)), "status": "done",
                       "seconds": 1.0, "of": of, "model_dir": None, "metrics": metrics})
        return d

    summary = {"attacks": {"n": 4, "per_attack": {"direct": {"n": 4}}}, "primary_judge": "llamaguard",
               "throughput": {"completion_tokens": 64}}
    safety = {"safety.asr": 0.25, "safety.refusal_rate": 0.75, "safety.asr.direct": 0.25}
    d = stage("eval:base", "eval", {"pubmedqa.acc": 0.5, "medqa.acc": 0.5, **safety}, of="base")
    atomic_write_json(d / "benchmarks" / "results.json", _results({"pubmedqa": "none", "medqa": "aloe_medical"}))
    atomic_write_json(d / "safety" / "summary.json", {**summary, "system_prompt": "aloe_medical"})
    d = stage("eval:sft", "eval", {"pubmedqa.acc": 0.6, "medqa.acc": 0.4, **safety}, of="sft")
    atomic_write_json(d / "benchmarks" / "results.json",
                      _results({"pubmedqa": "none", "medqa": "see strategy"}, strategy_prompt=f"custom: {CUSTOM}"))
    atomic_write_json(d / "safety" / "summary.json", summary)  # written before the knob: no label
    d = stage("medprompt", "medprompt", {"cot.accuracy": 0.5})
    rows = [{"correct": i < 5, "pred": "A", "members": 1, "members_max": 1, "prompt_tokens": 100,
             "generated_tokens": 50, "seconds": 0.1} for i in range(10)]
    atomic_write_json(d / "eval" / "results.json", {"task": "aloekit_demo", "model": "sft",
                                                    "system_prompt": "aloe_medical",
                                                    "strategies": {"cot": summarize(rows)}})
    atomic_write_json(root / "manifest.json", {
        "kind": "recipe", "name": "prompts", "status": "done", "seed": 0, "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:10:00+00:00", "models": {"base": "smollm2-135m-instruct"}, "final_model": None,
        "stages": stages, "gates": [], "stopped_by": None})
    atomic_write_text(root / "recipe.yaml", yaml.safe_dump({"name": "prompts", "model_card": {"license": "mit"}}))
    return root


def test_report_and_card_state_the_system_prompt_of_each_number(tmp_path):
    from aloekit.report import write_model_card, write_report
    run_dir = _report_run(tmp_path / "run")
    html = write_report(run_dir).read_text()
    assert "n=10, loglik, system prompt: none" in html
    # medqa: generate with the policy on one model, a strategy with its own prompt on the other
    assert f"n=10, generate, system prompt: aloe_medical / custom: {CUSTOM}" in html
    safety = html.split('id="safety"')[1].split("</section>")[0]
    assert "<td>aloe_medical</td>" in safety and "<td>not recorded</td>" in safety
    medprompt = html.split('id="medprompt"')[1].split("</section>")[0]
    assert "system prompt aloe_medical" in medprompt

    card = write_model_card(run_dir).read_text()
    evaluation = card.split("## Evaluation")[1].split("## Safety")[0]
    assert "| benchmark.metric | n | scoring | system prompt |" in evaluation
    assert "| pubmedqa.acc | 10 | loglik | none |" in evaluation
    assert f"| medqa.acc | 10 | strategy | aloe_medical / custom: {CUSTOM} |" in evaluation
    safety = card.split("## Safety")[1].split("## Training")[0]
    assert "Measured with system prompt `aloe_medical` (before) and `not recorded` (after)." in safety
