"""`aloekit merge`: aloekit config -> mergekit YAML -> streamed (or mergekit executor) merge -> checked HF folder.

Output run directory (written atomically as a whole: an interrupted or failed merge leaves nothing):

    <output>/
      config.yaml, manifest.json   the aloekit config and run manifest
      merge.yaml                   the mergekit configuration that produced model/
      checks.json                  post-merge checks (vocab, chat template, generation, finite weights)
      model/                       HF folder: weights, tokenizer, chat template, README.md with the merge YAML
      search.json, search.md       only with `search:`: every candidate's score, best first
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from .. import console
from ..errors import UserError
from ..extras import require
from ..io import atomic_dir, atomic_write_json, atomic_write_text
from ..rundir import RunDir
from .config import MergeConfig
from .inputs import ModelInfo, check_compatible, inspect, load_tokenizer

Scorer = Callable[[Path, MergeConfig], float]


def _method(name: str):
    require("merge", what="aloekit merge")  # every merge starts here: the method decides what the config needs
    from mergekit.merge_methods import registry
    try:
        return registry.get(name)
    except RuntimeError:
        known = ", ".join(sorted(m.spec.name for m in registry.registered_methods()))
        raise UserError(f"method: unknown merge method '{name}'; mergekit offers: {known}") from None


def check_weights(cfg: MergeConfig, where: str) -> None:
    """Weights must not cancel out where the method divides by their sum, and must sum to 1 for an
    unnormalized linear merge (anything else rescales the whole model)."""
    params = {p.name: p for p in _method(cfg.method).spec.parameters}
    weights = [m.weight for m in cfg.models if m.weight is not None]
    if not weights or "normalize" not in params:
        return
    normalize = cfg.parameters.get("normalize", params["normalize"].default)
    total = sum(weights)
    if normalize and abs(total) < 1e-8:
        raise UserError(f"{where}: weights {weights} sum to {total:g}; '{cfg.method}' divides by their sum, so "
                        "they must not cancel out")
    if not normalize and cfg.method == "linear" and abs(total - 1.0) > 1e-6:
        raise UserError(f"{where}: weights {weights} sum to {total:g}, not 1, with normalize: false; a linear merge "
                        "would rescale the whole model; make them sum to 1 or set parameters.normalize: true")


def validate(cfg: MergeConfig) -> dict[str, Any]:
    """Check the config against the method's contract before loading a single tensor.

    Returns the resolved inputs: {"base": ModelInfo | None, "models": [ModelInfo], "tokenizer": ModelInfo}.
    """
    spec = _method(cfg.method).spec  # first: it checks that mergekit is installed
    from mergekit.merge_methods.base import BasePolicy

    contract = spec.contract
    if contract.base == BasePolicy.REQUIRED and not cfg.base_model:
        raise UserError(f"base_model: method '{cfg.method}' merges differences from a base model; set base_model "
                        "(the model the inputs were fine-tuned from)")
    if contract.base == BasePolicy.FORBIDDEN and cfg.base_model:
        raise UserError(f"base_model: method '{cfg.method}' takes no base model; remove base_model")
    uses_base = contract.base not in (BasePolicy.IGNORED, BasePolicy.FORBIDDEN) and bool(cfg.base_model)
    ids = [m.model for m in cfg.models] + ([cfg.base_model] if uses_base and cfg.base_model not in
                                             [m.model for m in cfg.models] else [])
    try:
        contract.validate_ids(ids, cfg.base_model if uses_base else None)
    except ValueError as e:
        raise UserError(f"models: {e} (method '{cfg.method}')") from None

    params = {p.name: p for p in spec.parameters}
    for name, p in params.items():
        scope = p.scope.value
        if scope == "shared":
            if p.required and name not in cfg.parameters:
                raise UserError(f"parameters.{name}: method '{cfg.method}' needs it (e.g. parameters: {{{name}: 0.5}})")
            continue
        for i, m in enumerate(cfg.models):
            if scope == "non_base" and uses_base and m.model == cfg.base_model:
                continue
            if p.required and getattr(m, name, None) is None and name not in m.parameters:
                raise UserError(f"models[{i}].{name}: method '{cfg.method}' needs a {name} for every input model")
    for key in cfg.parameters:
        if key not in params:
            raise UserError(f"parameters.{key}: not a parameter of '{cfg.method}' (it takes: "
                            f"{', '.join(params) or 'none'})")
    if "t" in cfg.parameters and isinstance(cfg.parameters["t"], (int, float)) and not 0 <= cfg.parameters["t"] <= 1:
        raise UserError(f"parameters.t: {cfg.parameters['t']} is outside [0, 1]; slerp interpolates between two models")

    check_weights(cfg, "models[*].weight")

    infos: list[tuple[str, ModelInfo]] = []
    base = None
    if cfg.base_model:
        base = inspect(cfg.base_model, "base_model")
        infos.append(("base_model", base))
    models = []
    for i, m in enumerate(cfg.models):
        info = base if base is not None and m.model == cfg.base_model else inspect(m.model, f"models[{i}].model")
        models.append(info)
        infos.append((f"models[{i}]", info))
    check_compatible(infos)

    if cfg.tokenizer_from:
        tokenizer = inspect(cfg.tokenizer_from, "tokenizer_from")
        check_compatible([infos[0], ("tokenizer_from", tokenizer)])
    else:
        tokenizer = next((i for _, i in infos if i.chat_template), infos[0][1])
    return {"base": base, "models": models, "tokenizer": tokenizer, "uses_base": uses_base}


def mergekit_yaml(cfg: MergeConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """The mergekit configuration, with every model as a resolved local folder."""
    models = []
    for m, info in zip(cfg.models, resolved["models"]):
        p = dict(m.parameters)
        if m.weight is not None:
            p["weight"] = m.weight
        if m.density is not None:
            p["density"] = m.density
        models.append({"model": str(info.path), **({"parameters": p} if p else {})})
    out: dict[str, Any] = {"merge_method": cfg.method}
    if resolved["base"] is not None and resolved["uses_base"]:
        out["base_model"] = str(resolved["base"].path)
    out["models"] = models
    if cfg.parameters:
        out["parameters"] = dict(cfg.parameters)
    out["dtype"] = cfg.dtype
    ref = resolved["base"] or resolved["models"][0]
    out_dtype = ref.dtype if cfg.out_dtype == "auto" else cfg.out_dtype
    if out_dtype in ("float32", "bfloat16", "float16") and out_dtype != cfg.dtype:
        out["out_dtype"] = out_dtype
    return out


@contextlib.contextmanager
def _release_input_pages(every_s: float) -> Iterator[None]:
    """Keep mergekit's input mmaps from pinning whole checkpoints in memory.

    mergekit keeps one safetensors file per input open (mmap) until it needs another shard of that input; every
    page it has read stays mapped, so a single-file checkpoint ends up fully resident for each input. Flushing the
    loaders (mergekit's own `flush`, under their lock; the next read just reopens the file) every `every_s`
    seconds unmaps what was read. At the end the process-wide loader cache is emptied, so a later merge in the
    same process re-reads files that changed on disk.
    """
    from mergekit.io.tasks import LoaderCache

    def flush() -> None:
        for loader in list(LoaderCache.loaders.values()):
            loader.flush()

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            flush()

    t = threading.Thread(target=loop, daemon=True) if every_s > 0 else None
    if t:
        t.start()
    try:
        yield
    finally:
        stop.set()
        if t:
            t.join()
        flush()
        LoaderCache.loaders.clear()


def pick_engine(cfg: MergeConfig, mk_yaml: dict[str, Any]) -> str:
    """The engine that runs this merge: the streamed one wherever the method is elementwise (unless told otherwise)."""
    if cfg.engine == "mergekit":
        return "mergekit"
    from .stream import why_not_streamed
    reason = why_not_streamed(mk_yaml)
    if reason is None:
        return "streamed"
    if cfg.engine == "streamed":
        raise UserError(f"engine: the streamed engine cannot run this merge: {reason}; set engine: auto or mergekit")
    console.note(f"merge: mergekit's executor runs this merge ({reason})")
    return "mergekit"


def merge_to(folder: Path, cfg: MergeConfig, mk_yaml: dict[str, Any], tokenizer: ModelInfo) -> str:
    """Merge into `folder` (which must not exist), give it our tokenizer and model card; returns the engine used."""
    from mergekit.common import parse_kmb

    engine = pick_engine(cfg, mk_yaml)
    if engine == "streamed":
        from .stream import merge_streamed
        merge_streamed(folder, mk_yaml, seed=cfg.seed, shard_bytes=parse_kmb(cfg.out_shard_size),
                       block_elems=cfg.block_size)
    else:
        # imported here: mergekit.merge pulls in most of transformers, which the streamed engine does without
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        mk_cfg = MergeConfiguration.model_validate(mk_yaml)
        options = MergeOptions(lazy_unpickle=cfg.lazy_unpickle, out_shard_size=parse_kmb(cfg.out_shard_size),
                               random_seed=cfg.seed, device=cfg.device, copy_tokenizer=False,
                               write_model_card=False, quiet=console.QUIET,
                               safe_serialization=True)
        with _release_input_pages(cfg.release_every_s):
            run_merge(mk_cfg, out_path=str(folder), options=options,
                      config_source=yaml.safe_dump(mk_yaml, sort_keys=False))
    from transformers import GenerationConfig

    # the tokenizer and chat template come whole from one model (vocabularies are checked identical), so the
    # output chats exactly like the model it is meant to replace
    load_tokenizer(tokenizer.path).save_pretrained(folder)
    try:
        GenerationConfig.from_pretrained(tokenizer.path).save_pretrained(folder)
    except OSError:
        pass  # no generation_config.json there: transformers' defaults apply, as for the source model
    write_card(folder, cfg, mk_yaml, tokenizer.spec, engine)
    return engine


def write_card(folder: Path, cfg: MergeConfig, mk_yaml: dict[str, Any], tokenizer_spec: str,
               engine: str = "mergekit") -> None:
    from .. import __version__
    names = [m.model for m in cfg.models]
    lines = [
        "---", "library_name: transformers", "tags: [merge, mergekit, aloekit]",
        f"base_model: {json.dumps(cfg.base_model)}" if cfg.base_model else "", "---", "",
        f"# Merged model ({cfg.method})", "",
        f"Made with aloekit {__version__} on [mergekit](https://github.com/arcee-ai/mergekit) using "
        f"`{cfg.method}`" + (f" over base `{cfg.base_model}`" if cfg.base_model else "") + ".", "",
        "Inputs: " + ", ".join(f"`{n}`" for n in names) + ".", "",
        ("Computed by aloekit's streamed engine: mergekit's merge functions applied to blocks of rows "
         f"(~{cfg.block_size} entries each)." if engine == "streamed" else "Computed by mergekit's executor."), "",
        f"Tokenizer, chat template and generation config: from `{tokenizer_spec}`; "
        f"seed {cfg.seed}.", "",
        "## Merge configuration (mergekit YAML)", "", "```yaml", yaml.safe_dump(mk_yaml, sort_keys=False).rstrip(),
        "```", "",
    ]
    atomic_write_text(folder / "README.md", "\n".join(x for x in lines if x is not None) + "\n")


def post_checks(folder: Path, cfg: MergeConfig, tokenizer: ModelInfo) -> dict[str, Any]:
    """Same vocab, same chat template, finite weights, and the model generates. Any failure is an error."""
    import safetensors
    import torch
    from transformers import AutoTokenizer

    from ..backends import load_backend
    from ..config import ModelConfig, SamplingConfig

    tok = AutoTokenizer.from_pretrained(folder)
    template = tok.chat_template if isinstance(tok.chat_template, str) else (
        json.dumps(tok.chat_template, sort_keys=True) if tok.chat_template else None)
    out_cfg = json.loads((folder / "config.json").read_text())
    checks: dict[str, Any] = {
        "same_vocab": tok.get_vocab() == tokenizer.vocab and out_cfg.get("vocab_size") == tokenizer.config.get(
            "vocab_size"),
        "same_chat_template": template == tokenizer.chat_template,
    }
    bad = []
    n_params = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with safetensors.safe_open(str(shard), framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                n_params += t.numel()
                if not torch.isfinite(t).all():
                    bad.append(k)
    checks["finite_weights"] = not bad
    checks["parameters"] = n_params
    be = load_backend(ModelConfig(name=str(folder), dtype="auto", batch_size=1))
    prompt = [{"role": "user", "content": cfg.check_prompt}] if template else cfg.check_prompt
    c = be.generate([prompt], SamplingConfig(max_new_tokens=cfg.check_max_new_tokens, seed=cfg.seed))[0][0]
    checks["generation"] = {"prompt": cfg.check_prompt, "text": c.text, "tokens": c.completion_tokens}
    # a random test model may well generate only whitespace: "works" means it decodes tokens without error
    checks["generates"] = c.completion_tokens > 0
    del be
    failed = [k for k in ("same_vocab", "same_chat_template", "finite_weights", "generates") if not checks[k]]
    if failed:
        detail = f" (non-finite: {', '.join(bad[:3])})" if bad else ""
        raise UserError(f"merge: the merged model failed its checks: {', '.join(failed)}{detail}; nothing was "
                        f"written to {cfg.output}")
    return checks


def _candidates(cfg: MergeConfig) -> list[MergeConfig]:
    s = cfg.search
    weights = s.weights or [[m.weight for m in cfg.models]]
    densities = s.density or [None]
    out = []
    for w in weights:
        if len(w) != len(cfg.models):
            raise UserError(f"search.weights: {w} has {len(w)} weights for {len(cfg.models)} models; give one each")
        for d in densities:
            if d is not None and not 0 < d <= 1:
                raise UserError(f"search.density: {d} is outside (0, 1]")
            models = [m.model_copy(update={"weight": wi, **({"density": d} if d is not None else {})})
                      for m, wi in zip(cfg.models, w)]
            out.append(cfg.model_copy(update={"models": models}))  # keeps search: the scorer reads its dev sets
    return out


def resolve_scorer(cfg: MergeConfig, scorer: Scorer | None) -> Scorer:
    if scorer is not None:
        return scorer
    name = cfg.search.scorer
    if name == "dev_accuracy":
        from .scoring import dev_accuracy
        return dev_accuracy
    if ":" not in name:
        raise UserError(f"search.scorer: '{name}' is neither 'dev_accuracy' nor 'package.module:function'")
    import importlib
    mod, fn = name.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise UserError(f"search.scorer: cannot import {name} ({e})") from None


def run(cfg: MergeConfig, scorer: Scorer | None = None) -> dict[str, Any]:
    """Merge (or search a grid of merges), check the result, and write the run directory atomically."""
    candidates = _candidates(cfg) if cfg.search else [cfg]
    # candidates differ from each other only in weights/density: one full validation covers the inputs
    resolved = validate(candidates[0])
    for c in candidates:
        check_weights(c, "search.weights")
    score_fn = resolve_scorer(cfg, scorer) if cfg.search else None
    inputs = {"base_model": resolved["base"].path} if resolved["base"] else {}
    inputs.update({f"model_{i}": m.path for i, m in enumerate(resolved["models"])})
    with atomic_dir(cfg.output) as tmp:
        rd = RunDir(tmp, "merge", cfg, seed=cfg.seed, inputs=inputs)
        if not cfg.search:
            mk = mergekit_yaml(cfg, resolved)
            with rd.timed("merge"):
                engine = merge_to(tmp / "model", cfg, mk, resolved["tokenizer"])
            chosen, table = mk, None
        else:
            table = []
            best = None
            for i, cand in enumerate(candidates):
                mk = mergekit_yaml(cand, resolved)
                folder = tmp / "candidates" / f"c{i:02d}"
                console.note(f"merge search: candidate {i + 1}/{len(candidates)} weights="
                             f"{[m.weight for m in cand.models]} density={[m.density for m in cand.models]}")
                with rd.timed("merge"):
                    engine = merge_to(folder, cand, mk, resolved["tokenizer"])
                with rd.timed("score"):
                    score = float(score_fn(folder, cand))
                if not math.isfinite(score):
                    raise UserError(f"search.scorer returned {score} for candidate {i}; it must return a number")
                row = {"candidate": i, "weights": [m.weight for m in cand.models],
                       "density": [m.density for m in cand.models], "score": score}
                table.append(row)
                if best is None or score > best[0]["score"]:
                    if best is not None and not cfg.search.keep_candidates:
                        shutil.rmtree(best[1])
                    best = (row, folder, mk)
                elif not cfg.search.keep_candidates:
                    shutil.rmtree(folder)
            row, folder, chosen = best
            if cfg.search.keep_candidates:
                shutil.copytree(folder, tmp / "model")
            else:
                folder.rename(tmp / "model")
                shutil.rmtree(tmp / "candidates", ignore_errors=True)
            table.sort(key=lambda r: -r["score"])
            atomic_write_json(rd.output("search", "search.json"), {"best": row, "candidates": table})
            atomic_write_text(rd.output("search_table", "search.md"), search_markdown(table))
        atomic_write_text(rd.output("merge_yaml", "merge.yaml"), yaml.safe_dump(chosen, sort_keys=False))
        with rd.timed("checks"):
            checks = post_checks(tmp / "model", cfg, resolved["tokenizer"])
        atomic_write_json(rd.output("checks", "checks.json"), checks)
        rd.output("model", "model")
        result = {"model": str(Path(cfg.output) / "model"), "method": cfg.method, "engine": engine, "checks": {
            k: checks[k] for k in ("same_vocab", "same_chat_template", "finite_weights", "generates")}}
        if table:
            result["best"] = table[0]
            result["candidates"] = len(table)
        rd.finish(result=result, metrics={f"check.{k}": float(bool(v)) for k, v in result["checks"].items()})
    return result


def search_markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| rank | candidate | weights | density | score |", "|---|---|---|---|---|"]
    for r, row in enumerate(table, 1):
        lines.append(f"| {r} | c{row['candidate']:02d} | {row['weights']} | {row['density']} | {row['score']:.4f} |")
    return "\n".join(lines) + "\n"
