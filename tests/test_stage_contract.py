"""The stage contract (aloekit/stage.py) and its registry (aloekit/recipe/registry.py): every kind a shipped recipe
uses is registered with field paths that exist, stage keys are the ones computed before the registry existed (so
finished run directories are reused), and a stage kind from outside aloekit plugs into `aloekit run` without the
recipe code knowing it. The per-stage run directories of a real recipe run are checked in test_recipe.py."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from pydantic import BaseModel
from typer.testing import CliRunner

from aloekit.config import StrictModel, load_config
from aloekit.errors import UserError
from aloekit.recipe import registry
from aloekit.recipe.config import RecipeConfig
from aloekit.recipe.plan import build_plan
from aloekit.rundir import RunDir
from aloekit.stage import Estimate, Stage

SHIPPED = {"data", "sft", "dpo", "merge", "redteam", "medprompt"}


def shipped_recipes() -> list[tuple[Path, dict]]:
    out = []
    for f in sorted((REPO / "configs").glob("*.yaml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "stages" in data:  # the others are single-stage configs (aloekit data ...)
            out.append((f, data))
    return out


def _field(cls: type, name: str):
    """The model class a field holds (through Optional and list), or None for a plain value."""
    ann = cls.model_fields[name].annotation
    todo = [ann]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        todo += list(typing.get_args(t))
    return None


def path_exists(cls: type, path: str) -> bool:
    for part in path.split("."):
        name = part.removesuffix("[]")
        if cls is None or name not in cls.model_fields:
            return False
        if typing.get_origin(cls.model_fields[name].annotation) is dict:
            return True  # a free-form section validated by the stage itself (medprompt's params: a StrategyConfig)
        cls = _field(cls, name)
    return True


def test_registry_has_every_kind_of_the_shipped_recipes_with_real_field_paths():
    recipes = shipped_recipes()
    assert len(recipes) >= 4
    used = {spec["kind"] for _, r in recipes for spec in r["stages"].values()}
    assert used == SHIPPED and set(registry.kinds()) >= SHIPPED
    assert registry.EVALUATION not in registry.kinds()  # the plan adds evaluations; a recipe cannot declare one
    for kind in [*registry.kinds(), registry.EVALUATION]:
        st = registry.get(kind)
        assert isinstance(st, Stage) and st.kind == kind and callable(st.run) and issubclass(st.config, BaseModel)
        paths = [*st.model_fields, *st.dataset_fields, *filter(None, [st.starts_from, st.merges])]
        # every stage runs or writes a model, but a corpus index (rag_index), which models read
        assert st.model_fields or kind == "rag_index", kind
        for p in paths:
            assert path_exists(st.config, p), f"{kind}: {p} is not a field of {st.config.__name__}"
        assert isinstance(st.estimate(st.validate(_minimal(kind), kind)), Estimate)
    with pytest.raises(UserError, match="unknown stage kind 'nope'; known: data, sft, dpo, merge, redteam"):
        registry.get("nope")


def _minimal(kind: str) -> dict:
    return {"data": {"sources": [{"name": "demo_mcq"}]}, "sft": {"dataset": "d"},
            "dpo": {"stages": [{"name": "s", "dataset": "d"}]}, "merge": {"models": [{"model": "m"}]},
            "eval": {"model": {"name": "m"}, "benchmarks": {"tasks": ["aloekit_demo"]}, "safety": {}},
            "rag_index": {"corpus": ["c.jsonl"]}}.get(kind, {})


def test_recipe_and_report_branch_on_no_stage_kind():
    """What a kind does is its Stage object's business: the recipe runner and the report only ask the registry."""
    found = []
    for f in sorted([*(REPO / "src/aloekit/recipe").glob("*.py"), *(REPO / "src/aloekit/report").glob("*.py")]):
        if f.name == "registry.py":
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"kind (==|!=|in )", line) and "TASKS" not in line:
                found.append(f"{f.name}:{i}: {line.strip()}")
    assert not found, found


# `aloekit run configs/demo.yaml --dry-run` before the stage registry: with no data folder, and with the shared one
# at /work/shared/data (the keys hold the data folder's absolute path, so only that path reproduces them)
KEYS_NO_DATA = {"eval:base": "b91aca7ad8", "data": "2e526a887d", "sft": "56140afd83", "eval:sft": "691c59af9d",
                "merge": "08d58930ae", "eval:merge": "36ec006f96", "dpo1": "3c735a2acc", "eval:dpo1": "322b11c5e7",
                "redteam": "6b05ecf092", "dpo2": "b41624b31c", "eval:dpo2": "23fd5e92c8", "medprompt": "1376624759"}
