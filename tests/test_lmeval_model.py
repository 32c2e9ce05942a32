"""`aloekit-hf`, the lm-eval model (aloekit.lmeval), against lm-eval's own `hf` model on a tiny random Llama (fp32).

The tasks are local fixtures (tests/fixtures/lmeval, rows written for these tests): an arc_easy-style
multiple-choice task, a wikitext-style perplexity task (loglikelihood_rolling) and a generation task.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, save_tiny_llama

FIXTURES = REPO / "tests" / "fixtures" / "lmeval"
TOL = 1e-4  # fp32, same model: only the batch layout differs between the two tools
CONTEXT = "The Moon goes around"  # the tiny model's greedy continuation: " around" x6, then " reaction" ...


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
    return save_tiny_llama(tmp_path_factory.mktemp("lmeval_tiny"), real_tokenizer)


@pytest.fixture(scope="module")
def tiny_bos_dir(tiny_dir, tmp_path_factory):
    """The same model with a tokenizer that adds BOS to every text (as Llama 3's does)."""
    from transformers import AutoTokenizer
    out = tmp_path_factory.mktemp("lmeval_tiny_bos")
    shutil.copytree(tiny_dir, out, dirs_exist_ok=True)
    AutoTokenizer.from_pretrained(tiny_dir, add_bos_token=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """The fixture tasks with their data files' absolute paths filled in (lm-eval resolves them from the cwd)."""
    out = tmp_path_factory.mktemp("lmeval_tasks")
    shutil.copytree(FIXTURES, out, dirs_exist_ok=True)
    for y in out.glob("*.yaml"):
        y.write_text(y.read_text().replace("@FIXTURES@", str(out)))
    return out


@pytest.fixture(scope="module")
def task_manager(tasks_dir):
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(tasks_dir), include_defaults=False)


@pytest.fixture(scope="module")
def pair(tiny_dir, tiny_bos_dir):
    """get(bos=False, **model_args) -> (aloekit-hf, lm-eval's hf), same folder (bos: the BOS-adding tokenizer),
    fp32, batch 8; loaded once per arguments."""
    from lm_eval.models.huggingface import HFLM

    from aloekit.lmeval.model import AloekitLM
    cache = {}

    def get(bos=False, **kw):
        key = (bos, *sorted(kw.items()))
        folder = str(tiny_bos_dir if bos else tiny_dir)
        if key not in cache:
            cache[key] = (AloekitLM(pretrained=folder, dtype="float32", batch_size=8, **kw),
                          HFLM(pretrained=folder, dtype="float32", batch_size=8, device="cpu", **kw))
        return cache[key]
    return get


def evaluate(lm, task_manager, task: str, **kw):
    import lm_eval
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=task_manager, log_samples=True,
                                  bootstrap_iters=0, **kw)
    return res["results"][task], sorted(res["samples"][task], key=lambda s: s["doc_id"])


def request(kind, args, doc_id=None):
    from lm_eval.api.instance import Instance
    return Instance(kind, {}, args, 0, metadata=("t", doc_id, 1))


@pytest.mark.parametrize("bos", [False, True], ids=["packed", "bos-tokenizer"])
def test_multiple_choice_same_as_lm_eval_hf(pair, task_manager, monkeypatch, bos):
    """Same log-likelihoods (1e-4), predictions and metrics as lm-eval's hf. All 20 questions go to the packed
    scorer in one call, with a tokenizer that adds BOS too (the backend puts it where lm-eval's hf does)."""
    ours, theirs = pair(bos)
    calls = []
    inner = ours.lm.loglikelihood_batch
    monkeypatch.setattr(ours.lm, "loglikelihood_batch", lambda reqs: calls.append(len(reqs)) or inner(reqs))
    mine, my_samples = evaluate(ours, task_manager, "aloekit_arc_style")
    ref, ref_samples = evaluate(theirs, task_manager, "aloekit_arc_style")
    assert len(my_samples) == len(ref_samples) == 20
    for a, b in zip(my_samples, ref_samples):
        la, lb = [x[0] for x in a["filtered_resps"]], [x[0] for x in b["filtered_resps"]]
        assert a["doc_id"] == b["doc_id"] and len(la) == 4
        assert max(abs(x - y) for x, y in zip(la, lb)) < TOL
        assert np.argmax(la) == np.argmax(lb)
    assert (mine["acc,none"], mine["acc_norm,none"]) == (ref["acc,none"], ref["acc_norm,none"])
    assert ours.packed_ok
    assert calls == [20]


