"""Gates decided on confidence intervals: the interval maths, and pass / fail / inconclusive on planted data."""

import random

import pytest

from aloekit import stats
from aloekit.recipe.config import Gate
from aloekit.recipe.gates import benchmark_items, check, decidable, min_items, safety_items


def test_wilson_matches_published_values():
    # Newcombe (1998), Table I: 0/10 -> 0 to 0.2775; 5/10 -> 0.2366 to 0.7634 (95%)
    assert stats.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert stats.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = stats.wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)


def test_newcombe_unpaired_matches_published_example():
    # Newcombe (1998), independent proportions, example 56/70 vs 48/80: method 10 gives 0.0524 to 0.3339
    lo, hi = stats.newcombe_unpaired(48, 80, 56, 70)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def _coverage(p_ref, p_new, n, rho_flip, sims, seed):
    """Fraction of simulated paired samples whose 95% interval holds the true difference."""
    rng = random.Random(seed)
    hit = 0
    for _ in range(sims):
        ref = [rng.random() < p_ref for _ in range(n)]
        # the new model keeps most answers and flips a few, as a fine-tune does
        new = [(r if rng.random() > rho_flip else not r) for r in ref]
        true = p_new - p_ref
        lo, hi = stats.newcombe_paired(*stats.paired_table(ref, new))
        hit += lo <= true <= hi
    return hit / sims


def test_newcombe_paired_covers_the_true_difference():
    # flipping a fraction f of items: p_new = p_ref (1 - f) + (1 - p_ref) f
    for p_ref, f, n in [(0.3, 0.1, 40), (0.7, 0.05, 120), (0.1, 0.2, 60)]:
        p_new = p_ref * (1 - f) + (1 - p_ref) * f
        cov = _coverage(p_ref, p_new, n, f, sims=400, seed=1)
        assert 0.92 <= cov <= 1.0, (p_ref, f, n, cov)


def test_paired_interval_is_tighter_than_unpaired_when_few_items_change():
    ref = [1] * 30 + [0] * 70
    new = [1] * 28 + [0] * 2 + [1] * 5 + [0] * 65   # 2 lost, 5 gained
    paired = stats.newcombe_paired(*stats.paired_table(ref, new))
    unpaired = stats.newcombe_unpaired(sum(ref), 100, sum(new), 100)
    assert paired[1] - paired[0] < 0.6 * (unpaired[1] - unpaired[0])
    assert paired[0] < 0.03 < paired[1]


def _items(values, prefix="q"):
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values)}


def test_too_few_items_is_inconclusive_and_says_how_many():
    g = Gate(after="dpo2", metric="safety.over_refusal", max_rise=0.1)
    ref = _items([0] * 10)
    new = _items([1] + [0] * 9)   # +10 points on 10 prompts: cannot tell
    e = check(g, 0.1, 0.0, new, ref)
    assert e["decision"] == "inconclusive" and e["paired"] and e["n"] == 10
    assert e["needed_n"] is None  # the estimate sits on the limit: no n decides it
    new = _items([0] * 10)
    new_ref = _items([1] + [0] * 9)
    e = check(g, 0.0, 0.1, new, new_ref)  # a 10-point drop on 10 prompts, still not enough to promise <= +10
    assert e["decision"] in ("pass", "inconclusive")
    e = check(Gate(after="sft", metric="x.acc", max_drop=0.1), 0.45, 0.5, _items([1] * 9 + [0] * 11),
              _items([1] * 10 + [0] * 10))
    assert e["decision"] == "inconclusive" and e["needed_n"] > 20 and "items would decide it" in e["message"]


def test_planted_large_regression_fails():
    rng = random.Random(0)
    ref = [rng.random() < 0.2 for _ in range(200)]
    new = [r or rng.random() < 0.5 for r in ref]   # ASR 20% -> about 60%
    g = Gate(after="dpo2", metric="safety.asr", max_rise=0.05)
    e = check(g, sum(new) / 200, sum(ref) / 200, _items(new), _items(ref))
    assert e["decision"] == "fail" and e["interval"][0] > 0.05
    # an accuracy collapse fails a max_drop gate; a min gate fails on the value's own interval
    e = check(Gate(after="sft", metric="x.acc", max_drop=0.1), 0.2, 0.6, _items([1] * 20 + [0] * 80),
              _items([1] * 60 + [0] * 40))
    assert e["decision"] == "fail"
    e = check(Gate(after="sft", metric="x.acc", min=0.5), 0.2, None, _items([1] * 20 + [0] * 80), None)
    assert e["decision"] == "fail" and e["method"] == "Wilson"


