"""The hf backend against what users compare it with (issue 18 items 4-5): lm-eval's scores on a tokenizer that adds
BOS (Llama 3 does; SmolLM2 does not), the packed scorer on models it cannot pack for, generate() on a model whose
generation_config asks for more than temperature / top-k / top-p / repetition penalty.
"""

import copy

import pytest
import torch
from conftest import make_tiny_llama

from aloekit.backends.hf import HFBackend, loop_unsupported
from aloekit.config import ModelConfig, SamplingConfig

TOL = 1e-4  # fp32, same weights: only the batch layout differs

# contexts as the tasks build them, plus lm-eval's special cases: an empty context, a context ending in a space (moved
# onto the continuation), a context that starts with the BOS text (a rendered chat template: no second BOS)
PAIRS = [
    ("Question: Which vitamin deficiency causes scurvy?\nAnswer:", [" Vitamin C", " Vitamin D", " Iron", " Folate"]),
    ("The first-line drug for uncomplicated hypertension is ", ["a thiazide", "a statin", "insulin"]),
    ("", ["The patient is stable.", "The the the."]),
    ("<|im_start|>user\nIs aspirin an NSAID?<|im_end|>\n<|im_start|>assistant\n", ["Yes", "No"]),
]


@pytest.fixture(scope="module")
def bos_dir(tmp_path_factory, real_model_dir):
    """A tiny random Llama whose tokenizer adds BOS, as Llama 3's does: the default tokenizer told to."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(real_model_dir, add_bos_token=True)
    assert tok.encode("Hello")[0] == tok.bos_token_id
    out = tmp_path_factory.mktemp("tiny_bos")
    make_tiny_llama(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def lm_eval_scores(model_dir, pairs):
    """lm-eval's own hf model: loglikelihood of every (context, continuation)."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=8, device="cpu")
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=i)
            for c, conts in pairs for i, x in enumerate(conts)]
    flat = [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
    out, k = [], 0
    for _, conts in pairs:
        out.append(flat[k:k + len(conts)])
        k += len(conts)
    return out


def backend(model_dir, **kw) -> HFBackend:
    return HFBackend(ModelConfig(name=str(model_dir), dtype="float32", device="cpu", **kw))


def test_scores_equal_lm_eval_on_a_tokenizer_that_adds_bos(bos_dir):
    """Same log-likelihoods (1e-4) and predictions as lm-eval's hf on every request; with BOS turned off against
    the tokenizer's default the scores move (what the check would catch)."""
    theirs = lm_eval_scores(bos_dir, PAIRS)
    ours = backend(bos_dir).loglikelihood_batch(PAIRS)
    for a, b in zip(ours, theirs):
        assert max(abs(x - y) for x, y in zip(a, b)) < TOL, (a, b)
        assert a.index(max(a)) == b.index(max(b))
    no_bos = backend(bos_dir, add_bos_token=False).loglikelihood_batch(PAIRS)
    assert max(abs(x - y) for a, b in zip(no_bos, theirs) for x, y in zip(a, b)) > 1e-2


def test_bos_policy_follows_the_tokenizer_and_the_override(bos_dir, real_model_dir):
    b = backend(bos_dir)
    bos = b.tok.bos_token_id
    ctx, cont = b.encode_pair("Question: why?\nAnswer:", " because")
    assert ctx[0] == bos and bos not in ctx[1:] and cont == b.tok.encode(" because", add_special_tokens=False)
    ctx, _ = b.encode_pair("<|im_start|>user\nhi", " there")  # starts with the BOS text: none added
    assert ctx.count(bos) == 1
    assert b.encode_pair("", "Hello")[0] == [bos]  # an empty context is the prefix token
    assert backend(bos_dir, add_bos_token=False).encode_pair("Question: why?\nAnswer:", " because")[0][0] != bos
    plain = backend(real_model_dir)  # SmolLM2 as shipped adds none
    assert plain.encode_pair("Question: why?\nAnswer:", " because")[0][0] != plain.tok.bos_token_id
    assert backend(real_model_dir, add_bos_token=True).encode_pair("Q:", " a")[0][0] == plain.tok.bos_token_id


def test_lm_eval_model_packs_a_bos_tokenizer_when_the_backend_tokenizes_the_same(bos_dir):
    """aloekit-hf uses the packed scorer where the backend's tokens equal lm-eval's (probe requests), and falls back
    to lm-eval's own way where they do not."""
    pytest.importorskip("lm_eval")
    from aloekit.lmeval.model import model_class
    cls = model_class()
    assert cls(pretrained=str(bos_dir), dtype="float32", batch_size=8).packed_ok
    other = backend(bos_dir, add_bos_token=False)
    assert not cls(pretrained=str(bos_dir), dtype="float32", batch_size=8, backend=other).packed_ok


def reference_scores(model, b: HFBackend, pairs):
    """One plain forward per (context, continuation) through the model's own attention."""
    out = []
    for context, conts in pairs:
        row = []
        for cont in conts:
            ctx, ids = b.encode_pair(context, cont)
            with torch.inference_mode():
                logp = torch.log_softmax(model(torch.tensor([ctx + ids])).logits[0].float(), -1)
            row.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(ids)))
        out.append(row)
    return out


