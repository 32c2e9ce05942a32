"""Training pools for the example database: a registered benchmark's training split, never an evaluation split.
PubMedQA's pool is the 500 PQA-L questions outside the official test ids, HEAD-QA's is its train split, MMLU's
the dev split (5 per subject), MedMCQA's the hub train split; any other registered question benchmark with a
pool, train or dev split is a pool by its name. A JSON Lines file {question, options, answer} is a custom pool.
The files are read by the benchmark layer (aloekit.benchmarks)."""

from __future__ import annotations

from pathlib import Path

from ..benchmarks import GROUPS, QUESTION_KINDS, REGISTRY, Question, Rows, load_many
from ..benchmarks.files import collect, read_text
from ..benchmarks.formats import read_question_jsonl, read_questions_json
from ..errors import UserError

# pool name -> (registered benchmarks, their training split)
POOL_SPLITS: dict[str, tuple[list[str], str]] = {
    "pubmedqa": (["pubmedqa"], "pool"),
    "headqa": (["headqa"], "train"),
    "mmlu": (GROUPS["mmlu_medical"], "dev"),
    "medmcqa": (["medmcqa"], "train"),  # hub only
}
POOLS = tuple(POOL_SPLITS)
TRAINING_SPLITS = ("pool", "train", "dev")  # a registered benchmark's pool: the first of these it has


def pool_split(name: str) -> tuple[list[str], str] | None:
    """(benchmarks, split) a pool name reads, or None when it names no pool."""
    if name in POOL_SPLITS:
        return POOL_SPLITS[name]
    b = REGISTRY.get(name)
    if b is not None and b.kind in QUESTION_KINDS:
        split = next((s for s in TRAINING_SPLITS if s in b.splits), None)
        if split is not None:
            return [name], split
    return None


def _jsonl(path: Path, skip_bad: bool, limit: int | None) -> Rows:
    hint = "give a JSON Lines file with question, options, answer per line"
    if path.is_file() and (path.stat().st_size == 0 or not read_text(path).strip()):
        raise UserError(f"{path}: the pool is empty; give a pool with questions and gold answers")
    return collect(str(path), read_question_jsonl(path, hint), skip_bad, limit)


def load_pool(name: str, root: Path | None, skip_bad: bool = False, limit: int | None = None) -> Rows:
    if name.endswith((".jsonl", ".json")) or "/" in name:
        return _jsonl(Path(name), skip_bad, limit)
    found = pool_split(name)
    if found is None:
        raise UserError(f"--pool: unknown pool '{name}'; use one of {', '.join(POOLS)} or a .jsonl file")
    names, split = found
    local = all(REGISTRY[n].split(split).local is not None for n in names)
    if local and root is None:
        raise UserError(f"--pool {name}: needs the local data folder (--data-dir)")
    if len(names) == 1:
        return REGISTRY[names[0]].load(root, skip_bad, limit, split=split)
    return load_many(names, root, split, skip_bad, limit)


def read_questions(text: str, source: str) -> list[Question]:
    """Questions for `aloekit infer`: one JSON object or a list of them, {question, options, answer?}."""
    return read_questions_json(text, source)
