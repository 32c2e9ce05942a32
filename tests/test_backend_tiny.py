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
    attention = tiny_backend.model.config._attn_implementation
    try:
        tiny_backend.cfg.batch_size = batch_size
        got = tiny_backend.loglikelihood_batch(reqs)
    finally:
        tiny_backend.cfg.batch_size = old
    # scoring flattens its batch through its own attention function and gives generation back its own
    assert tiny_backend.model.config._attn_implementation == attention != "aloekit_packed"
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


SHOTS = " ".join(f"Example {k}: the normal range of serum sodium is 135 to 145 mmol/L." for k in range(8))
SHARED = [[{"role": "system", "content": SHOTS}, {"role": "user", "content": q}]
          for q in ("Which organ makes insulin? A) liver B) pancreas", "Which organ makes insulin? A) pancreas B) liver",
                    "Which vitamin deficiency causes scurvy, a disease of sailors? A) C B) D C) K")]


def test_shared_prefix_generation_equals_plain_generation(tiny_backend, monkeypatch):
    """Members with the same long few-shot prefix (and n samples of one prompt) run the prefix once; greedy outputs
    are those of the plain path, whatever the suffix lengths."""
    enc = [tiny_backend.encode_prompt(p) for p in SHARED]
    assert len({len(e) for e in enc}) > 1  # suffixes of different lengths: padding inside the rows
    groups = tiny_backend._prefix_groups(enc)
    assert len(groups) == 1 and groups[0][0] == [0, 1, 2] and groups[0][1] >= tiny_backend.SHARED_PREFIX_MIN
    calls = []
    orig = type(tiny_backend)._generate_shared
    monkeypatch.setattr(type(tiny_backend), "_generate_shared",
                        lambda self, *a: calls.append(len(a[0])) or orig(self, *a))
    s = SamplingConfig(max_new_tokens=10)
    shared = tiny_backend.generate(SHARED + PROMPTS[-1:], s)
    assert calls == [1]  # one group of three prompts; "Hi" went the plain way
    monkeypatch.setattr(type(tiny_backend), "SHARED_PREFIX_MIN", 10**9)
    plain = tiny_backend.generate(SHARED + PROMPTS[-1:], s)
    assert [[c.text for c in o] for o in shared] == [[c.text for c in o] for o in plain]
    assert [o[0].prompt_tokens for o in shared] == [len(e) for e in enc] + [len(tiny_backend.encode_prompt("Hi"))]


def test_shared_prefix_n_samples_are_seeded_and_distinct(tiny_backend):
    s = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=5)
    a = tiny_backend.generate(SHARED[:1], s, n=4)
    assert len(a[0]) == 4 and len({c.text for c in a[0]}) > 1
    assert [c.text for c in a[0]] == [c.text for c in tiny_backend.generate(SHARED[:1], s, n=4)[0]]


def test_shared_prefix_groups_of_different_lengths_in_one_forward(tiny_backend, monkeypatch):
    """Two groups with prefixes of different lengths share one forward (left-padded prefixes, padding inside the
    rows): greedy outputs still equal the plain path's."""
    other = " ".join(f"Shot {k}: potassium is 3.5 to 5 mmol/L in adults." for k in range(12))
    prompts = SHARED[:2] + [[{"role": "system", "content": other}, {"role": "user", "content": q}]
                            for q in ("Q2 A) a B) b C) c D) d", "Q2 A) d B) c C) b D) a")]
    groups = tiny_backend._prefix_groups([tiny_backend.encode_prompt(p) for p in prompts])
    assert [g[0] for g in groups] == [[0, 1], [2, 3]] and groups[0][1] != groups[1][1]
    monkeypatch.setattr(tiny_backend.cfg, "batch_size", 16)
    s = SamplingConfig(max_new_tokens=10)
    shared = tiny_backend.generate(prompts, s)
    monkeypatch.setattr(type(tiny_backend), "SHARED_PREFIX_MIN", 10**9)
    assert [o[0].text for o in shared] == [o[0].text for o in tiny_backend.generate(prompts, s)]


def test_shared_prefix_group_larger_than_the_batch_is_split(tiny_backend, monkeypatch):
    sizes = []
    orig = type(tiny_backend)._generate_shared
    monkeypatch.setattr(type(tiny_backend), "_generate_shared",
                        lambda self, chunk, *a: sizes.append(sum(len(g[0]) for g in chunk)) or orig(self, chunk, *a))
    monkeypatch.setattr(tiny_backend.cfg, "batch_size", 2)
    s = SamplingConfig(max_new_tokens=6)
    shared = tiny_backend.generate(SHARED, s)
    assert sizes == [2, 1]
    monkeypatch.setattr(type(tiny_backend), "SHARED_PREFIX_MIN", 10**9)
    assert [o[0].text for o in shared] == [o[0].text for o in tiny_backend.generate(SHARED, s)]