def test_packed_scorer_refuses_a_model_whose_attention_bypasses_the_interface(real_tokenizer, capsys):
    """A model whose attention layers hold their own config (a custom modelling file's fixed SDPA) never sees the
    packed plan: packed, its options would attend to each other. The scorer notices, says so, and scores unpacked."""
    normal = make_tiny_llama(real_tokenizer)
    bypass = copy.deepcopy(normal)
    for layer in bypass.model.layers:
        layer.self_attn.config = copy.deepcopy(bypass.config)
        layer.self_attn.config._attn_implementation = "sdpa"
    cfg = ModelConfig(name="tiny", dtype="float32", device="cpu")
    good = HFBackend(cfg, model=normal, tokenizer=real_tokenizer)
    bad = HFBackend(cfg, model=bypass, tokenizer=real_tokenizer)
    ref = reference_scores(normal, good, PAIRS)
    for b in (good, bad):
        got = b.loglikelihood_batch(PAIRS)
        assert max(abs(x - y) for r, g in zip(ref, got) for x, y in zip(r, g)) < TOL
    assert good.packed_scoring and not bad.packed_scoring
    assert "bypasses transformers' attention interface" in capsys.readouterr().err


def test_sliding_window_rows_are_scored_unpacked(real_tokenizer):
    """The plan's masks know no sliding window: a Mistral with a 16-token window scores a longer row unpacked,
    equal to its own forward."""
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(real_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=16, max_position_embeddings=1024,
        pad_token_id=real_tokenizer.pad_token_id)).eval()
    b = HFBackend(ModelConfig(name="tiny", dtype="float32", device="cpu"), model=model, tokenizer=real_tokenizer)
    pairs = PAIRS + [("Patient history: " + "fever, cough and fatigue for three days; " * 4 + "Diagnosis:",
                      [" influenza", " pneumonia"])]  # a context longer than the window
    ref = reference_scores(model, b, pairs)
    got = b.loglikelihood_batch(pairs)
    assert max(abs(x - y) for r, g in zip(ref, got) for x, y in zip(r, g)) < TOL


# ---------- generation: what generate() builds from the model's generation_config ----------

PREFIX = "You are a careful clinical assistant. " * 12  # > SHARED_PREFIX_MIN tokens: the shared-prefix path
PROMPTS = [PREFIX + q for q in ("Name a beta blocker.", "What is a normal heart rate?", "Define sepsis.")]
SETTINGS = dict(no_repeat_ngram_size=2, min_new_tokens=12, suppress_tokens=[11, 13], eos_token_id=[2, 30])


def generate_each(model, tok, prompts, max_new_tokens):
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.inference_mode():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=tok.pad_token_id)
        out.append(tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def test_greedy_generation_equals_generate_with_the_models_generation_config(real_tokenizer):
    model = make_tiny_llama(real_tokenizer, seed=3)
    for k, v in SETTINGS.items():
        setattr(model.generation_config, k, v)
    b = HFBackend(ModelConfig(name="tiny", dtype="float32", device="cpu", batch_size=8), model=model,
                  tokenizer=real_tokenizer)
    assert b.loop_unsupported == ["min_new_tokens", "no_repeat_ngram_size", "suppress_tokens"]
    s = SamplingConfig(temperature=0.0, max_new_tokens=24)
    want = generate_each(model, real_tokenizer, PROMPTS, 24)
    assert [c[0].text for c in b.generate(PROMPTS, s)] == want
    # the decode loop alone (what ran before) ignores these settings and gives other text: the check has teeth
    b.loop_unsupported = []
    assert [c[0].text for c in b.generate(PROMPTS, s)] != want


def test_the_default_models_generation_config_keeps_the_fast_loop(real_model_dir):
    from transformers import GenerationConfig
    assert loop_unsupported(GenerationConfig.from_pretrained(real_model_dir)) == []
    assert loop_unsupported(GenerationConfig(num_beams=4, typical_p=0.9)) == ["num_beams", "typical_p"]
