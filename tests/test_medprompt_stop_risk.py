"""The opt-in risky stop (`StrategyConfig.stop_risk`, `vote.overturn_risk`): the risk is the Pólya-urn probability
it claims to be (against a brute-force walk over every future answer sequence, and by hand), δ = 0 is the exact
rule, a larger δ stops no later, and the engine runs and records it."""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

import pytest
from test_medprompt import FixedDB, ScriptedBackend, h, make_docs

from aloekit.medprompt import StrategyConfig, evaluate, summarize
from aloekit.medprompt import vote as V


class First:
    """A tie rule that gives a tie to the lowest option index (vote() sorts the tied options)."""

    def choice(self, seq):
        return seq[0]


class Last:
    def choice(self, seq):
        return seq[-1]


def brute_risk(answers, K, n, tie_rng) -> Fraction:
    """The same model by brute force: walk every sequence of the remaining answers (options and 'no answer'),
    drawing from the urn one member at a time, and add up the sequences whose final winner differs."""
    counts = [sum(a == o for a in answers) + 1 for o in range(n)]
    balls = counts + [sum(not 0 <= a < n for a in answers)]
    now = V.vote(answers, n, tie_rng())[0]
    risk = Fraction(0)
    for seq in itertools.product(range(-1, n), repeat=K - len(answers)):
        b, p = list(balls), Fraction(1)
        for a in seq:
            i = a if a >= 0 else n
            p *= Fraction(b[i], sum(b))
            b[i] += 1
        if p and V.vote(list(answers) + list(seq), n, tie_rng())[0] != now:
            risk += p
    return risk


@pytest.mark.parametrize("K,n", [(3, 2), (4, 3), (5, 3), (5, 4)])
def test_risk_is_the_urn_probability(K, n):
    for tie in (First, Last, functools.partial(V.seeded_rng, 1, "tie")):
        for m in range(1, K):
            for answers in V.all_sequences(m, n):
                if any(a >= 0 for a in answers):  # no leader: risk 1 by definition
                    assert V.overturn_risk(answers, K, n, tie) == brute_risk(answers, K, n, tie), (answers, tie)
        assert V.overturn_risk([-1, -1], K, n, tie) == 1
        assert V.overturn_risk([0] * K, K, n, tie) == 0


