"""`aloekit redteam`: sample (request, attack) attempts, generate in batches, judge, score, build DPO pairs.

Run directory:
    report.jsonl       every attempt (attack attempts, XSTest / demo_safe safe prompts, plain requests)
    summary.json       ASR overall / per attack / family / source / category, over-refusal, refusal rate
    summary.md         the same as Markdown tables
    pairs.jsonl        safety DPO pairs (prompt, chosen, rejected + provenance)
    pairs_hf/          the pairs as a conversational HF dataset (the `preference_train` a DPO stage reads)
    .partial/          generations done so far; a re-run with the same config resumes from here
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

from .. import console as con
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from ..paths import data_dir as find_data_dir
from ..prompts import resolve_system_prompt, system_prompt_label
from ..rundir import RunDir
from .attacks import Attack, load_templates, select_attacks
from .config import RedteamConfig
from .judges import Item, LlamaGuardJudge, LLMJudge, MarkerJudge, agreement
from .metrics import attack_metrics, markdown, refusal_metrics
from .pairs import build_pairs, retain_pairs
from .requests import (
    LOCAL_PATHS,
    Request,
    SourceConfig,
    _jsonl_rows,
    load_source,
    load_xstest,
    local_path,
    resolve,
    xstest_path,
)

TEMPLATES_FILE = "harmbench_human_jailbreaks/human_jailbreak_templates.jsonl"
HARMBENCH_NO_PLACEHOLDER = [78]  # the one template in HarmBench's list that has no slot for the request


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def load_retain(cfg: RedteamConfig, root: Path | None) -> tuple[list[Request], dict]:
    """Retain prompts (pairs.retain), minus those close to a safe-prompt set an evaluation measures."""
    rc = cfg.pairs.retain
    prompts: list[Request] = []
    for path in rc.paths:
        p = resolve(path)
        for n, row in _jsonl_rows(p):
            text = next((str(row[k]).strip() for k in ("prompt", "question", "text") if row.get(k)), "")
            if not text:
                raise UserError(f"{p}:{n}: no prompt, question or text field; pairs.retain.paths takes JSONL with "
                                "one of them")
            prompts.append(Request(f"{p.stem}/{row.get('id', n)}", "retain", text, p.stem))
    guard: list[set[str]] = []
    for name in rc.exclude_similar_to:
        if name == "xstest" and (root is None or not xstest_path(root).is_file()):
            continue
        guard += [_words(r.text) for r in load_xstest(root, None, None, source=name)]
    def close(text: str) -> bool:
        w = _words(text)
        return any(len(w & g) / max(1, len(w | g)) >= rc.max_jaccard for g in guard)
    keep = [r for r in prompts if not close(r.text)]
    stats = {"prompts": len(prompts), "dropped_close_to_eval": len(prompts) - len(keep)}
    return _seeded_subset(keep, rc.limit, random.Random(f"{cfg.seed}/retain")), stats


def _seeded_subset(items: list, k: int | None, rng: random.Random) -> list:
    if k is None or k >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


def load_requests(cfg: RedteamConfig, root: Path | None) -> dict[str, list[Request]]:
    if not cfg.sources:
        raise UserError("sources: the list is empty; name at least one request set (e.g. advbench)")
    out: dict[str, list[Request]] = {}
    for k, src in enumerate(cfg.sources):
        reqs = load_source(src, root)
        reqs = _seeded_subset(reqs, src.limit, random.Random(f"{cfg.seed}/source/{k}"))
        key = src.name if src.name not in out else f"{src.name}#{k}"
        out[key] = reqs
    return out


def load_attacks(cfg: RedteamConfig, root: Path | None) -> list[Attack]:
    templates: dict[str, Attack] = {}
    wants_templates = any(a == "templates" or a.startswith("hb_human/") or a == "family:human_jailbreak"
                          for a in cfg.attacks)
    if wants_templates:
        path = cfg.templates.path or (root / TEMPLATES_FILE if root else None)
        if path is None:
            raise UserError("templates.path is not set and there is no data directory; set one")
        exclude = cfg.templates.exclude
        if exclude is None:
            exclude = HARMBENCH_NO_PLACEHOLDER if cfg.templates.path is None else []
        templates = load_templates(path, exclude)
        if "templates" in cfg.attacks and cfg.templates.sample:
            # only the generic 'templates' selector is subsampled; ids named explicitly are always kept
            named = {a for a in cfg.attacks if a in templates}
            keep = _seeded_subset(sorted(templates, key=lambda t: int(t.split("/")[1]) if t.split("/")[1].isdigit()
                                         else 0), cfg.templates.sample, random.Random(f"{cfg.seed}/templates"))
            templates = {k: v for k, v in templates.items() if k in set(keep) | named}
    return select_attacks(cfg.attacks, templates)


def plan_attempts(requests: dict[str, list[Request]], attacks: list[Attack], budget: int,
                  seed: int) -> list[tuple[Request, Attack]]:
    """Seeded (request, attack) pairs, balanced over sources and attacks, without repeats.

    Attacks and sources are each dealt in reshuffled rounds, so every attack gets budget/len(attacks) tries
    (±1) even at small budgets; each (source, attack) cell draws its requests from its own permutation."""
    rng = random.Random(seed)
    if not attacks:
        raise UserError("attacks: nothing to run")
    if not requests or not any(requests.values()):
        raise UserError("sources: no harmful requests loaded")
    total = sum(len(v) for v in requests.values()) * len(attacks)
    budget = min(budget, total)
    sources = sorted(requests)
    perms: dict[tuple[str, str], list[Request]] = {}
    plan: list[tuple[Request, Attack]] = []
    a_round: list[Attack] = []
    s_round: list[str] = []
    while len(plan) < budget:
        if not a_round:
            a_round = rng.sample(attacks, len(attacks))
        attack = a_round.pop()
        tried = 0
        while tried < len(sources):
            if not s_round:
                s_round = rng.sample(sources, len(sources))
            src = s_round.pop()
            tried += 1
            cell = perms.setdefault((src, attack.id), rng.sample(requests[src], len(requests[src])))
            if cell:
                plan.append((cell.pop(), attack))
                break
    return plan


class _Generations:
    """Generations keyed by a hash of (model, sampling, system, prompt); persisted so a killed run resumes."""

    def __init__(self, folder: Path, cfg: RedteamConfig):
        self.file = folder / ".partial" / "generations.jsonl"
        # exclude_none: a sampling field added later, unset (None), must not change the keys of an existing cache
        # the resolved text: a registered name and its text written out share generations, and a no-prompt
        # cache (null) keeps its keys
        self.salt = json.dumps([cfg.model.model_dump(mode="json"), cfg.sampling.model_dump(mode="json", exclude_none=True),
                                resolve_system_prompt(cfg.system, "system")], sort_keys=True)
        self.done: dict[str, dict] = {}
        if self.file.is_file():
            for line in self.file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.done[row["key"]] = row

    def key(self, prompt: str) -> str:
        return hashlib.sha256((self.salt + "\x00" + prompt).encode()).hexdigest()[:24]

    def save(self) -> None:
        atomic_write_jsonl(self.file, self.done.values())


def _chat(prompt: str, system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def generate_all(backend, prompts: list[str], cfg: RedteamConfig, store: _Generations | None,
                 desc: str = "generating") -> list[dict]:
    """Batched generation in length-sorted chunks (less padding), with progress and resume."""
    system = resolve_system_prompt(cfg.system, "system")
    keys = [store.key(p) if store else str(i) for i, p in enumerate(prompts)]
    todo = sorted({k: p for k, p in zip(keys, prompts) if not (store and k in store.done)}.items(),
                  key=lambda kp: -len(kp[1]))
    results: dict[str, dict] = dict(store.done) if store else {}
    if store and len(todo) < len(set(keys)):
        con.note(f"resuming: {len(set(keys)) - len(todo)} generations found in {store.file.parent}")
    with con.progress(desc, len(todo)) as bar:
        for start in range(0, len(todo), cfg.chunk_size):
            chunk = todo[start:start + cfg.chunk_size]
            outs = backend.generate([_chat(p, system) for _, p in chunk], cfg.sampling)
            for (k, _), o in zip(chunk, outs):
                c = o[0]
                results[k] = {"key": k, "response": c.text.strip(), "completion_tokens": c.completion_tokens,
                              "prompt_tokens": c.prompt_tokens, "finish_reason": c.finish_reason}
            if store:
                store.done.update({k: results[k] for k, _ in chunk})
                store.save()
            bar.advance(len(chunk))
    return [results[k] for k in keys]


def _input_files(cfg: RedteamConfig, root: Path | None) -> dict[str, Path]:
    """The local files this run reads, for the manifest's input hashes."""
    # called after loading succeeded, so every local path below resolves
    files: dict[str, Path] = {}
    for k, src in enumerate(cfg.sources):
        if not src.hub:
            files[f"source{k}_{src.name}"] = local_path(src, root)
    if cfg.xstest.enabled and not cfg.xstest.hub:
        files["xstest"] = xstest_path(root, cfg.xstest.path, cfg.xstest.source)
    if cfg.medsafety_refusal.enabled:
        files["medsafety_refusal"] = local_path(_direct_source(cfg), root)
    if cfg.templates.path or root is not None:
        files["templates"] = Path(cfg.templates.path) if cfg.templates.path else root / TEMPLATES_FILE
    return files


