"""The vllm backend against a fake `vllm` package (vLLM is GPU-only and not installed here): the engine settings
reach `vllm.LLM` by name, data parallelism splits prompts among engine processes on their own GPUs and puts the
answers back in order, the same as one engine, and the settings are validated. What vLLM does with them is not
tested here (no GPU, no vLLM)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from aloekit.config import GenerateConfig, ModelConfig, SamplingConfig, VLLMSettings, load_config
from aloekit.errors import UserError

# Written to disk, not put in sys.modules: data-parallel engines are spawned processes, which import `vllm`
# afresh from sys.path. Each LLM(...) and generate() call appends a line to $FAKE_VLLM_LOG.
FAKE_VLLM = textwrap.dedent('''
    import json, os
    from types import SimpleNamespace

    def _log(**rec):
        with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
            f.write(json.dumps({**rec, "pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class _Tok:
        bos_token_id, eos_token_id = 1, 2

        def __call__(self, text, add_special_tokens=True):
            return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + [ord(c) for c in text])

        def encode(self, text, add_special_tokens=True):
            return self(text, add_special_tokens).input_ids

        def decode(self, ids):
            return "".join({1: "<s>", 2: "</s>"}.get(i) or chr(i) for i in ids)

        def apply_chat_template(self, chat, tokenize=False, add_generation_prompt=True):
            text = "".join(f"<{m['role']}>{m['content']}" for m in chat)
            return text + ("<assistant>" if add_generation_prompt else "")

    class LLM:
        def __init__(self, **kw):
            _log(init=kw)
            fail_on = os.environ.get("FAKE_VLLM_FAIL_ON")
            if fail_on is not None and fail_on == os.environ.get("CUDA_VISIBLE_DEVICES"):
                raise RuntimeError("CUDA out of memory (fake)")

        def get_tokenizer(self):
            return _Tok()

        def generate(self, reqs, params, use_tqdm=True):
            _log(generate=len(reqs))
            params = params if isinstance(params, list) else [params] * len(reqs)
            out = []
            for r, p in zip(reqs, params):
                ids = r["prompt_token_ids"]
                text = "".join(chr(i) for i in ids if i > 2)
                # an answer that depends on the prompt and the request's seed only, never on the engine or batch
                outs = [SimpleNamespace(text=f"{text}|seed={p.seed}|k={k}|t={p.temperature}",
                                        token_ids=list(range(k + 1)), finish_reason="length") for k in range(p.n)]
                lp = [None] + [{t: SimpleNamespace(logprob=-t / 1000)} for t in ids[1:]]
                out.append(SimpleNamespace(prompt_token_ids=ids, outputs=outs, prompt_logprobs=lp))
            return out
''')


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkgs" / "vllm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))
    log = tmp_path / "vllm_calls.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a local HF folder: resolve() takes it as it is
    sys.modules.pop("vllm", None)
    yield {"model": str(model), "log": log}
    sys.modules.pop("vllm", None)  # later tests must see that vLLM is not installed


def calls(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []


def backend(model: str, **vllm):
    from aloekit.backends import load_backend
    return load_backend(ModelConfig(name=model, backend="vllm", dtype="bfloat16", vllm=vllm or None))


PROMPTS = ["What is a fever?", [{"role": "user", "content": "Is ibuprofen safe?"}], "a", "bb", "ccc", "dddd", "eeeee"]


def test_settings_reach_llm_by_name(fake_vllm):
    be = backend(fake_vllm["model"], tensor_parallel_size=4, pipeline_parallel_size=2, gpu_memory_utilization=0.85,
                 max_model_len=8192, enable_prefix_caching=False)
    (init,) = [c["init"] for c in calls(fake_vllm["log"]) if "init" in c]
    assert init == {"model": fake_vllm["model"], "dtype": "bfloat16", "seed": 0, "tensor_parallel_size": 4,
                    "pipeline_parallel_size": 2, "gpu_memory_utilization": 0.85, "enable_prefix_caching": False,
                    "max_model_len": 8192}
    out = be.generate(["hi"], SamplingConfig(max_new_tokens=5, seed=7), n=2)
    assert [c.text for c in out[0]] == ["hi|seed=7|k=0|t=0.0", "hi|seed=7|k=1|t=0.0"]
    assert out[0][1].completion_tokens == 2 and out[0][0].finish_reason == "length"
    be.close()


def test_defaults_without_settings_are_the_old_engine(fake_vllm):
    """No `vllm:` block: one engine with prefix caching, vLLM's own memory share, the model's context length."""
    backend(fake_vllm["model"])
    (init,) = [c["init"] for c in calls(fake_vllm["log"]) if "init" in c]
    assert init == {"model": fake_vllm["model"], "dtype": "bfloat16", "seed": 0, "tensor_parallel_size": 1,
                    "pipeline_parallel_size": 1, "gpu_memory_utilization": 0.9, "enable_prefix_caching": True}


def test_data_parallel_engines_split_prompts_and_match_one_engine(fake_vllm, monkeypatch):
    """3 engines x tp 2 on GPUs 4-9: each engine process sees its own two GPUs, gets a contiguous share of every
    call, and the answers (per-prompt seeds, n>1, log-likelihoods) are the ones a single engine gives."""
    sampling = SamplingConfig(max_new_tokens=8, temperature=0.7, seeds=[10, 11, 12, 13, 14, 15, 16])
    conts = [("The answer is", [" A", " B"]), ("Q: x\nA:", [" yes", " no", " maybe"]), ("", ["z"])]
    one = backend(fake_vllm["model"])
    want_gen, want_ll = one.generate(PROMPTS, sampling, n=2), one.loglikelihood_batch(conts)
    want_one = one.generate(["only one"], SamplingConfig())
    fake_vllm["log"].unlink()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7,8,9")
    dp = backend(fake_vllm["model"], tensor_parallel_size=2, data_parallel_size=3)
    try:
        assert dp.generate(PROMPTS, sampling, n=2) == want_gen
        assert dp.loglikelihood_batch(conts) == want_ll
        assert dp.generate(["only one"], SamplingConfig()) == want_one
        assert dp.generate([], sampling.model_copy(update={"seeds": []})) == []
    finally:
        dp.close()
    log = calls(fake_vllm["log"])
    inits = sorted((c["cuda"], c["init"]["tensor_parallel_size"]) for c in log if "init" in c)
    assert inits == [("4,5", 2), ("6,7", 2), ("8,9", 2)]
    by_pid = {c["pid"]: c["cuda"] for c in log if "init" in c}
    assert len(by_pid) == 3 and all(c["cuda"] == by_pid[c["pid"]] for c in log)  # one process per engine
    gens = [(c["cuda"], c["generate"]) for c in log if "generate" in c]
    # 7 prompts -> 3, 2, 2; 6 scored continuations over 3 requests -> 2, 3, 1; one prompt -> the first engine only
    assert sorted(gens) == sorted([("4,5", 3), ("6,7", 2), ("8,9", 2), ("4,5", 2), ("6,7", 3), ("8,9", 1),
                                   ("4,5", 1)])
    assert dp.engines == []
    with pytest.raises(RuntimeError, match="closed"):
        dp.generate(["late"])


def test_a_failing_engine_names_its_gpus_and_stops_the_others(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_FAIL_ON", "1")
    with pytest.raises(RuntimeError, match=r"vllm engine 1 \(GPUs 1\) failed: RuntimeError: CUDA out of memory"):
        backend(fake_vllm["model"], data_parallel_size=2)
    pids = [c["pid"] for c in calls(fake_vllm["log"]) if "init" in c]
    assert len(pids) == 2
    for pid in pids:  # the engine that loaded was stopped, not left holding its GPUs
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_too_few_visible_gpus_is_one_line(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    with pytest.raises(UserError, match="needs 4 GPUs, but CUDA_VISIBLE_DEVICES lists 3"):
        backend(fake_vllm["model"], tensor_parallel_size=2, data_parallel_size=2)
    assert calls(fake_vllm["log"]) == []  # refused before any engine started


def test_split_evenly_and_devices():
    from aloekit.backends.vllm import engine_devices, split_evenly
    assert split_evenly(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_evenly(1, 3) == [(0, 1), (1, 1), (1, 1)]
    s = VLLMSettings(tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=2)
    assert s.gpus == 8 and engine_devices(s, None) == ["0,1,2,3", "4,5,6,7"]


@pytest.mark.parametrize("override, fragment", [
    (["model.vllm.tensor_parallel_size=4"],
     "'model': Value error, vllm: engine settings are for backend vllm, but backend is 'hf'"),
    (["model.backend=vllm", "model.vllm.tensor_parallel_size=0"],
     "'model.vllm.tensor_parallel_size': Input should be greater than or equal to 1"),
    (["model.backend=vllm", "model.vllm.gpu_memory_utilization=1.2"],
     "'model.vllm.gpu_memory_utilization': Input should be less than or equal to 1"),
    (["model.backend=vllm", "model.vllm.gpu_memory_utilization=0"],
     "'model.vllm.gpu_memory_utilization': Input should be greater than 0"),
    (["model.backend=vllm", "model.vllm.data_parallel_size=0"],
     "'model.vllm.data_parallel_size': Input should be greater than or equal to 1"),
    (["model.backend=vllm", "model.vllm.max_model_len=0"],
     "'model.vllm.max_model_len': Input should be greater than or equal to 1"),
    (["model.backend=vllm", "model.vllm.tp=2"], "unknown key 'model.vllm.tp'; valid keys here: data_parallel_size"),
])
def test_bad_settings_are_one_line(override, fragment):
    with pytest.raises(UserError) as e:
        load_config(GenerateConfig, None, override)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_unset_settings_leave_dumps_and_stage_keys_as_before():
    assert "vllm" not in ModelConfig().model_dump() and '"vllm":' not in ModelConfig(backend="vllm").model_dump_json()
    cfg = ModelConfig(backend="vllm", vllm={"tensor_parallel_size": 2})
    assert ModelConfig.model_validate(cfg.model_dump()) == cfg


def test_a_dropped_backend_stops_its_engines(fake_vllm):
    """Stages drop backends without close(): the engine processes, and so their GPU memory, must go with it."""
    import gc
    be = backend(fake_vllm["model"], data_parallel_size=2)
    pids = [c["pid"] for c in calls(fake_vllm["log"]) if "init" in c]
    del be
    gc.collect()
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ---------------------------------------------------------------- --dry-run: GPUs and memory per GPU


def dry_run_rows(tmp_path, teacher_vllm: dict, judge_vllm: dict | None = None):
    from aloekit.recipe.config import RecipeConfig
    from aloekit.recipe.estimate import estimate_plan, plan_table
    from aloekit.recipe.plan import build_plan
    recipe = {"name": "vllm-plan", "models": {"base": "smollm2-135m-instruct", "teacher": "org/Teacher-70B",
                                              "judge": "org/Judge-8B"},
              "stages": {
                  "data": {"kind": "data", "config": {
                      "name": "d", "sources": [{"name": "demo_mcq"}],
                      "cot": {"enabled": True, "teacher": {"name": "teacher", "backend": "vllm", "dtype": "bfloat16",
                                                           "vllm": teacher_vllm}}}},
                  "redteam": {"kind": "redteam", "config": {
                      "model": {"name": "judge", "backend": "vllm", "vllm": {"gpu_memory_utilization": 0.5}},
                      "budget": 10, "sources": [{"name": "demo_harmful", "split": "train"}],
                      "attacks": ["programmatic"], "judges": ["marker", "llm"],
                      "llm_judge": {"model": {"name": "judge", "backend": "vllm", "vllm": judge_vllm}}}}},
              "evaluation": {"models": []}}
    plan = build_plan(RecipeConfig.model_validate(recipe), tmp_path / "out")
    rows = estimate_plan(plan)
    return {r["stage"]: r for r in rows}, plan_table(plan, rows, [])


def test_dry_run_gpus_and_memory_per_gpu(tmp_path):
    """70B bf16 = 130.4 GiB of weights: tp 4 puts 32.6 GiB on each GPU, and 0.9 x 80 GiB leaves 37.4 GiB of KV cache
    (2 GiB activations); 2 engines of 4 GPUs are 8 GPUs."""
    rows, table = dry_run_rows(tmp_path, {"tensor_parallel_size": 4, "data_parallel_size": 2, "max_model_len": 4096},
                               {"gpu_memory_utilization": 0.5})
    (teacher,) = rows["data"]["vllm"]
    assert teacher["where"] == "cot.teacher" and teacher["params"] == 70e9 and teacher["gpus"] == 8
    assert teacher["weights_gib_per_gpu"] == pytest.approx(70e9 * 2 / 4 / 2**30)
    assert teacher["kv_cache_gib_per_gpu"] == pytest.approx(0.9 * 80 - 70e9 * 2 / 4 / 2**30 - 2)
    assert not teacher["gpu_memory_stated"]
    line = next(x for x in table.splitlines() if x.startswith("data ") and "cot.teacher" in x)
    assert "70.0B" in line and "4 x 1 x 2" in line and "32.6 GiB" in line and "37.4 GiB" in line and "4096" in line
    assert "h wall on 8 GPU(s)" in table and "DOES NOT FIT" not in table
    # the red team's judge config equals its model's: one engine (the red team judges with the model it loaded)
    assert [e["where"] for e in rows["redteam"]["vllm"]] == ["model"]


def test_dry_run_says_what_does_not_fit(tmp_path):
    rows, table = dry_run_rows(tmp_path, {"tensor_parallel_size": 2, "gpu_memory_gib": 40},
                               {"gpu_memory_utilization": 0.9})
    (teacher,) = rows["data"]["vllm"]
    assert teacher["gpu_memory_stated"] and teacher["kv_cache_gib_per_gpu"] < 0
    msgs = [x.split("DOES NOT FIT: ")[1] for x in table.splitlines() if "DOES NOT FIT" in x]
    assert msgs[0].startswith("cot.teacher: 65.2 GiB of weights per GPU leave no KV cache in 0.9 x 40 GiB; "
                              "raise tensor_parallel_size")
    assert msgs[1].startswith("its 2 engines (model, llm_judge.model) are loaded together and ask for 1.4 of a "
                              "GPU's memory")
    assert len(msgs) == 2