def test_risk_by_hand():
    # 2 of 5 members in, both A, 4 options: urn A 3, B C D 1 each (6 balls), 3 members left. The denominator
    # is C(6+3-1, 3) = 56. A keeps the lead unless it gets none of the 3 (weight C(2, 0) = 1) and then:
    #   one other option takes all 3 (weight C(3, 3) = 1, 3 options): 3 -> overturned;
    #   one takes 2, another 1 (weight C(2, 2) * C(1, 1) = 1, 6 ordered pairs): 6 -> a 2-2 tie with A;
    #   1 each: A still leads.
    # A tie rule that gives A the pair: 3/56 (0.054); one that gives it to the other option: 9/56 (0.161).
    assert V.overturn_risk([0, 0], 5, 4, First) == Fraction(3, 56)
    assert V.overturn_risk([0, 0], 5, 4, Last) == Fraction(9, 56)
    # so a unanimous 2 of 5 stops under δ = 0.2 but not under δ = 0.01, whatever the tie rule
    for tie in (First, Last):
        assert V.decided([0, 0], 5, 4, tie, stop_risk=0.2)
        assert not V.decided([0, 0], 5, 4, tie, stop_risk=0.01)
    # a unanimous 3 of 5 is settled already under the exact rule (3 > 0 + 2): risk 0
    assert V.overturn_risk([0, 0, 0], 5, 4, First) == 0 and V.decided([0, 0, 0], 5, 4, First)
    # a unanimous 3 of 7 is not (3 < 0 + 4): urn A 4, B C D 1 (7 balls), 4 left, denominator C(10, 4) = 210;
    # overturn only if A gets none: one other takes all 4 (3 ways, weight 1) or takes 3 and another 1 (6 ordered
    # pairs, weight 1), a 3-3 tie. First: 3/210 = 1/70 (0.014); Last: 9/210 = 3/70 (0.043): stop at δ = 0.05,
    # not at δ = 0.01
    assert V.overturn_risk([0, 0, 0], 7, 4, First) == Fraction(1, 70)
    assert V.overturn_risk([0, 0, 0], 7, 4, Last) == Fraction(3, 70)
    for tie in (First, Last):
        assert V.decided([0, 0, 0], 7, 4, tie, stop_risk=0.05)
        assert not V.decided([0, 0, 0], 7, 4, tie, stop_risk=0.01)
    assert not V.decided([0, 0, 0], 7, 4, First)
    # one answer in (A), 5 members, 4 options: urn A 2, B C D 1 (5 balls), 4 left, denominator C(8, 4) = 70.
    # t more votes for A weigh C(t+1, t) = t + 1; any split of the rest among B C D weighs 1. A keeps it:
    # t = 4: 5; t = 3 (A 4, others 1 vote): 4 * 3 = 12; t = 2 (A 3, others 2 votes, 6 splits): 3 * 6 = 18;
    # t = 1 (A 2, others 3 votes, 10 splits): (1, 1, 1) keeps, 3 x (3, 0, 0) lose, 6 x (2, 1, 0) tie A at 2;
    # t = 0: 4 votes among 3 others put one at 2 > 1, all lose.
    # First wins the ties: 5 + 12 + 18 + 2 * 7 = 49, risk 21/70 = 3/10; Last loses them: 5 + 12 + 18 + 2 = 37,
    # risk 33/70. (The exact rule cannot stop here.)
    assert V.overturn_risk([0], 5, 4, First) == Fraction(3, 10)
    assert V.overturn_risk([0], 5, 4, Last) == Fraction(33, 70)


@pytest.mark.parametrize("K,n", [(3, 3), (4, 3), (5, 3), (5, 4)])
def test_zero_risk_is_the_exact_rule(K, n):
    for tie_seed in range(2):
        tie = functools.partial(V.seeded_rng, tie_seed, "tie", K, n)
        for m in range(K + 1):
            for answers in V.all_sequences(m, n):
                exact = V.decided(answers, K, n, tie)
                assert (V.overturn_risk(answers, K, n, tie) == 0) == exact, answers
                assert V.decided(answers, K, n, tie, stop_risk=0.0) == exact
                assert V.members_needed(answers, K, n, tie, stop_risk=0.0) == V.members_needed(answers, K, n, tie)
        for seq in V.all_sequences(K, n):
            used = V.members_run(seq, K, n, tie)
            # δ -> 0: the same members as the exact rule (the smallest non-zero risk here is far above 1e-9)
            assert V.members_run(seq, K, n, tie, 0.0) == V.members_run(seq, K, n, tie, 1e-9) == used


@pytest.mark.parametrize("K,n,tie_seeds", [(5, 3, 2), (5, 4, 1), (7, 2, 1)])
def test_larger_risk_stops_no_later(K, n, tie_seeds):
    deltas = [0.0, 0.01, 0.05, 0.2, 0.5]
    for tie_seed in range(tie_seeds):
        tie = functools.partial(V.seeded_rng, tie_seed, "tie", K, n)
        changed = {d: 0 for d in deltas}
        for seq in V.all_sequences(K, n):
            full = V.vote(seq, n, tie())[0]
            used = [V.members_run(seq, K, n, tie, d) for d in deltas]
            assert used == sorted(used, reverse=True), (seq, used)
            for d, u in zip(deltas, used):
                changed[d] += V.vote(seq[:u], n, tie())[0] != full
        assert changed[0.0] == 0 and changed[0.5] > 0  # only a risky rule changes answers


