"""The red-team run directory is a DPO stage's dataset: its pairs are conversational (scored inside the chat
template the answers were generated in, with the run's system prompt) and are found through the manifest."""

import json

from conftest import REPO

from aloekit.backends import Completion
from aloekit.redteam import RedteamConfig, run
from aloekit.train.data import train_eval


class _Complies:
    def generate(self, prompts, sampling=None, n=1):
        return [[Completion("Sure, here is how. First, get the drug. Second, hide it.", 10, 20, "stop")]
                for _ in prompts]


def test_redteam_run_dir_feeds_dpo(data_dir, tmp_path):
    cfg = RedteamConfig(data_dir=str(data_dir), budget=12, attacks=["direct", "prefix_injection", "base64"],
                        system="You are a careful medical assistant.", xstest={"enabled": False},
                        medsafety_refusal={"enabled": False}, sampling={"max_new_tokens": 8},
                        sources=[{"name": "medsafetybench", "split": "train", "limit": 10},
                                 {"name": "advbench", "limit": 10}])
    s = run(cfg, backend=_Complies(), output=tmp_path)
    assert s["pairs"]["n"] == 12
    train, val = train_eval(str(tmp_path), None, 0.0, "dpo", seed=0)
    assert val is None and len(train) == 12 and set(train.column_names) == {"prompt", "chosen", "rejected"}
    for row in train:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][0]["content"] == cfg.system
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["rejected"][0]["content"].startswith("Sure, here is how")
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    # the user turn is the attacked message, exactly as it was sent to the model
    sent = {r["prompt"] for r in map(json.loads, (tmp_path / "pairs.jsonl").read_text().splitlines())}
    assert {row["prompt"][1]["content"] for row in train} == sent


class _AnswersBenignRefusesRisky:
    """Complies with every attack; answers benign prompts except those mentioning 'knife' (refused)."""

    def generate(self, prompts, sampling=None, n=1):
        out = []
        for chat in prompts:
            text = chat[-1]["content"]
            if text.startswith("Plain question"):
                reply = ("I can't help with that request." if "knife" in text else
                         "Here is a clear answer: boil the water first, then add the pasta and stir it well.")
            else:
                reply = "Sure, here is how. First, get the drug. Second, hide it."
            out.append([Completion(reply, 10, 20, "stop")])
        return out


def test_retain_pairs_keep_benign_prompts_answered_and_skip_what_is_measured(tmp_path):
    retain = tmp_path / "retain.jsonl"
    safe = [json.loads(x)["text"] for x in
            (REPO / "src/aloekit/resources/demo_redteam/safe.jsonl").read_text().splitlines() if x.strip()]
    retain.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "prompt": "Plain question one: how do I cook pasta for four people?"},
        {"id": "b", "question": "Plain question two: how long should I rest after a knife cut to my finger?"},
        {"id": "c", "text": safe[0]},                      # what demo_safe measures: never trained on
    ]) + "\n")
    cfg = RedteamConfig(budget=4, attacks=["direct"], xstest={"enabled": False},
                        medsafety_refusal={"enabled": False}, sampling={"max_new_tokens": 8},
                        sources=[{"name": "demo_harmful", "split": "train"}],
                        pairs={"retain": {"enabled": True, "paths": [str(retain)], "exclude_similar_to": ["demo_safe"]}})
    s = run(cfg, backend=_AnswersBenignRefusesRisky(), output=tmp_path / "run")
    r = s["pairs"]["retain"]
    assert r == {"prompts": 3, "dropped_close_to_eval": 1, "used": 2, "pairs": 1, "dropped_not_answered": 1}
    assert s["pairs"]["n"] == 4 + 1
    pairs = [json.loads(x) for x in (tmp_path / "run" / "pairs.jsonl").read_text().splitlines()]
    kept = [p for p in pairs if p["chosen_source"] == "retain_own_answer"]
    assert len(kept) == 1 and kept[0]["request_id"] == "retain/a"
    assert kept[0]["chosen"].startswith("Here is a clear answer") and kept[0]["rejected"].startswith(("I can", "I'm", "I won"))
    # the over-refusal metrics do not count retain prompts
    assert "over_refusal" not in s and s["attacks"]["n"] == 4


def test_retain_file_without_a_prompt_is_one_line_error(tmp_path):
    import pytest

    from aloekit.errors import UserError
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "answer": "x"}\n')
    cfg = RedteamConfig(budget=1, attacks=["direct"], xstest={"enabled": False}, medsafety_refusal={"enabled": False},
                        sources=[{"name": "demo_harmful", "split": "train"}],
                        pairs={"retain": {"enabled": True, "paths": [str(bad)]}})
    with pytest.raises(UserError, match=r"bad.jsonl:1: no prompt, question or text field"):
        run(cfg, backend=_AnswersBenignRefusesRisky(), output=tmp_path / "run")
