"""The hand-labelled safety-judge calibration set (resources/judge_calibration/safety.jsonl) and the metrics of
benchmarks/safety_judges.py. Needs no model and no data folder."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import safety_judges as S  # noqa: E402

FILE = REPO / "src" / "aloekit" / "resources" / "judge_calibration" / "safety.jsonl"
FIELDS = {"id", "source", "kind", "attack", "system", "request_sha256", "response", "label"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_file_parses_and_has_the_promised_shape(rows):
    assert len(rows) >= 150
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert FIELDS <= set(r), r["id"]
        assert r["label"] in S.LABELS, r["id"]
        assert r["kind"] in S.KINDS and r["system"] in S.SYSTEMS and r["attack"] in S.ATTACKS, r["id"]
        assert re.fullmatch(r"[0-9a-f]{64}", r["request_sha256"]), r["id"]
        assert r["response"].strip(), r["id"]
        # request texts stay in the shared data folder: only ids and hashes are shipped
        assert "request" not in r and "prompt" not in r, r["id"]
        assert (r["kind"] == "safe") == r["source"].startswith("xstest/"), r["id"]
        # harmful requests come from train-side sets only (never MedSafetyBench test)
        assert r["kind"] == "safe" or r["source"].startswith(("medsafetybench/train/", "advbench/")), r["id"]
    assert {r["kind"] for r in rows} == set(S.KINDS)
    counts = Counter(r["label"] for r in rows)
    for label in ("harmful_compliance", "refusal", "safe_help"):
        assert counts[label] >= 15, counts
    # unclear (echo, loop, off-topic) is frequent at 135M; each one says why it is neither help nor refusal
    assert all(r.get("why", "").strip() for r in rows if r["label"] == "unclear")


def test_metrics_on_a_hand_made_example():
    # gold: 3 positives; pred: 2 of them found plus 1 false alarm
    gold = [True, True, True, False, False, False]
    pred = [True, True, False, True, False, False]
    m = S.binary_metrics(gold, pred)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert m["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["false_positive_rate"] == pytest.approx(1 / 3, abs=1e-4)
    none = S.binary_metrics(gold, [False] * 6)
    assert none["precision"] is None and none["recall"] == 0


def test_confusion_counts_unclear_verdicts():
    c = S.confusion(["refusal", "refusal", "safe_help"], ["refusal", "unclear", "compliance"])
    assert c == {"refusal": {"refusal": 1, "unclear": 1}, "safe_help": {"compliance": 1}}


def test_asr_correction():
    # a perfect judge changes nothing; a judge with FPR 0.2 and TPR 0.8 reporting 50% means 50%
    assert S.corrected_asr(0.3, 1.0, 0.0) == pytest.approx(0.3)
    assert S.corrected_asr(0.5, 0.8, 0.2) == pytest.approx(0.5)
    assert S.corrected_asr(0.2, 0.8, 0.2) == pytest.approx(0.0)
    assert S.corrected_asr(0.5, 0.3, 0.4) is None
    m = S.binary_metrics([True] * 20 + [False] * 20, [True] * 18 + [False] * 2 + [True] * 4 + [False] * 16)
    lo, hi = S.asr_interval(0.5, m)
    assert lo < S.corrected_asr(0.5, 0.9, 0.2) < hi


def test_marker_judge_does_not_give_one_label_to_everything(rows):
    from aloekit.redteam.judges import MarkerJudge
    judge = MarkerJudge()
    labels = Counter(judge.refusal(r["response"]) for r in rows)
    assert len(labels) >= 2, labels


def test_holdout_sample_labels_both_models_on_frozen_requests():
    """The hand-labelled sample of the held-out split (benchmarks/safety_holdout.py): 50 (request, attack) pairs, each
    with the base and the safety-DPO model's answer, on requests the frozen split lists with the same hash."""
    sample = [json.loads(line) for line in (FILE.parent / "holdout_sample.jsonl").read_text(encoding="utf-8")
              .splitlines() if line.strip()]
    frozen = json.loads((REPO / "src" / "aloekit" / "resources" / "safety_holdout" / "requests.json").read_text())
    listed = {r["id"]: r["sha256"] for r in frozen["requests"]}
    pairs = Counter((r["source"], r["attack"]) for r in sample)
    assert len(pairs) == 50 and set(pairs.values()) == {2}
    assert Counter(r["model"] for r in sample) == {"base": 50, "safety_dpo": 50}
    assert len({r["id"] for r in sample}) == len(sample)
    for r in sample:
        assert listed.get(r["source"]) == r["request_sha256"], r["id"]
        assert r["label"] in S.LABELS and r["why"].strip() and r["response"].strip(), r["id"]
        assert "request" not in r and "prompt" not in r, r["id"]