@pytest.mark.parametrize("max_length", [None, 16], ids=["one-window", "windows-of-16"])
def test_rolling_same_as_lm_eval_hf(pair, task_manager, max_length):
    """Perplexity (loglikelihood_rolling): each document's log-likelihood within 1e-4 of lm-eval's hf, whole
    documents in one window and in windows of 16 tokens (all documents but the shortest then span several, the
    last window of each with more context than it predicts)."""
    ours, theirs = pair(**({"max_length": max_length} if max_length else {}))
    texts = [json.loads(line)["text"] for line in (FIXTURES / "passages.jsonl").read_text().splitlines()]
    lengths = [len(ours.tok_encode(t)) for t in texts]
    if max_length:
        assert min(lengths) < max_length and sorted(lengths)[1] > max_length and max(lengths) > 2 * max_length
    else:
        assert max(lengths) < ours.max_length
    mine, my_samples = evaluate(ours, task_manager, "aloekit_passages")
    ref, ref_samples = evaluate(theirs, task_manager, "aloekit_passages")
    assert len(my_samples) == len(ref_samples) == len(texts)
    assert max(abs(a["filtered_resps"][0] - b["filtered_resps"][0]) for a, b in zip(my_samples, ref_samples)) < TOL
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert mine[metric] == pytest.approx(ref[metric], rel=1e-6)


def test_one_continuation_requests_are_scored_with_is_greedy(pair):
    """Requests that are not choices of one document (lambada-style), an empty context, a context longer than
    max_length: lm-eval's numbers, is_greedy included (True for the model's own greedy continuation)."""
    ours, theirs = pair(max_length=24)
    greedy = theirs.generate_until([request("generate_until", (CONTEXT, {"until": [], "max_gen_toks": 3}))])[0]
    long_context = "Question: " + " ".join(["Which organ pumps blood through the human body?"] * 3) + "\nAnswer:"
    pairs = [(CONTEXT, greedy), (CONTEXT, " the Earth"), ("", "Sleep helps the body recover."),
             (long_context, " the heart")]
    reqs = [request("loglikelihood", p, doc_id=k) for k, p in enumerate(pairs)]
    assert len(ours.tok_encode(long_context)) > 24
    mine, ref = ours.loglikelihood(reqs), theirs.loglikelihood(reqs)
    assert [g for _, g in mine] == [g for _, g in ref] == [True, False, False, False]
    assert max(abs(a - b) for (a, _), (b, _) in zip(mine, ref)) < TOL


def test_generate_until_stops_at_until_as_lm_eval_hf(pair, task_manager):
    ours, theirs = pair()
    full = ours.generate_until([request("generate_until", (CONTEXT, {"until": [], "max_gen_toks": 16}))])[0]
    stop = full.split()[-1]
    assert stop != "around" and full.index(stop) > 0  # a word the model reaches only after a few tokens
    kwargs = [{"until": [stop], "max_gen_toks": 16}, {"until": stop}, {"until": [], "max_gen_toks": 4},
              {"until": ["\n\n", stop], "do_sample": False, "temperature": 0.0, "max_new_tokens": 16}]
    reqs = [request("generate_until", (CONTEXT, k)) for k in kwargs]
    got = ours.generate_until(reqs)
    assert got == theirs.generate_until(reqs)
    assert got[0] == got[1] == got[3] == full[:full.index(stop)]
    assert got[2] == " around" * 4  # max_gen_toks
    mine, my_samples = evaluate(ours, task_manager, "aloekit_arc_gen")
    ref, ref_samples = evaluate(theirs, task_manager, "aloekit_arc_gen")
    assert [s["filtered_resps"] for s in my_samples] == [s["filtered_resps"] for s in ref_samples]


