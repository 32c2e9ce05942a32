"""aloekit eval on the real default model: lm-eval agreement (small slice), batch-size invariance, the CLI.

The full 500-question lm-eval comparison and the speed ratio live in benchmarks/eval_speed.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aloekit.eval import EvalConfig, run

pytestmark = pytest.mark.real_model
FIXTURES = Path(__file__).parent / "fixtures" / "medqa"


@pytest.fixture(scope="module")
def fp32_backend(real_model_dir):
    """What `aloekit eval` loads on CPU: the default model in float32 (see runner.eval_model_config)."""
    from aloekit.backends import load_backend
    from aloekit.config import ModelConfig
    from aloekit.eval.runner import eval_model_config
    return load_backend(eval_model_config(ModelConfig(batch_size=8)))


def test_eval_uses_fp32_on_cpu(fp32_backend):
    import torch
    assert fp32_backend.dtype == torch.float32


def test_matches_lm_eval_harness_per_question(fp32_backend, real_model_dir, data_dir):
    pytest.importorskip("lm_eval")
    from lm_eval_peer import run_lm_eval  # tests/lm_eval_peer.py

    n = 40
    ours = run(EvalConfig(tasks=["medmcqa"], data_dir=str(data_dir), limit=n), backend=fp32_backend)
    peer = run_lm_eval(real_model_dir, data_dir, limit=n, batch_size=8, dtype="float32")
    samples = ours["samples"]["medmcqa"]
    assert len(samples) == len(peer["preds"]) == n
    same = sum(s["pred"] == p for s, p in zip(samples, peer["preds"]))
    assert same / n >= 0.99
    for s, lls in zip(samples, peer["lls"]):
        assert s["scores"] == pytest.approx(lls, abs=1e-3)
    assert abs(ours["results"]["medmcqa"]["acc,none"] - peer["acc"]) <= 0.001
    assert abs(ours["results"]["medmcqa"]["acc_norm,none"] - peer["acc_norm"]) <= 0.001


def test_real_model_results_do_not_depend_on_batch_size(fp32_backend, data_dir):
    got = []
    old = fp32_backend.cfg.batch_size
    try:
        for bs in (1, 8, 32):
            fp32_backend.cfg.batch_size = bs
            # MedMCQA for accuracy, TruthfulQA MC2 for a continuous metric (it changes with any rounding change)
            outs = [run(EvalConfig(tasks=[t], data_dir=str(data_dir), limit=n), backend=fp32_backend)
                    for t, n in (("medmcqa", 16), ("truthfulqa_mc2", 4))]
            got.append([({t: {k: v for k, v in r.items() if k.endswith(",none")} for t, r in o["results"].items()},
                         [s["scores"] for t in o["samples"] for s in o["samples"][t]]) for o in outs])
    finally:
        fp32_backend.cfg.batch_size = old
    # metrics are identical; per-option log-likelihoods agree to ~3e-5 (with several CPU threads the GEMM
    # reduction order can follow the batch shape; with 1 thread they are bit-identical)
    assert got[0][0][0] == got[1][0][0] == got[2][0][0] and got[0][1][0] == got[1][1][0] == got[2][1][0]
    for other in got[1:]:
        for (_, a), (_, b) in zip(got[0], other):
            for x, y in zip(a, b):
                assert x == pytest.approx(y, abs=1e-4)


def test_cli_end_to_end(real_model_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "eval", "--tasks", "medqa", "--data-dir", str(FIXTURES),
                        "--output", str(tmp_path / "o"), "--batch-size", "4"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| medqa | 6 | acc |" in r.stdout
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["config"]["dtype"] == "float32" and res["config"]["batch_size"] == 4
    assert len((tmp_path / "o" / "samples_medqa.jsonl").read_text().splitlines()) == 6