def test_row_gumbel_draws_from_the_softmax():
    """argmax(scores + Gumbel noise) is an exact sample of softmax(scores): frequencies over 4000 seeded rows."""
    from aloekit.backends.hf import RowGumbel
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = torch.log(probs).repeat(4000, 1)
    picked = RowGumbel(list(range(4000)))(None, scores).argmax(-1)
    freq = torch.bincount(picked, minlength=4).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03) and freq[3] == 0
    again = RowGumbel(list(range(4000)))(None, scores).argmax(-1)
    assert torch.equal(picked, again)


def test_per_prompt_seeds_make_samples_independent_of_the_batch(tiny_backend, monkeypatch):
    """With sampling.seeds, sample k of a prompt depends on seeds[i] + k only: alone or in a batch, at any batch
    size, through the shared-prefix path or the plain one."""
    def texts(out):
        return [[c.text for c in o] for o in out]
    seeds = [11, 22, 33, 44, 55]
    s = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, seeds=seeds)
    together = texts(tiny_backend.generate(PROMPTS, s, n=2))
    alone = [texts(tiny_backend.generate([p], s.model_copy(update={"seeds": [x]}), n=2))[0]
             for p, x in zip(PROMPTS, seeds)]
    assert together == alone
    assert all(len(set(o)) == 2 for o in together)  # the n samples differ
    # sample k of seed x is sample 0 of seed x + k
    assert [texts(tiny_backend.generate([PROMPTS[0]], s.model_copy(update={"seeds": [11 + k]})))[0][0]
            for k in range(2)] == together[0]
    monkeypatch.setattr(tiny_backend.cfg, "batch_size", 1)
    assert texts(tiny_backend.generate(PROMPTS, s, n=2)) == together
    monkeypatch.setattr(tiny_backend.cfg, "batch_size", 8)
    s3 = s.model_copy(update={"seeds": seeds[:3]})
    shared = texts(tiny_backend.generate(SHARED, s3, n=2))
    monkeypatch.setattr(type(tiny_backend), "SHARED_PREFIX_MIN", 10**9)
    assert texts(tiny_backend.generate(SHARED, s3, n=2)) == shared
    assert texts(tiny_backend.generate(SHARED, s3.model_copy(update={"seeds": [1, 2, 3]}), n=2)) != shared
    with pytest.raises(ValueError, match="3 seeds for 5 prompts"):
        tiny_backend.generate(PROMPTS, s3)


@pytest.mark.parametrize("sampling", [  # (the tiny random model's greedy rows are all alike: none would stop alone)
    SamplingConfig(max_new_tokens=10, temperature=1.0, seeds=[3, 4, 5]),
    SamplingConfig(max_new_tokens=10, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.3, seeds=[3, 4, 5])])
def test_shared_prefix_rows_that_finish_leave_the_batch(tiny_backend, monkeypatch, sampling):
    """A row that reaches end-of-text leaves the shared-prefix batch (its cache rows dropped); the rows left go on
    exactly as transformers' generate runs them."""
    rows = []
    orig = type(tiny_backend)._decode
    monkeypatch.setattr(type(tiny_backend), "_decode", lambda self, *a: rows.extend(orig(self, *a)) or rows[-3:])
    tiny_backend.generate(SHARED, sampling)
    # a token one row writes after a few steps and no other row writes: made end-of-text for this test
    stop = next(t for r, row in enumerate(rows) for j, t in enumerate(row) if j >= 2 and t not in row[:j]
                and all(t not in other for o, other in enumerate(rows) if o != r))
    monkeypatch.setattr(tiny_backend.model.generation_config, "eos_token_id", [stop])
    shared = tiny_backend.generate(SHARED, sampling)
    assert "stop" in {o[0].finish_reason for o in shared} and "length" in {o[0].finish_reason for o in shared}
    monkeypatch.setattr(type(tiny_backend), "SHARED_PREFIX_MIN", 10**9)
    plain = tiny_backend.generate(SHARED, sampling)
    assert [(c.text, c.completion_tokens, c.finish_reason) for o in shared for c in o] == \
           [(c.text, c.completion_tokens, c.finish_reason) for o in plain for c in o]