def test_unanimous_two_of_five_stops_at_two_members_under_02_not_001():
    for tie in (First, Last):
        assert V.members_run([1, 1, 2, 2, 2], 5, 4, tie, 0.2) == 2  # stopped on A A; the full ensemble says C
        assert V.members_run([1, 1, 2, 2, 2], 5, 4, tie, 0.01) == 5
        assert V.members_run([1, 1, 2, 2, 2], 5, 4, tie) == 5
        assert V.members_run([1, 1, 1, 2, 2], 5, 4, tie, 0.01) == 3  # exact: 3 of 5 settle it


def test_config_and_round_sizes():
    assert StrategyConfig().stop_risk is None and StrategyConfig().stop_rule == "exact"
    assert StrategyConfig(stop_risk=0.05).stop_rule == "risk<=0.05"
    assert StrategyConfig(adaptive=False).stop_rule == "all members"
    for bad in ({"stop_risk": 1.0}, {"stop_risk": -0.1}, {"stop_risk": 0.1, "adaptive": False}):
        with pytest.raises(ValueError):
            StrategyConfig(**bad)
    with pytest.raises(ValueError):
        V.decided([0], 5, stop_risk=0.1)  # the risk needs the tie rule
    # first round: 3 members (exact), 2 under δ = 0.2 (two agreeing answers reach 9/56 < 0.2 at worst)
    assert V.members_needed([], 5, 4, First) == 3
    assert V.members_needed([], 5, 4, Last, stop_risk=0.2) == 2
    assert V.members_needed([], 5, 4, Last, stop_risk=0.01) == 3


def test_engine_risky_stop_matches_replay_and_is_recorded():
    docs = make_docs(60, 4)

    def noisy(q, opts, k, t):
        d = docs[int(q.split()[2])]
        r = h(q, tuple(opts)) % 10
        return d.options[d.gold] if r < 6 else d.options[r % 4]
    full = evaluate(ScriptedBackend(noisy), docs, StrategyConfig(strategy="medprompt", adaptive=False), FixedDB())
    exact = evaluate(ScriptedBackend(noisy), docs, StrategyConfig(strategy="medprompt"), FixedDB())
    assert all(r["stop_rule"] == "all members" for r in full) and all(r["stop_rule"] == "exact" for r in exact)
    assert "stop_risk" not in exact[0] and "mean_stop_risk" not in summarize(exact)
    members = {"exact": [r["members"] for r in exact]}
    for d in (0.0, 0.05, 0.2):
        cfg = StrategyConfig(strategy="medprompt", stop_risk=d)
        res = evaluate(ScriptedBackend(noisy), docs, cfg, FixedDB())
        s = summarize(res)
        assert s["stop_rule"] == f"risk<={d:g}" and all(r["stop_rule"] == s["stop_rule"] for r in res)
        assert all(0 <= r["stop_risk"] <= d or r["members"] == 5 for r in res)
        for r, f, doc in zip(res, full, docs):
            # members answer from their own seeds: the run equals a replay of the full run's answers
            answers = ["ABCD".index(c["answer"]) if c["answer"] else -1 for c in f["chains"]]
            tie = functools.partial(V.seeded_rng, cfg.seed, "tie", doc.doc_id, doc.question)  # the engine's rule
            used = V.members_run(answers, 5, 4, tie, d)
            assert r["members"] == used
            assert r["pred"] == "ABCD"[V.vote(answers[:used], 4, tie())[0]]
            assert r["stop_risk"] == round(float(V.overturn_risk(answers[:used], 5, 4, tie)), 6)
        members[d] = [r["members"] for r in res]
        if d == 0.0:
            assert [r["pred"] for r in res] == [r["pred"] for r in exact] and members[d] == members["exact"]
    assert sum(members[0.2]) < sum(members[0.05]) <= sum(members["exact"])
    assert all(a <= b for a, b in zip(members[0.2], members[0.05]))
