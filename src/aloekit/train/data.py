"""Reading training data into the shapes TRL trains on.

SFT rows become conversational prompt/completion pairs: TRL then puts the loss on the completion only, with any
chat template, no `{% generation %}` markers needed. A `messages` row is split before its last assistant turn.
Preference rows become prompt/chosen/rejected; raw HH-RLHF dialogues ("\\n\\nHuman: … \\n\\nAssistant: …") are
split into turns.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserError

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "dev", "test", "eval")}


def _load_any(path: Path):
    import datasets
    datasets.disable_progress_bars()
    if path.is_dir():
        state = path / "state.json"
        if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
            # datasets cannot even open a saved dataset of zero rows (IndexError inside load_from_disk)
            raise UserError(f"{path}: the dataset has no rows (a red-team run with no successful attack makes no "
                            "safety pairs); give the stage data or drop it")
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            return datasets.load_from_disk(str(path))
        raise UserError(f"{path}: not an HF dataset folder (no dataset_dict.json/dataset_info.json)")
    fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".gz": "json"}.get(path.suffix)
    if fmt is None:
        raise UserError(f"{path}: unsupported dataset format; use an HF dataset folder, .jsonl, .parquet or .csv")
    try:
        return datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - pyarrow/json errors: the file is not what it claims
        raise UserError(f"{path}: cannot read it as {fmt} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def load_splits(spec: str, kind: str) -> tuple[object, object | None]:
    """(train, validation-or-None) from a dataset folder/file or a data-stage run directory."""
    import datasets
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"dataset {path} does not exist")
    manifest = path / "manifest.json"
    if path.is_dir() and manifest.is_file():  # a run directory: find the stage's declared outputs
        outs = json.loads(manifest.read_text()).get("outputs", {})
        prefix = "sft" if kind == "sft" else "preference"
        tr, va = outs.get(f"{prefix}_train"), outs.get(f"{prefix}_validation")
        if not tr:
            raise UserError(f"{path}: run directory has no '{prefix}_train' output; point to a data-stage run "
                            f"or a dataset file")
        return _load_any(path / tr), (_load_any(path / va) if va and (path / va).exists() else None)
    ds = _load_any(path)
    if isinstance(ds, datasets.DatasetDict):
        train = next((ds[n] for n in SPLIT_NAMES["train"] if n in ds), None)
        if train is None:
            raise UserError(f"{path}: no 'train' split (found: {', '.join(ds)})")
        val = next((ds[n] for n in SPLIT_NAMES["validation"] if n in ds), None)
        return train, val
    return ds, None


def to_prompt_completion(ds, source: str):
    cols = set(ds.column_names)
    if {"prompt", "completion"} <= cols:
        keep = ["prompt", "completion"]
        return ds.remove_columns([c for c in cols if c not in keep])
    if "messages" in cols:
        def split(row):
            msgs = row["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None or last == 0:
                raise UserError(f"{source}: a 'messages' row has no assistant turn after a prompt; every row "
                                f"needs at least one user turn and an assistant answer")
            return {"prompt": msgs[:last], "completion": [msgs[last]]}
        return ds.map(split, remove_columns=list(cols))
    if "text" in cols:
        return ds.remove_columns([c for c in cols if c != "text"])
    raise UserError(f"{source}: SFT data needs columns prompt+completion, messages, or text; found "
                    f"{', '.join(sorted(cols))}")


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_to_messages(text: str) -> list[dict]:
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return msgs


def to_preference(ds, source: str):
    cols = set(ds.column_names)
    if {"prompt", "chosen", "rejected"} <= cols:
        return ds.remove_columns([c for c in cols if c not in ("prompt", "chosen", "rejected")])
    if {"chosen", "rejected"} <= cols:  # HH-RLHF: two full dialogues sharing all but the last assistant turn
        def split(row):
            c, r = _hh_to_messages(row["chosen"]), _hh_to_messages(row["rejected"])
            if len(c) < 2 or c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
                return {"prompt": None, "chosen": None, "rejected": None}
            return {"prompt": c[:-1], "chosen": [c[-1]], "rejected": [r[-1]]}
        out = ds.map(split, remove_columns=list(cols))
        return out.filter(lambda x: x["prompt"] is not None and x["chosen"][0]["content"] != x["rejected"][0]["content"])
    raise UserError(f"{source}: preference data needs columns prompt+chosen+rejected (or HH-RLHF chosen+rejected "
                    f"dialogues); found {', '.join(sorted(cols))}")


def train_eval(spec: str, eval_spec: str | None, eval_fraction: float, kind: str, seed: int, limit: int | None = None):
    """Load, normalise and split. The held-out split never overlaps training rows."""
    train, val = load_splits(spec, kind)
    if eval_spec:
        val, _ = load_splits(eval_spec, kind)
    conv = to_prompt_completion if kind == "sft" else to_preference
    train = conv(train, spec)
    if limit:
        train = train.shuffle(seed=seed).select(range(min(limit, len(train))))
    if val is None and eval_fraction > 0 and len(train) >= 10:
        parts = train.train_test_split(test_size=eval_fraction, seed=seed)
        train, val = parts["train"], parts["test"]
    elif val is not None:
        val = conv(val, eval_spec or spec)
    if len(train) == 0:
        raise UserError(f"{spec}: no training rows left")
    return train, val
