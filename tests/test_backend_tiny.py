"""The backend protocol on a tiny random Llama (fp32): exact, fast checks."""

import pytest
import torch

from aloekit.config import SamplingConfig

PROMPTS = [
    [{"role": "user", "content": "What is hypertension?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a beta blocker."}],
    "Question: Which organ makes insulin?\nAnswer:",
    [{"role": "user", "content": "A much longer question about the management of chronic kidney disease "
                                 "in an elderly patient with diabetes and heart failure?"}],
    "Hi",
]


def direct_loglik(backend, context, cont):
    ctx, co = backend.encode_pair(context, cont)
    with torch.no_grad():
        lp = torch.log_softmax(backend.model(torch.tensor([ctx + co])).logits.float(), -1)[0]
    return sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(co))


def test_greedy_is_deterministic_and_batch_invariant(tiny_backend):
    s = SamplingConfig(max_new_tokens=12)
    a = tiny_backend.generate(PROMPTS, s)
    b = tiny_backend.generate(PROMPTS, s)
    old = tiny_backend.cfg.batch_size
    try:
        tiny_backend.cfg.batch_size = 1
        c = tiny_backend.generate(PROMPTS, s)
    finally:
        tiny_backend.cfg.batch_size = old
    texts = [[x.text for x in o] for o in a]
    assert texts == [[x.text for x in o] for o in b] == [[x.text for x in o] for o in c]
    assert all(o[0].completion_tokens == 12 and o[0].finish_reason == "length" for o in a)  # random model: no eos


def test_sampling_is_seeded_and_n_samples(tiny_backend):
    s0 = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=0)
    s1 = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=1)
    a = tiny_backend.generate(PROMPTS[:2], s0, n=3)
    assert [len(o) for o in a] == [3, 3]
    assert [[x.text for x in o] for o in a] == [[x.text for x in o] for o in tiny_backend.generate(PROMPTS[:2], s0, n=3)]
    assert [[x.text for x in o] for o in a] != [[x.text for x in o] for o in tiny_backend.generate(PROMPTS[:2], s1, n=3)]
    assert len({x.text for x in a[0]}) > 1  # n samples differ from each other


def test_token_counts(tiny_backend):
    out = tiny_backend.generate(PROMPTS[:1], SamplingConfig(max_new_tokens=5))[0][0]
    assert out.prompt_tokens == len(tiny_backend.encode_prompt(PROMPTS[0]))
    assert out.completion_tokens == 5


def test_chat_template_applied_as_model_defines(tiny_backend):
    chat = PROMPTS[1]
    expected = tiny_backend.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert tiny_backend.render(chat) == expected
    assert expected.startswith("<|im_start|>system\nBe brief.<|im_end|>") and expected.endswith("assistant\n")
    assert tiny_backend.encode_prompt(chat) == tiny_backend.tok(expected, add_special_tokens=False).input_ids


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_loglikelihood_matches_direct_computation(tiny_backend, batch_size):
    reqs = [
        ("Question: What organ produces insulin?\nAnswer:", [" The pancreas", " The liver", " Kidney"]),
        ("Question: Scurvy is caused by a lack of\nAnswer: ", ["vitamin C", "vitamin D"]),  # trailing space moves
        ("Short", [" a", " much longer continuation with many tokens in it"]),
        ("", ["Empty context"]),
    ]
    old = tiny_backend.cfg.batch_size
    try:
        tiny_backend.cfg.batch_size = batch_size
        got = tiny_backend.loglikelihood_batch(reqs)
    finally:
        tiny_backend.cfg.batch_size = old
    for (ctx, conts), scores in zip(reqs, got):
        for c, v in zip(conts, scores):
            assert v == pytest.approx(direct_loglik(tiny_backend, ctx, c), abs=1e-4)
    assert tiny_backend.loglikelihood(*reqs[0]) == pytest.approx(got[0], abs=1e-5)


def test_lm_eval_split_moves_trailing_space(tiny_backend):
    ctx, cont = tiny_backend.encode_pair("Answer: ", "yes")
    assert tiny_backend.tok.decode(ctx) == "Answer:" and tiny_backend.tok.decode(cont) == " yes"


def test_stop_strings_cut_the_text(tiny_backend):
    full = tiny_backend.generate(["Hi"], SamplingConfig(max_new_tokens=12))[0][0].text
    stop = full[3:6]
    assert stop
    cut = tiny_backend.generate(["Hi"], SamplingConfig(max_new_tokens=12, stop=[stop]))[0][0]
    assert cut.text == full[:full.find(stop)] and cut.finish_reason == "stop"