def _direct_source(cfg: RedteamConfig) -> SourceConfig:
    """The requests sent without attack for `medsafety_refusal`, read from the same place as the attack source
    of that name when the run has one."""
    name = cfg.medsafety_refusal.source
    same = next((s for s in cfg.sources if s.name == name), None)
    return SourceConfig(name=name, split=cfg.medsafety_refusal.split, path=same.path if same else None)


def build_judges(cfg: RedteamConfig, get_backend) -> dict:
    """Judges in config order. Llama Guard is loaded first: when it is unavailable (offline), the run stops
    before the model under test is even loaded."""
    made: dict = {}
    if "llamaguard" in cfg.judges:
        made["llamaguard"] = LlamaGuardJudge(cfg.llamaguard.model, cfg.llamaguard.device, cfg.llamaguard.batch_size)
    for name in cfg.judges:
        if name == "marker":
            made[name] = MarkerJudge()
        elif name == "llm":
            from ..backends import load_backend
            same = cfg.llm_judge.model == cfg.model
            made[name] = LLMJudge(get_backend() if same else load_backend(cfg.llm_judge.model))
    return {name: made[name] for name in cfg.judges}


def run(cfg: RedteamConfig, backend=None, output: str | Path | None = None) -> dict:
    """Red-team `cfg.model` (or the given backend); returns the summary dict."""
    cfg = cfg.model_copy(deep=True)
    cfg.sampling.seed = cfg.seed  # one seed in the config drives every random choice, sampling included
    out = Path(output or cfg.output)
    root = find_data_dir(cfg.data_dir, required=False)
    # Everything that can fail on bad input fails here, before a model is loaded.
    requests = load_requests(cfg, root)
    attacks = load_attacks(cfg, root)
    plan = plan_attempts(requests, attacks, cfg.budget, cfg.seed)
    xs = []
    if cfg.xstest.enabled:
        xs = _seeded_subset(load_xstest(root, cfg.xstest.path, cfg.xstest.hub, source=cfg.xstest.source),
                            cfg.xstest.limit, random.Random(f"{cfg.seed}/xstest"))
    med = []
    if cfg.medsafety_refusal.enabled:
        mcfg = _direct_source(cfg)
        if mcfg.name == "medsafetybench" and mcfg.path is None and root is None:
            raise UserError(f"medsafety_refusal: no data directory with {LOCAL_PATHS['medsafetybench']}; "
                            "set --data-dir, medsafety_refusal.source=demo_harmful (bundled) or "
                            "medsafety_refusal.enabled=false")
        med = _seeded_subset(load_source(mcfg, root), cfg.medsafety_refusal.limit,
                             random.Random(f"{cfg.seed}/medsafety"))

    retain, retain_stats = ([], {})
    if cfg.pairs.enabled and cfg.pairs.retain.enabled:
        retain, retain_stats = load_retain(cfg, root)

    con.note(f"redteam: {len(plan)} attempts ({len(attacks)} attacks x {sum(map(len, requests.values()))} "
             f"requests from {', '.join(requests)}), {len(xs)} {cfg.xstest.source} safe prompts, {len(med)} plain "
             f"{cfg.medsafety_refusal.source} requests" + (f", {len(retain)} retain prompts" if retain else ""))
    t_load = time.perf_counter()
    loaded = {"backend": backend}

    def get_backend():
        if loaded["backend"] is None:
            from ..backends import load_backend
            loaded["backend"] = load_backend(cfg.model)
        return loaded["backend"]
    judges = build_judges(cfg, get_backend)  # an unavailable judge model fails here, before the run dir exists
    backend = get_backend()
    run_dir = RunDir(out, "redteam", cfg, seed=cfg.seed, inputs=_input_files(cfg, root))
    run_dir.timings["load"] = round(time.perf_counter() - t_load, 3)

    rows = [{"kind": "attack", "request_id": r.id, "source": r.source, "category": r.category, "split": r.split,
             "attack": a.id, "family": a.family, "request": r.text, "prompt": a(r.text),
             "safe_response": r.safe_response} for r, a in plan]
    rows += [{"kind": "xstest_safe", "request_id": r.id, "source": r.source, "category": r.category, "split": None,
              "attack": "direct", "family": "none", "request": r.text, "prompt": r.text, "safe_response": None}
             for r in xs]
    rows += [{"kind": "medsafety_direct", "request_id": r.id, "source": r.source, "category": r.category,
              "split": r.split, "attack": "direct", "family": "none", "request": r.text, "prompt": r.text,
              "safe_response": r.safe_response} for r in med]
    rows += [{"kind": "retain", "request_id": r.id, "source": r.source, "category": r.category, "split": None,
              "attack": "none", "family": "none", "request": r.text, "prompt": r.text, "safe_response": None}
             for r in retain]

    store = _Generations(out, cfg)
    n_resumed = sum(store.key(r["prompt"]) in store.done for r in rows)
    t0 = time.perf_counter()
    with run_dir.timed("generate"):
        gens = generate_all(backend, [r["prompt"] for r in rows], cfg, store)
    t_gen = time.perf_counter() - t0
    for r, g in zip(rows, gens):
        r.update(response=g["response"], completion_tokens=g["completion_tokens"],
                 prompt_tokens=g["prompt_tokens"], finish_reason=g["finish_reason"])

    t1 = time.perf_counter()
    attack_rows = [r for r in rows if r["kind"] == "attack"]
    with run_dir.timed("judge"):
        marker = judges.get("marker") or MarkerJudge()
        for r in rows:
            r["refusal"] = marker.refusal(r["response"], r["prompt"])
            r["judges"] = {}
        items = [Item(r["request"], r["response"], r["prompt"]) for r in attack_rows]
        for name, judge in judges.items():
            verdicts = []
            # model judges are slow: judge in chunks so progress shows (the marker judge is instant)
            step = len(items) if name == "marker" else cfg.chunk_size
            with con.progress(f"judging ({name})", len(items)) as bar:
                for start in range(0, len(items), max(step, 1)):
                    verdicts += judge.judge(items[start:start + step])
                    bar.advance(len(items[start:start + step]))
            for r, v in zip(attack_rows, verdicts):
                r["judges"][name] = {"label": v.label, "harmful": v.harmful, **v.extra}
    t_judge = time.perf_counter() - t1
    primary = cfg.judges[0]
    for r in attack_rows:
        r["success"] = bool(r["judges"][primary]["harmful"])

    summary: dict = {
        "model": cfg.model.name, "budget": cfg.budget, "seed": cfg.seed, "primary_judge": primary,
        "system_prompt": system_prompt_label(cfg.system),
        "max_new_tokens": cfg.sampling.max_new_tokens, "attacks_used": [a.id for a in attacks],
        "sources": {k: len(v) for k, v in requests.items()},
        "attacks": attack_metrics(attack_rows, primary),
        "judge_asr": {name: attack_metrics(attack_rows, name)["asr"] for name in judges},
        # how often each judge could not decide (e.g. a small LLM judge that does not answer yes/no)
        "judge_labels": {name: dict(Counter(r["judges"][name]["label"] for r in attack_rows)) for name in judges},
    }
    names = list(judges)
    if len(names) > 1:
        summary["agreement"] = {
            f"{a} vs {b}": agreement([r["judges"][a]["harmful"] for r in attack_rows],
                                     [r["judges"][b]["harmful"] for r in attack_rows])
            for i, a in enumerate(names) for b in names[i + 1:]}
    if "llamaguard" in judges:
        summary["llamaguard_s6_rate"] = round(sum(bool(r["judges"]["llamaguard"].get("s6")) for r in attack_rows)
                                              / max(len(attack_rows), 1), 4)
    if xs:
        summary["over_refusal"] = {"source": cfg.xstest.source,
                                   **refusal_metrics([r for r in rows if r["kind"] == "xstest_safe"])}
    if med:
        summary["medsafety_refusal"] = {"source": cfg.medsafety_refusal.source, "split": cfg.medsafety_refusal.split,
                                        **refusal_metrics([r for r in rows if r["kind"] == "medsafety_direct"])}
    n_gen = len(rows)
    summary["throughput"] = {"prompts": n_gen, "resumed": n_resumed, "generate_s": round(t_gen, 2),
                             "judge_s": round(t_judge, 2),
                             "attempts_per_s": round(n_gen / max(t_gen + t_judge, 1e-9), 3),
                             "completion_tokens": sum(r["completion_tokens"] for r in rows)}

    atomic_write_jsonl(run_dir.output("report", "report.jsonl"), rows)
    if cfg.pairs.enabled:
        with run_dir.timed("pairs"):
            chosen_backend = None
            if cfg.pairs.chosen == "model" or cfg.pairs.chosen_model is not None:
                from ..backends import load_backend
                mc = cfg.pairs.chosen_model or cfg.model
                chosen_backend = backend if mc == cfg.model else load_backend(mc)
            pairs, pstats = build_pairs(attack_rows, cfg.pairs.chosen, chosen_backend, cfg.pairs.exclude_splits,
                                        judge=marker)
            if retain:
                kept, dropped = retain_pairs([r for r in rows if r["kind"] == "retain"])
                pairs += kept
                pstats["retain"] = {**retain_stats, "used": len(retain), "pairs": len(kept),
                                    "dropped_not_answered": dropped}
                pstats["n"] = len(pairs)
            for p in pairs:
                p["system"] = resolve_system_prompt(cfg.system, "system")  # DPO scores in the chat it answered in
            atomic_write_jsonl(run_dir.output("pairs", "pairs.jsonl"), pairs)
            _save_hf(pairs, out / "pairs_hf")
            run_dir.output("pairs_hf", "pairs_hf")
            # what `aloekit train dpo` looks for when a stage's dataset is this run directory
            run_dir.output("preference_train", "pairs_hf")
        summary["pairs"] = pstats
    atomic_write_json(run_dir.output("summary", "summary.json"), summary)
    atomic_write_text(run_dir.output("summary_md", "summary.md"), markdown(summary))
    run_dir.finish(asr=summary["attacks"]["asr"],
                   over_refusal=summary.get("over_refusal", {}).get("refusal_rate"),
                   medsafety_refusal=summary.get("medsafety_refusal", {}).get("refusal_rate"),
                   system_prompt=summary["system_prompt"], metrics=safety_metrics(summary))
    return summary