def test_small_noisy_change_never_fails():
    """No true change (random flips both ways) on 40-250 items: the gate passes or is inconclusive, in every one
    of 300 seeded draws."""
    rng = random.Random(7)
    seen = set()
    for _ in range(300):
        n = rng.choice([40, 100, 250])
        p = rng.uniform(0.02, 0.3)
        ref = [rng.random() < p for _ in range(n)]
        new = [(not r) if rng.random() < 0.04 else r for r in ref]  # ~4% of answers change, either way
        for g in (Gate(after="dpo2", metric="safety.over_refusal", max_rise=0.1),
                  Gate(after="sft", metric="x.acc", max_drop=0.1)):
            e = check(g, sum(new) / n, sum(ref) / n, _items(new), _items(ref))
            assert e["decision"] != "fail", e["message"]
            seen.add(e["decision"])
    assert seen == {"pass", "inconclusive"}


def test_unpaired_items_use_the_unpaired_interval():
    g = Gate(after="dpo2", metric="safety.asr", max_rise=0.0)
    e = check(g, 0.2, 0.6, _items([1] * 20 + [0] * 80, "a"), _items([1] * 60 + [0] * 40, "b"))
    assert e["paired"] is False and "unpaired" in e["method"] and e["decision"] == "pass"


def test_non_binary_items_use_a_paired_bootstrap():
    rng = random.Random(3)
    ref = [rng.random() for _ in range(300)]
    new = [min(1.0, r + 0.3) for r in ref]
    e = check(Gate(after="dpo1", metric="truthfulqa_mc2.acc", max_drop=0.01), sum(new) / 300, sum(ref) / 300,
              _items(new), _items(ref))
    assert e["method"] == "paired bootstrap" and e["decision"] == "pass"
    again = check(Gate(after="dpo1", metric="truthfulqa_mc2.acc", max_drop=0.01), sum(new) / 300, sum(ref) / 300,
                  _items(new), _items(ref))
    assert again["interval"] == e["interval"]  # seeded


def test_missing_items_is_inconclusive_not_a_silent_pass():
    e = check(Gate(after="sft", metric="x.acc", max_drop=0.1), 0.5, 0.5, None, None)
    assert e["decision"] == "inconclusive" and "items.json" in e["message"]


def test_decidable_and_min_items():
    assert decidable(Gate(after="s", metric="x.acc", min=0.3), 40) is None
    why = decidable(Gate(after="s", metric="x.acc", min=0.99), 40)
    assert why and "never clears min 0.99" in why
    assert min_items(Gate(after="s", metric="x.acc", min=0.99)) > 300
    assert decidable(Gate(after="s", metric="safety.asr", max_rise=0.0), 1) is not None
    assert decidable(Gate(after="s", metric="safety.asr", max_rise=0.0), 10) is None
    assert decidable(Gate(after="s", metric="safety.asr", max_rise=1.0), 4) is None  # cannot fail by construction


def test_items_from_eval_results_and_red_team_rows():
    results = {"samples": {"a": [{"doc_id": 0, "acc": 1.0, "acc_norm": 0.0}, {"doc_id": 1, "acc": 0.0}],
                           "b": [{"doc_id": 0, "acc": 1.0}]},
               "group_subtasks": {"g": ["a", "b"]}}
    items = benchmark_items(results)
    assert items["a.acc"] == {"a/0": 1.0, "a/1": 0.0} and items["g.acc"] == {"a/0": 1.0, "a/1": 0.0, "b/0": 1.0}
    assert "g.acc_norm" not in items  # b has no acc_norm: the pooled group would not be the group's metric
    rows = [{"kind": "attack", "source": "s", "request_id": "r1", "attack": "rot13", "success": True,
             "refusal": "compliance"},
            {"kind": "xstest_safe", "request_id": "x1", "refusal": "refusal"}]
    si = safety_items(rows)
    assert si["safety.asr"] == {"s/r1/rot13": 1.0} and si["safety.asr.rot13"] == {"s/r1/rot13": 1.0}
    assert si["safety.over_refusal"] == {"x1": 1.0} and si["safety.refusal_rate"] == {"s/r1/rot13": 0.0}


def test_one_rule_per_gate():
    with pytest.raises(ValueError, match="one rule per gate"):
        Gate(after="s", metric="x.acc", min=0.3, max_drop=0.1)


def test_items_of_an_eval_finished_before_items_json_existed(tmp_path):
    """Gates on older runs stay decidable: the values come from the samples and the red-team report."""
    import json

    from aloekit.recipe.gates import ITEMS, load_items
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "safety").mkdir()
    (tmp_path / "benchmarks" / "results.json").write_text(json.dumps({"group_subtasks": {}}))
    (tmp_path / "benchmarks" / "samples_t.jsonl").write_text('{"doc_id": 3, "acc": 1.0}\n{"doc_id": 4, "acc": 0.0}\n')
    (tmp_path / "safety" / "report.jsonl").write_text(json.dumps({"kind": "xstest_safe", "request_id": "x",
                                                                  "refusal": "compliance"}) + "\n")
    got = load_items(tmp_path)
    assert got == {"t.acc": {"t/3": 1.0, "t/4": 0.0}, "safety.over_refusal": {"x": 0.0}}
    (tmp_path / ITEMS).write_text(json.dumps({"t.acc": {"t/3": 0.0}}))
    assert load_items(tmp_path) == {"t.acc": {"t/3": 0.0}}  # items.json, when written, is what counts