SHARED_DATA = Path("/work/shared/data")
KEYS_SHARED_DATA = {"eval:base": "2fcdb82aeb", "data": "f108a9f173", "sft": "c0e82769a2", "eval:sft": "d75f245f06",
                    "merge": "3219219493", "eval:merge": "bcfe63533f", "dpo1": "fbdbc8ab4a",
                    "eval:dpo1": "4c3b9b27f9", "redteam": "19427bdf37", "dpo2": "741a8ac39b",
                    "eval:dpo2": "1a668b88d7", "medprompt": "c493e78b42"}


def _keys(monkeypatch, data: Path) -> dict[str, str]:
    monkeypatch.setenv("ALOEKIT_DATA_DIR", str(data))
    recipe = load_config(RecipeConfig, REPO / "tests" / "fixtures" / "demo_recipe_keys.yaml")
    return {s.name: s.key[:10] for s in build_plan(recipe, "runs/demo").stages}


def test_demo_recipe_keeps_its_stage_keys(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # keys do not depend on where aloekit runs
    assert _keys(monkeypatch, tmp_path / "no data here") == KEYS_NO_DATA
    if SHARED_DATA.is_dir():
        assert _keys(monkeypatch, SHARED_DATA) == KEYS_SHARED_DATA


# ---------------------------------------------------------------- a stage kind from outside aloekit


class WordsConfig(StrictModel):
    text: str
    source: str | None = None  # "@stage": another words stage, whose words come first
    seed: int = 0
    output: str = "runs/words"


def run_words(cfg: WordsConfig, inputs: dict[str, Path], out: Path) -> Path:
    rd = RunDir(out, "words", cfg, seed=cfg.seed, inputs=inputs)
    words = cfg.text.split()
    if cfg.source:
        words = (Path(cfg.source) / "words.txt").read_text().split() + words
    (rd.output("words", "words.txt")).write_text(" ".join(words))
    rd.finish(metrics={"words": len(words), "note": "not a number: left out"})
    return out


WORDS = Stage(kind="words", config=WordsConfig, run=run_words, model_fields=(), dataset_fields=("source",),
              estimate=lambda cfg: Estimate(generated_tokens=1000 * len(cfg.text.split())), section="data")


@pytest.fixture
def words_kind():
    registry.register(WORDS)
    yield WORDS
    registry.unregister(WORDS.kind)


def test_a_stage_kind_from_outside_plugs_into_aloekit_run(words_kind, tmp_path):
    from aloekit.cli import app
    out = tmp_path / "out"
    recipe = {"name": "words", "output": str(out), "report": False,
              "stages": {"a": {"kind": "words", "config": {"text": "a b c"}},
                         "b": {"kind": "words", "config": {"text": "d", "source": "@a"}}}}
    path = tmp_path / "words.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    r = runner.invoke(app, ["-q", "run", str(path), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert re.search(r"\nb +words +\w{10} a +.* 1\.0k ", r.stdout), r.stdout  # its own estimate, after a
    r = runner.invoke(app, ["-q", "run", str(path)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    rows = {s["name"]: s for s in m["stages"]}
    assert rows["a"]["metrics"] == {"words": 3.0} and rows["b"]["metrics"] == {"words": 4.0}  # from its manifest
    b_dir = out / rows["b"]["dir"]
    assert (b_dir / "words.txt").read_text() == "a b c d"
    own = json.loads((b_dir / "manifest.json").read_text())
    assert own["inputs"]["a"]["path"] == str(out / rows["a"]["dir"]) and own["outputs"] == {"words": "words.txt"}
    r = runner.invoke(app, ["-q", "run", str(path)])  # finished stages are reused
    assert r.exit_code == 0 and all(s["status"] == "cached" for s in json.loads((out / "manifest.json").read_text())
                                    ["stages"])
    # a model field cannot take it: it writes no model
    recipe["stages"]["sft"] = {"kind": "sft", "config": {"model": "@a", "dataset": "@b"}}
    path.write_text(yaml.safe_dump(recipe))
    r = runner.invoke(app, ["-q", "run", str(path), "--dry-run"])
    assert isinstance(r.exception, UserError) and "'@a' is a words stage, which outputs no model" in str(r.exception)


def test_an_unregistered_kind_is_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"stages": {"a": {"kind": "words", "config": {}}}}))
    with pytest.raises(UserError, match=r"stages.a.kind.*unknown stage kind 'words'; known: data, sft"):
        load_config(RecipeConfig, path)
