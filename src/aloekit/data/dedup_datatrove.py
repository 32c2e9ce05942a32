"""Near-duplicate removal with datatrove's MinHash pipeline, for corpora beyond one machine.

Same job as `dedup.NearDedup`, done the datatrove way: signatures -> LSH buckets -> clusters -> filter, each
stage a pipeline run by an executor. Here it runs with `LocalPipelineExecutor` (processes on this machine);
for a cluster swap in datatrove's `SlurmPipelineExecutor` (or `RayPipelineExecutor`) with the same pipelines
and a shared `workdir` (see the README, Data curation). Records go in and come out as JSONL, so ids and order survive.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

from ..extras import require
from .dedup import normalise
from .records import Record


def _split_tokenizer():
    """datatrove's English tokenizers need spaCy; our dedup text is already normalised to space-separated
    words, so a plain split is the same tokenization the datasketch path uses."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    return SplitTokenizer()


def near_dedup_datatrove(records: Sequence[Record], text_of: Callable[[Record], str], workdir: Path,
                         threshold_buckets: tuple[int, int] = (14, 8), shingle: int = 3, tasks: int = 1,
                         workers: int = 1, seed: int = 1) -> tuple[list[Record], list[str]]:
    """-> kept records (input order) and the ids datatrove removed. `threshold_buckets` = (buckets, hashes
    per bucket): datatrove's LSH parameters (14 x 8 ~ a 0.72 Jaccard threshold at 50% detection)."""
    require("scale", what="dedup.engine: datatrove")
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    workdir = Path(workdir)
    if workdir.exists():  # stage outputs of another input would be silently reused
        shutil.rmtree(workdir)
    inp = workdir / "input"
    inp.mkdir(parents=True, exist_ok=True)
    # one shard per task; records keep their global order through the shard index
    per = -(-len(records) // tasks)
    for t in range(tasks):
        chunk = records[t * per:(t + 1) * per]
        (inp / f"{t:05d}.jsonl").write_text("".join(
            json.dumps({"id": r.id, "text": normalise(text_of(r))}, ensure_ascii=False) + "\n" for r in chunk))
    buckets, per_bucket = threshold_buckets
    # sha1: datatrove's xxhash path passes str to xxhash, which xxhash>=4 rejects
    cfg = MinhashConfig(n_grams=shingle, num_buckets=buckets, hashes_per_bucket=per_bucket, seed=seed,
                        hash_config=HashConfig(precision=64, hash_fc="sha1"))
    reader = lambda: JsonlReader(str(inp), glob_pattern="*.jsonl")  # noqa: E731
    logs = str(workdir / "logs")
    stages = [
        ([reader(), MinhashDedupSignature(output_folder=str(workdir / "sigs"), config=cfg,
                                           language=_split_tokenizer())], tasks, "sigs"),
        ([MinhashDedupBuckets(input_folder=str(workdir / "sigs"), output_folder=str(workdir / "buckets"),
                              config=cfg)], buckets, "buckets"),
        ([MinhashDedupCluster(input_folder=str(workdir / "buckets"), output_folder=str(workdir / "remove_ids"),
                              config=cfg)], 1, "cluster"),
        ([reader(), MinhashDedupFilter(input_folder=str(workdir / "remove_ids")),
          JsonlWriter(str(workdir / "kept"), output_filename="${rank}.jsonl", compression=None)], tasks, "filter"),
    ]
    from loguru import logger
    logger.disable("datatrove")  # its per-stage reports go to the log folder, not our terminal
    try:
        for pipeline, n_tasks, name in stages:
            LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks),
                                  logging_dir=f"{logs}/{name}", skip_completed=False).run()
    finally:
        logger.enable("datatrove")
    kept_ids = set()
    for f in sorted((workdir / "kept").glob("*.jsonl")):
        kept_ids.update(json.loads(line)["id"] for line in f.read_text().splitlines() if line.strip())
    kept = [r for r in records if r.id in kept_ids]
    return kept, [r.id for r in records if r.id not in kept_ids]
