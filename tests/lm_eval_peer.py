"""Run lm-evaluation-harness (the peer) in this process on the same local file and prompt as aloekit.

A test helper, used by tests/test_eval_real.py (imported plainly: pytest puts tests/ on sys.path, as tests/ has no
__init__.py) and by benchmarks/eval_speed.py (which adds tests/ to sys.path). lm-eval is a dev dependency only.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "fixtures" / "lm_eval_tasks"


def materialize_tasks(data_dir: Path, dest: Path) -> Path:
    """Copy the task YAMLs with the data folder filled in (lm-eval resolves data_files from the cwd)."""
    out = dest / "lm_eval_tasks"
    shutil.copytree(TASKS_DIR, out, dirs_exist_ok=True)
    for y in out.rglob("*.yaml"):
        y.write_text(y.read_text().replace("@DATA_DIR@", str(Path(data_dir).resolve())))
    return out


def time_loglikelihood(lm) -> list[float]:
    """Wrap `lm.loglikelihood` so the seconds spent inside it add up in the returned one-item list."""
    spent = [0.0]
    inner = lm.loglikelihood

    def timed(*a, **k):
        t0 = time.time()
        try:
            return inner(*a, **k)
        finally:
            spent[0] += time.time() - t0
    lm.loglikelihood = timed
    return spent


def run_lm_eval(model_dir: Path, data_dir: Path, limit: int | None, batch_size: int, dtype: str,
                task: str = "medmcqa_aloekit") -> dict:
    """-> {"acc", "acc_norm", "preds": [argmax per doc], "lls": [[...]], "seconds": {"total", "scoring"}}.

    "total" is model loading + simple_evaluate; "scoring" the time spent inside lm-eval's loglikelihood."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        tm = TaskManager(include_path=str(materialize_tasks(data_dir, Path(tmp))))
        lm = HFLM(pretrained=str(model_dir), dtype=dtype, batch_size=batch_size, device="cpu")
        scoring = time_loglikelihood(lm)
        res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit, log_samples=True,
                                      bootstrap_iters=0)
        seconds = {"total": time.time() - t, "scoring": scoring[0]}
    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return {"acc": res["results"][task]["acc,none"], "acc_norm": res["results"][task]["acc_norm,none"],
            "lls": lls, "preds": [max(range(len(x)), key=x.__getitem__) for x in lls], "seconds": seconds}
