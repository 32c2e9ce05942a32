"""The merge pipeline on the real default model: a zero task vector must give back the model exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from aloekit.merge import MergeConfig, run
from aloekit.merge.config import DevSet, SearchSettings
from aloekit.merge.scoring import dev_accuracy


@pytest.mark.real_model
@pytest.mark.slow  # one full merge of the 135M model: minutes on 2 busy cores
def test_real_model_round_trips_through_dare_ties(real_model_dir, data_dir, tmp_path):
    # a byte-identical copy in another folder: a fine-tune with an all-zero task vector
    twin = tmp_path / "twin"
    shutil.copytree(real_model_dir, twin)
    out = tmp_path / "merged"
    res = run(MergeConfig(method="dare_ties", base_model=str(real_model_dir), output=str(out), seed=0,
                          models=[{"model": str(twin), "weight": 1.0, "density": 0.5}]))
    assert all(res["checks"].values())

    base = load_file(str(real_model_dir / "model.safetensors"))
    merged = {}
    for shard in sorted((out / "model").glob("*.safetensors")):
        merged.update(load_file(str(shard)))
    assert merged.keys() == base.keys()
    assert all(torch.equal(merged[k], base[k]) for k in base), "a zero delta changed some weights"

    checks = json.loads((out / "checks.json").read_text())
    assert len(checks["generation"]["text"].split()) >= 3  # the real model answers in words

    cfg = MergeConfig(base_model=None, models=[{"model": "x"}],
                      search=SearchSettings(dev_sets=[DevSet(name="mmlu_medical_dev")], data_dir=str(data_dir)))
    acc_merged, acc_base = dev_accuracy(out / "model", cfg), dev_accuracy(real_model_dir, cfg)
    assert acc_merged == acc_base and 0 <= acc_base <= 1
