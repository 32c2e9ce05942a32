"""Training pools for the example database. Never an evaluation split: PubMedQA's pool is the 500 PQA-L
questions outside the official test ids, HEAD-QA's is its train split, MMLU's the dev split (5 per subject),
MedMCQA's the hub train split. A JSON Lines file {question, options, answer} is a custom pool."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import UserError
from ..eval import data as D
from ..io import read_text_utf8

POOLS = ("pubmedqa", "headqa", "mmlu", "medmcqa")


def _pubmedqa(root: Path, skip_bad: bool, limit: int | None) -> D.Rows:
    folder = root / "pubmedqa_pqal"
    path = D._need_file(folder / "ori_pqal.json", "get PubMedQA ori_pqal.json and test_ground_truth.json")
    ids = D._need_file(folder / "test_ground_truth.json", "get PubMedQA test_ground_truth.json")
    data, _ = D._json(path)
    test, _ = D._json(ids)
    rows = ((f"{path}: id {pmid}", rec) for pmid, rec in data.items() if pmid not in test)
    return D._collect(str(path), rows, D._pubmedqa_doc, skip_bad, limit)


def _headqa(root: Path, skip_bad: bool, limit: int | None) -> D.Rows:
    path = D._need_file(root / "headqa_en" / "train_HEAD_EN.json", "get HEAD-QA train_HEAD_EN.json")
    data, _ = D._json(path)
    exams = data.get("exams") if isinstance(data, dict) else None
    if not isinstance(exams, dict):
        raise UserError(f"{path}: expected {{'exams': {{name: {{data: [...]}}}}}}; re-download the file")
    rows = ((f"{path}: {name} qid {q.get('qid')}", (q, str(exam.get("category", ""))))
            for name, exam in exams.items() for q in exam.get("data", []))
    return D._collect(str(path), rows, lambda r: D._headqa_doc(*r), skip_bad, limit)


def _mmlu_dev(root: Path, skip_bad: bool, limit: int | None) -> D.Rows:
    files = [root / "mmlu_medical" / "dev" / f"{s}_dev.csv" for s in D.MMLU_MEDICAL]
    for f in files:
        D._need_file(f, "get the hendrycks MMLU dev CSVs")

    def rows():
        for f in files:
            subject = f.name[:-len("_dev.csv")]
            text = read_text_utf8(f, newline="")
            for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
                yield f"{f}:{n}", (row, subject)
    return D._collect(str(files[0].parent), rows(), lambda r: D._mmlu_row(*r), skip_bad, limit)


def _jsonl_doc(row) -> D.Doc:
    if not isinstance(row, dict):
        raise D.BadRow("row is not a JSON object")
    q = D._text(row, "question")
    options = row.get("options")
    if isinstance(options, dict):
        keys = sorted(options)
        if keys != list(D.LETTERS[:len(keys)]):
            raise D.BadRow(f"options keys {keys} must be consecutive letters A..")
        options = [options[k] for k in keys]
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
        raise D.BadRow("field 'options' must list at least 2 option texts")
    if "answer" not in row:
        raise D.BadRow("field 'answer' (the gold option: letter or 0-based index) is missing")
    ans = row["answer"]
    gold = D._letter_index(ans, len(options), "answer") if isinstance(ans, str) else \
        D._int_index(ans, 0, len(options), "answer")
    return D.Doc(0, q, options, gold, D.mcq_context(q))


def _jsonl(path: Path, skip_bad: bool, limit: int | None) -> D.Rows:
    D._need_file(path, "give a JSON Lines file with question, options, answer per line")
    if path.stat().st_size == 0 or not read_text_utf8(path).strip():
        raise UserError(f"{path}: the pool is empty; give a pool with questions and gold answers")
    return D._collect(str(path), ((f"{path}:{n}", r) for n, r in D._jsonl(path)), _jsonl_doc, skip_bad, limit)


def load_pool(name: str, root: Path | None, skip_bad: bool = False, limit: int | None = None) -> D.Rows:
    if name.endswith((".jsonl", ".json")) or "/" in name:
        return _jsonl(Path(name), skip_bad, limit)
    if name == "medmcqa":
        return D._hub_rows("openlifescienceai/medmcqa", None, "train", lambda r: D._medmcqa_doc(r, 0), skip_bad,
                           limit)
    loaders = {"pubmedqa": _pubmedqa, "headqa": _headqa, "mmlu": _mmlu_dev}
    if name not in loaders:
        raise UserError(f"--pool: unknown pool '{name}'; use one of {', '.join(POOLS)} or a .jsonl file")
    if root is None:
        raise UserError(f"--pool {name}: needs the local data folder (--data-dir)")
    return loaders[name](root, skip_bad, limit)


def read_questions(text: str, source: str) -> list[D.Doc]:
    """Questions for `aloekit infer`: one JSON object or a list of them, {question, options, answer?}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{source}:{e.lineno}: invalid JSON ({e.msg}); give {{question, options}}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise UserError(f"{source}: no question given")
    docs = []
    for n, row in enumerate(items):
        where = f"{source}: item {n}"
        try:
            if isinstance(row, dict) and "answer" not in row:
                row = {**row, "answer": 0}
                doc = _jsonl_doc(row)
                doc.gold = -1
            else:
                doc = _jsonl_doc(row)
        except D.BadRow as e:
            raise UserError(f"{where}: {e}") from None
        doc.doc_id, doc.where = n, where
        docs.append(doc)
    return docs
