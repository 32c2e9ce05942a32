"""The CLI as a user runs it: a subprocess, stdout/stderr, exit codes."""

import json
import os
import subprocess
import sys

import pytest
from conftest import one_line_error as assert_one_line_error

ALOEKIT = [sys.executable, "-m", "aloekit.cli"]


def run(*args, input=None, env=None):
    return subprocess.run([*ALOEKIT, *args], capture_output=True, text=True, input=input, timeout=600,
                          env={**os.environ, **(env or {})})




@pytest.mark.real_model
def test_generate_prints_answer_and_is_repeatable(real_model_dir):
    args = ["generate", "--model", "smollm2-135m-instruct", "--prompt",
            "What are the first-line treatments for hypertension?", "--max-new-tokens", "48", "--seed", "0"]
    a, b = run(*args), run(*args)
    assert a.returncode == 0, a.stderr
    assert len(a.stdout.strip().split()) > 5
    assert a.stdout == b.stdout


def test_unknown_model_exits_2_with_one_line():
    assert_one_line_error(run("generate", "--model", "no-such-model", "--prompt", "hi"), "no-such-model",
                          "aloekit models list")


def test_unknown_config_key_and_bad_yaml(tmp_path):
    assert_one_line_error(run("generate", "-p", "hi", "--set", "model.nmae=x"), "unknown key 'model.nmae'",
                          "name")
    bad = tmp_path / "c.yaml"
    bad.write_text("model: {name: [oops\n")
    assert_one_line_error(run("generate", "-p", "hi", "--config", str(bad)), "c.yaml", "invalid YAML")
    assert_one_line_error(run("generate", "-p", "hi", "--config", str(tmp_path / "none.yaml")), "does not exist")


def test_missing_optional_backend_names_the_extra():
    import importlib.util
    if importlib.util.find_spec("vllm") is None:
        assert_one_line_error(run("generate", "-p", "hi", "--backend", "vllm"), "aloekit[gpu]")
    r = run("generate", "-p", "hi", "--backend", "openai")
    assert_one_line_error(r, "base_url")


def test_unreachable_hub_is_one_line(tmp_path):
    r = run("generate", "-p", "hi", "--model", "some-org/some-model",
            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert_one_line_error(r, "some-org/some-model", "local folder")


def test_models_list_info_and_env(real_model_dir):
    r = run("models", "list", "--json")
    names = [m["name"] for m in json.loads(r.stdout)]
    assert names[0] == "smollm2-135m-instruct" and "llama-3.1-8b-instruct" in names and "qwen2.5-7b" in names
    info = json.loads(run("models", "info", "smollm2-135m-instruct").stdout)
    assert info["prepared"] is True and info["gguf_path"].endswith(".gguf")
    assert_one_line_error(run("models", "info", "nope"), "unknown model 'nope'")
    env = json.loads(run("env").stdout)
    assert env["device"] == "cpu" and "torch" in env["versions"] and "transformers" in env["versions"]
    r = run("models", "list")
    assert "smollm2-135m-instruct" in r.stdout


@pytest.mark.real_model
def test_chat_streams_answers_and_keeps_history(real_model_dir):
    r = run("chat", "--max-new-tokens", "16", input="What is insulin?\n/reset\nAnd glucagon?\n/exit\n")
    assert r.returncode == 0, r.stderr
    answers = [x for x in r.stdout.splitlines() if x.startswith("assistant> ")]
    assert len(answers) == 2 and all(len(a) > len("assistant> ") + 3 for a in answers)


@pytest.mark.real_model
def test_demo_writes_run_directory(tmp_path, real_model_dir):
    out = tmp_path / "demo"
    r = run("--quiet", "demo", "--output", str(out), "--max-new-tokens", "16")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(x["answer"] and x["completion_tokens"] > 0 for x in rows)
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and man["seed"] == 0 and "generate" in man["timings_s"]
    assert "torch" in man["versions"] and (out / "config.yaml").is_file()
