"""Install what you use: the core imports no extra, and a command whose extra is missing says which to install.

A missing package is simulated with `sys.modules[name] = None` (then both `import name` and find_spec fail), in a
subprocess running the CLI the way a user does.
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from aloekit.errors import UserError
from aloekit.extras import EXTRAS, require

# what only an extra installs (import names), plus datatrove's loguru
EXTRA_ONLY = sorted({m for mods in EXTRAS.values() for m in mods} | {"loguru"})


def run_without(missing, *args):
    code = (f"import sys\nfor m in {list(missing)!r}: sys.modules[m] = None\n"
            f"sys.argv = ['aloekit', *{list(args)!r}]\nfrom aloekit.cli import main\nmain()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)


def one_line_error(r) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_require_names_the_missing_modules_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(UserError) as e:
        require("retrieval", what="knn")
    assert str(e.value) == "knn needs the 'retrieval' extra (faiss not installed): pip install 'aloekit[retrieval]'"
    require("retrieval", "sentence_transformers", what="knn")  # only the modules asked for


@pytest.mark.parametrize("missing,verb,config,extra", [
    ("trl", "train sft", "configs/train/sft_demo.yaml", "train"),
    ("mergekit", "merge", "configs/merge_demo.yaml", "merge"),
    ("datasketch", "data build", "configs/data_demo.yaml", "data"),
])
def test_verb_without_its_extra(tmp_path, missing, verb, config, extra):
    r = run_without([missing], *verb.split(), config, "--set", f"output={tmp_path / 'o'}")
    assert one_line_error(r) == (f"error: aloekit {verb} needs the '{extra}' extra ({missing} not installed): "
                                 f"pip install 'aloekit[{extra}]'")
    assert not (tmp_path / "o").exists()


def test_report_to_names_the_tracking_extra(tmp_path):
    r = run_without(["wandb"], "train", "dpo", "configs/train/dpo_demo.yaml", "--set", "report_to=[wandb]",
                    "--set", f"output={tmp_path / 'o'}")
    line = one_line_error(r)
    assert "report_to: wandb" in line and "pip install 'aloekit[tracking]'" in line


def test_recipe_checks_every_stage_before_the_first_runs(tmp_path):
    """The demo's merge stage comes third: without mergekit the run stops before the data stage starts."""
    r = run_without(["mergekit"], "run", "configs/demo.yaml", "--output", str(tmp_path / "run"))
    line = one_line_error(r)
    assert line.startswith("error: stages.merge") and "pip install 'aloekit[merge]'" in line
    assert not (tmp_path / "run").exists()


def test_core_imports_no_extra():
    """Every aloekit module imports with the extras' packages unavailable (they are imported on use only)."""
    code = f"""
import importlib, json, pkgutil, sys
BLOCKED = {EXTRA_ONLY!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import aloekit
failed = {{}}
for m in pkgutil.walk_packages(aloekit.__path__, "aloekit."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed[m.name] = repr(e)
loaded = sorted({{k.split(".")[0] for k in sys.modules}} & set(BLOCKED))
print(json.dumps({{"failed": failed, "loaded": loaded, "n": len([k for k in sys.modules if k.startswith("aloekit")])}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["failed"] == {} and res["loaded"] == [], res
    assert res["n"] > 50  # the walk reached the stage packages (cli, train, merge, medprompt, ...)


def test_help_without_any_extra():
    r = run_without(EXTRA_ONLY, "--help")
    assert r.returncode == 0, r.stderr
    for verb in ("eval", "train", "merge", "medprompt", "run"):
        assert verb in r.stdout
