"""The `custom_dataset` of the aloe_* lm-eval tasks: a benchmark's questions read by aloekit's benchmark layer.

lm-eval loads this file by its path (`!function utils.load` in the YAMLs), so the imports are absolute. The
questions come from the same readers `aloekit eval` uses (`aloekit.benchmarks.REGISTRY`), so the two tools see the
same documents in the same order, with the same loglik context (`Question.context`) and options.

lm-eval calls `load(**metadata, **dataset_kwargs)`. dataset_kwargs names the benchmark; metadata is lm-eval's
(`version`, `config_source`, the model arguments, `--metadata`), of which these keys are read:
- `data_dir`: the benchmark folder (default `$ALOEKIT_DATA_DIR`, then `../shared/data`). When the benchmark's file
  is not there, the hub copy is loaded instead (a warning says so); with no folder at all, the hub copy too.
- `hub`: true loads the hub copy even when the file is present.
- `skip_bad_rows`: true skips malformed rows (the count is logged) instead of stopping at the first one.
"""

from __future__ import annotations

import logging
from typing import Any

from aloekit.benchmarks import REGISTRY, absent
from aloekit.paths import data_dir as resolve_data_dir

log = logging.getLogger("aloekit.lmeval.tasks")

SPLIT = "test"  # the split name the YAMLs evaluate (test_split), whatever the benchmark calls its default split


def load(benchmark: str, data_dir: str | None = None, hub: bool = False, skip_bad_rows: bool = False,
         **_lm_eval_metadata: Any):
    """{"test": the benchmark's default split as a datasets.Dataset}: columns context, options, gold (what the
    YAMLs score), question, subject, id, where."""
    import datasets

    bench = REGISTRY[benchmark]
    root = None if _true(hub) else resolve_data_dir(data_dir, required=False)
    if root is not None and not bench.bundled:
        why = absent(benchmark, root)
        if why is not None:
            log.warning("%s: %s; loading the hub copy %s instead", benchmark, why, bench.hub_id)
            root = None
    rows = bench.load(root, skip_bad=_true(skip_bad_rows))
    if rows.skipped:
        log.warning("%s: skipped %d bad row(s), first at %s", benchmark, rows.skipped, rows.skipped_where[0])
    docs = [{"context": q.context, "options": list(q.options), "gold": q.gold, "question": q.question,
             "subject": q.subject, "id": q.id, "where": q.where} for q in rows.docs]
    return datasets.DatasetDict({SPLIT: datasets.Dataset.from_list(docs)})


def _true(value: Any) -> bool:
    """A metadata flag: JSON true, or the strings --metadata key=value gives."""
    return value is True or str(value).lower() in ("true", "1", "yes")
