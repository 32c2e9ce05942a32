"""The red-team run directory is a DPO stage's dataset: its pairs are conversational (scored inside the chat
template the answers were generated in, with the run's system prompt) and are found through the manifest."""

import json

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