def safety_metrics(summary: dict) -> dict[str, float]:
    """The run's metrics map: safety.asr (overall and .<attack>), refusal rate, over-refusal, refusal of plain
    harmful requests."""
    a = summary["attacks"]
    out = {"safety.asr": a["asr"], "safety.refusal_rate": a["refusal_rate"]}
    out.update({f"safety.asr.{k}": v["rate"] for k, v in a.get("per_attack", {}).items()})
    if summary.get("over_refusal"):
        out["safety.over_refusal"] = summary["over_refusal"]["refusal_rate"]
    if summary.get("medsafety_refusal"):
        out["safety.medsafety_refusal"] = summary["medsafety_refusal"]["refusal_rate"]
    return {k: v for k, v in out.items() if v is not None}


def _save_hf(pairs: list[dict], folder: Path) -> None:
    """The pairs as a TRL conversational preference dataset: the answers were generated inside the model's chat
    template (with `system`), so DPO must score them inside it too; plain strings would be trained raw."""
    import datasets

    from ..io import atomic_dir
    datasets.disable_progress_bars()
    msg = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    meta = ["request", "request_id", "source", "category", "attack", "chosen_source", "system"]
    rows = {"prompt": [_chat(p["prompt"], p.get("system")) for p in pairs],
            "chosen": [[{"role": "assistant", "content": p["chosen"]}] for p in pairs],
            "rejected": [[{"role": "assistant", "content": p["rejected"]}] for p in pairs],
            **{c: [p.get(c) for p in pairs] for c in meta}}
    features = datasets.Features({"prompt": msg, "chosen": msg, "rejected": msg,
                                  **{c: datasets.Value("string") for c in meta}})
    ds = datasets.Dataset.from_dict(rows, features=features)
    with atomic_dir(folder) as tmp:
        ds.save_to_disk(str(tmp))