def test_chat_template_same_as_lm_eval_hf(pair, task_manager):
    ours, theirs = pair()
    mine, my_samples = evaluate(ours, task_manager, "aloekit_arc_style", apply_chat_template=True, limit=6)
    ref, ref_samples = evaluate(theirs, task_manager, "aloekit_arc_style", apply_chat_template=True, limit=6)
    assert [s["arguments"] for s in my_samples] == [s["arguments"] for s in ref_samples]
    assert my_samples[0]["arguments"][0][0].startswith("<|im_start|>")
    assert max(abs(x[0] - y[0]) for a, b in zip(my_samples, ref_samples)
               for x, y in zip(a["filtered_resps"], b["filtered_resps"])) < TOL


def test_chat_prompts_get_one_bos(pair, monkeypatch):
    """A chat template's prompt starts with the BOS text: lm-eval's hf then adds no BOS, nor does aloekit-hf."""
    ours, theirs = pair(bos=True)
    chat = ours.apply_chat_template([{"role": "user", "content": "What does the heart do?"}])
    assert chat == theirs.apply_chat_template([{"role": "user", "content": "What does the heart do?"}])
    seen = []
    inner = ours.lm.generate
    monkeypatch.setattr(ours.lm, "generate", lambda p, s: seen.extend(inner(p, s)) or seen[-len(p):])
    ours.generate_until([request("generate_until", (p, {"until": [], "max_gen_toks": 2})) for p in (chat, CONTEXT)])
    assert [c[0].prompt_tokens for c in seen] == [theirs.tok_batch_encode([p])[0].shape[1] for p in (chat, CONTEXT)]


def test_sampling_is_seeded(pair):
    ours, _ = pair()
    sample = {"until": [], "max_gen_toks": 8, "do_sample": True, "temperature": 1.0}
    a = ours.generate_until([request("generate_until", (CONTEXT, sample))])
    assert a == ours.generate_until([request("generate_until", (CONTEXT, sample))])
    assert a != ours.generate_until([request("generate_until", (CONTEXT, {"until": [], "max_gen_toks": 8}))])


def test_bad_arguments_are_one_clear_error(tiny_dir, pair):
    from aloekit.lmeval.model import AloekitLM
    with pytest.raises(ValueError, match="unknown model argument.*foo; valid: pretrained"):
        AloekitLM(pretrained=str(tiny_dir), foo=1)
    with pytest.raises(ValueError, match="batch_size='auto' is not supported"):
        AloekitLM(pretrained=str(tiny_dir), batch_size="auto")
    with pytest.raises(ValueError, match="model argument dtype='fp8'"):
        AloekitLM(pretrained=str(tiny_dir), dtype="fp8")
    ours, _ = pair()
    with pytest.raises(ValueError, match="generation_kwargs num_beams not supported"):
        ours.generate_until([request("generate_until", (CONTEXT, {"until": [], "num_beams": 2}))])


def test_registered_by_name_and_run_by_the_cli_wrapper(tiny_dir, tasks_dir, task_manager, tmp_path):
    """`import aloekit.lmeval` registers aloekit-hf for simple_evaluate; `python -m aloekit.lmeval` is lm-eval's
    CLI with it registered (model_args batch_size wins over the CLI's default --batch_size 1)."""
    import lm_eval

    import aloekit.lmeval  # noqa: F401
    args = f"pretrained={tiny_dir},dtype=float32,batch_size=8"
    res = lm_eval.simple_evaluate(model="aloekit-hf", model_args=args, tasks=["aloekit_arc_style"],
                                  task_manager=task_manager, limit=5, bootstrap_iters=0)
    r = subprocess.run([sys.executable, "-m", "aloekit.lmeval", "--model", "aloekit-hf", "--model_args", args,
                        "--tasks", "aloekit_arc_style", "--include_path", str(tasks_dir), "--limit", "5",
                        "--output_path", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert out["results"]["aloekit_arc_style"]["acc,none"] == res["results"]["aloekit_arc_style"]["acc,none"]
    assert out["config"]["aloekit_batch_size"] == 8 and out["config"]["model"] == "aloekit-hf"
