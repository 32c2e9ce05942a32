"""The released model's card (model_card/README.md with Hugging Face front matter) and `push_to_hub`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..io import atomic_write_text
from ..prompts import MEDICAL_SYSTEM_PROMPT, resolve_system_prompt
from ..recipe.config import CARD_KEYS, check_model_card
from .rundata import (
    Run,
    Stage,
    attack_counts,
    benchmark_table,
    eval_details,
    headline,
    load,
    per_attack,
    percent_metric,
    prompt_labels,
    safety_prompt,
    safety_rows,
    training_runs,
)

# The base models' own licenses, as the hub spells them: a fine-tune inherits its base model's license.
LICENSES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1",
    "meta-llama/Llama-3.1-8B": "llama3.1",
    "meta-llama/Meta-Llama-3-8B": "llama3",
    "Qwen/Qwen2.5-7B-Instruct": "apache-2.0",
    "Qwen/Qwen2.5-7B": "apache-2.0",
    "mistralai/Mistral-7B-Instruct-v0.3": "apache-2.0",
}

DISCLAIMER = (
    "**Medical disclaimer.** This model is a research artifact. It is **not a medical device**, has not been "
    "clinically validated or approved by any regulator, and must **not be used for diagnosis, treatment or any "
    "clinical decision without a qualified healthcare professional** who reviews every output. It can produce "
    "fluent, confident and wrong medical statements. In an emergency, contact local emergency services.")

SCORING = {"loglik": "option log-likelihood, as lm-evaluation-harness (zero-shot)",
           "letter": "log-probability of the answer letter after the chat template",
           "generate": "greedy free-text answer, final letter parsed (unparsable = wrong)"}


def hub_id(name: str | None) -> str | None:
    """The hub id behind a model name (registry name or org/name); None for a local folder."""
    from ..models import REGISTRY
    if not name:
        return None
    if name in REGISTRY:
        return REGISTRY[name].hub_id
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists():
        return name
    return None


def _dataset_ids(data: Stage | None) -> list[str]:
    """Hub datasets the data stage read or has a hub twin for (local-only sources cannot be linked)."""
    if data is None:
        return []
    from ..data.sources import REGISTRY
    cfg = yaml.safe_load(data.file("config.yaml").read_text(encoding="utf-8")) or {}
    ids = []
    for src in cfg.get("sources") or []:
        spec = REGISTRY.get(src.get("name"))
        hid = src.get("hub_id") or (spec.hub_id if spec else None)
        if hid and hid not in ids:
            ids.append(hid)
    return ids


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _val(key: str, v: Any) -> str:
    if v is None:
        return "–"
    return _pct(v) if percent_metric(key) else f"{v:.4g}"


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return (["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows] + [""])


check_settings = check_model_card  # the recipe's `model_card:` section (recipe/config.py)


def card_settings(run: Run, **given: Any) -> dict[str, Any]:
    """license / language / datasets / tags: the arguments, else the recipe's `model_card:` section."""
    recipe = yaml.safe_load(run.recipe_text or "") or {}
    section = recipe.get("model_card") or {}
    check_settings(section, f"{run.path / 'recipe.yaml'}: model_card")
    out = {k: given.get(k) if given.get(k) is not None else section.get(k) for k in CARD_KEYS}
    for k in ("language", "datasets", "tags"):
        if isinstance(out[k], str):
            out[k] = [out[k]]
    return out


def front_matter(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    models = run.manifest.get("models") or {}
    bases = list(dict.fromkeys(h for h in (hub_id(v) for v in models.values()) if h))
    lic = settings["license"] or next((LICENSES[b] for b in bases if b in LICENSES), None) or "other"
    # the kinds of the merge and training stages that ran (merge, sft, dpo)
    extra = list(dict.fromkeys(s.kind for s in [*run.section("merge"), *run.section("training")]))
    fm: dict[str, Any] = {"license": lic, "language": settings["language"] or ["en"], "library_name": "transformers",
                          "pipeline_tag": "text-generation",
                          "tags": list(dict.fromkeys(["medical", "healthcare", "aloe", "aloekit", *extra,
                                                      *(settings["tags"] or [])]))}
    # always present, even empty: a local base model or bundled data have no hub id to link to
    fm["base_model"] = bases
    fm["datasets"] = list(dict.fromkeys([*_dataset_ids(run.one("data")), *(settings["datasets"] or [])]))
    return fm


def evaluation(run: Run) -> list[str]:
    final = run.final_eval()
    cols, rows = benchmark_table(run)
    if final is None or not rows:
        return ["No benchmark evaluation ran in this recipe.", ""]
    first = rows[0][0]
    have = dict((s.name, v) for s, v in rows)
    final_vals = have.get(final.name, {})
    info = eval_details(final) or eval_details(first)
    shown = [eval_details(s) for s in ([first] if first is final else [first, final])]
    same = first is final
    header = ["benchmark.metric", "n", "scoring", "system prompt"] + (
        [final.label] if same else [f"{first.label} (first)", f"{final.label} (final)"])
    body = []
    for c in headline(run, cols):  # each benchmark's main metric; the report has every metric
        i = info.get(c)
        r = [c, i.n if i and i.n is not None else "–", i.scoring if i and i.scoring else "–", prompt_labels(shown, c)]
        r += [_val(c, have[first.name].get(c))] if not same else []
        r += [_val(c, final_vals.get(c))]
        body.append(r)
    modes = sorted({m for i in info.values() if i.scoring for m in i.scoring.split("/")})
    notes = [f"- `{m}`: {SCORING.get(m, m)}" for m in modes]
    return (["Each benchmark's main metric (a group stands for its subtasks), accuracies in %; scoring mode and "
             "the system prompt it was measured with per benchmark (aloekit eval, lm-eval metric definitions; "
             "loglik scoring never uses a system prompt):", ""]
            + notes + [""] + _md_table(header, body))


def safety(run: Run) -> list[str]:
    rows = safety_rows(run)
    if not rows:
        return ["No safety evaluation ran in this recipe: the model's safety is **not measured**.", ""]
    final = run.final_eval()
    last = next(((s, m) for s, m in rows if final is not None and s is final), rows[-1])
    first = rows[0]
    keys = [k for k in dict.fromkeys([*first[1], *last[1]]) if not k.startswith("safety.asr.")]
    same = first[0] is last[0]
    header = ["metric"] + ([last[0].label] if same else [f"{first[0].label} (before)", f"{last[0].label} (after)"])
    body = [[k] + ([] if same else [_pct(first[1].get(k))]) + [_pct(last[1].get(k))] for k in keys]
    out = _md_table(header, body)
    a0, a1 = per_attack(first[1]), per_attack(last[1])
    if a1:
        n = attack_counts(last[0])
        out += [f"Attack success rate per attack ({len(a1)} attacks):", ""]
        out += _md_table(["attack", "attempts"] + header[1:],
                         [[a, n.get(a, "–")] + ([] if same else [_pct(a0.get(a))]) + [_pct(v)] for a, v in a1.items()])
    prompts = list(dict.fromkeys(safety_prompt(s) for s in ([last[0]] if same else [first[0], last[0]])))
    out += [f"Measured with system prompt `{prompts[0]}`." if len(prompts) == 1 else
            f"Measured with system prompt `{prompts[0]}` (before) and `{prompts[1]}` (after).", ""]
    summ = last[0].json("safety/summary.json", required=False)
    if summ:
        out += [f"Red team: {summ['attacks']['n']} attempts, primary judge `{summ['primary_judge']}`."
                + (" The marker judge counts any non-refusal as a success: its ASR is an upper bound."
                   if summ["primary_judge"] == "marker" else ""), ""]
    return out


def training(run: Run) -> list[str]:
    out = []
    supervised, preference = training_runs(run)
    for s, m in supervised:
        out += [f"- SFT (`{s.name}`): {m.get('train_rows')} rows, {m.get('steps')} steps, train loss "
                f"{m.get('train_loss', 0):.4g}"
                + (f", validation loss {m['eval_loss_before']:.4g} → {m['eval_loss_after']:.4g}"
                   if m.get("eval_loss_after") is not None else "")
                + (f", {m['tokens_seen']:,} tokens" if m.get("tokens_seen") else "") + "."]
    for s, stages in preference:
        for d in stages:
            b, a = d.get("before", {}), d.get("after", {})
            acc = (f", reward accuracy {b['rewards/accuracies']:.3g} → {a['rewards/accuracies']:.3g}"
                   if "rewards/accuracies" in a and "rewards/accuracies" in b else "")
            out += [f"- DPO (`{s.name}`, stage `{d.get('stage')}`): {d.get('pairs')} preference pairs, "
                    f"{d.get('steps')} steps, train loss {d.get('train_loss', 0):.4g}{acc}."]
    return (out or ["No training stage ran in this recipe."]) + [""]


def merge(run: Run) -> list[str]:
    st = run.one("merge")
    if st is None:
        return ["No merge stage in this recipe.", ""]
    mk = st.file("merge.yaml").read_text(encoding="utf-8")
    checks = st.json("checks.json")
    flags = ", ".join(f"{k}: {'ok' if checks[k] else 'FAILED'}" for k in
                      ("same_vocab", "same_chat_template", "finite_weights", "generates") if k in checks)
    return [f"Merged with [mergekit](https://github.com/arcee-ai/mergekit) (`{yaml.safe_load(mk).get('merge_method')}`"
            f"); post-merge checks: {flags}.", "", "```yaml", mk.rstrip(), "```", ""]


def data(run: Run) -> list[str]:
    st = run.one("data")
    if st is None:
        return ["No data stage in this recipe.", ""]
    card = st.json("card.json")
    out = [f"Built by `aloekit data build` (seed {card['seed']}): {card['outputs']['sft_train']} SFT training rows, "
           f"{card['outputs']['preference_train']} preference pairs.", ""]
    out += _md_table(["source", "license", "description"],
                     [[s, v["license"], v["description"]] for s, v in card["sources"].items()])
    c = card["decontamination"]
    if c.get("enabled", True):
        removed = sum(c["removed_by_source"].values())
        unchecked = [b for b, st_ in c["benchmarks"].items() if str(st_).startswith("NOT CHECKED")]
        out += [f"Decontamination: {c['n']}-gram overlap against {len(c['benchmarks']) - len(unchecked)} benchmark "
                f"test splits removed {removed} rows"
                + (f"; **not checked** (no local test split): {', '.join(unchecked)}" if unchecked else "") + ".", ""]
    else:
        out += ["Decontamination: **disabled**; benchmark scores may be inflated by overlap.", ""]
    return out


def serving(run: Run, repo_id: str | None = None) -> list[str]:
    """How to serve the model with the policy prompt it was aligned with (`aloekit serve`, docs/serve.md)."""
    from ..serve.config import recipe_system
    found = recipe_system(run.path)
    # the recipe may name a registered prompt (system: aloe_medical): the card quotes its text
    policy = (resolve_system_prompt(found[0], "recipe.yaml: system") if found else None) or MEDICAL_SYSTEM_PROMPT
    target = repo_id or str(run.path)
    name = run.name if not repo_id else repo_id
    return ["## How to serve", "",
            "`aloekit serve` puts it behind an OpenAI-compatible API (`/v1/chat/completions`, streaming included) "
            "with a chat page at `/`, and adds this policy system prompt to every conversation that has none "
            "(`--system-mode prepend|replace` for those that do; `--guard` adds a Llama Guard check):", "",
            "> " + policy, "", "```bash", "pip install 'aloekit[serve]'",
            f"aloekit serve {target}    # the run folder, or the model folder / hub repo", "```", "", "```bash",
            "curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\",
            f"  -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": "
            "\"What are the symptoms of anaemia?\"}]}'", "```", ""]


def render(run: Run, license: str | None = None, language: list[str] | None = None, tags: list[str] | None = None,
           repo_id: str | None = None) -> str:
    settings = card_settings(run, license=license, language=language, tags=tags)
    fm = front_matter(run, settings)
    models = run.manifest.get("models") or {}
    lines = ["---", yaml.safe_dump(fm, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {run.name}", "", DISCLAIMER, ""]
    if not run.releasable():
        stop = run.stopped_by or {}
        undecided = [g for g in run.failed_gates() if g.get("decision") == "inconclusive"] if not stop else []
        lines += [f"> **Not releasable:** the recipe run ended with status `{run.status}`"
                  + (f", stopped by a gate on stage `{stop.get('stage')}`: {stop.get('message')}" if stop else "")
                  + "".join(f"; gate {g.get('index')} on `{g.get('stage')}` was inconclusive: {g.get('message')}"
                            for g in undecided)
                  + ". The numbers below describe the last model that was evaluated.", ""]
    lines += ["A medical assistant built with aloekit following the Aloe recipe, from "
              + ", ".join(f"{k} model `{v}`" for k, v in models.items()) + f"; seed {run.manifest.get('seed')}.",
              "", "Stages: " + " → ".join(f"`{s.name}`" + ("" if s.ran else f" ({s.status})") for s in run.stages)
              + ".", ""]
    if fm["license"] == "other" and not settings["license"]:
        lines += ["License: not known for the base model; set `model_card.license` in the recipe before "
                  "publishing.", ""]
    lines += ["## Intended use", "",
              "- Research on medical question answering and on the safety alignment of medical LLMs.",
              "- Drafting and explaining medical information **for review by a qualified professional**.",
              "- Not for: diagnosis or treatment decisions, triage, emergencies, or unsupervised advice to patients.",
              ""]
    lines += ["## How to use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'repo = "{repo_id or "<this folder or hub repo>"}"',
              "tok = AutoTokenizer.from_pretrained(repo)", "model = AutoModelForCausalLM.from_pretrained(repo)",
              "```", ""]
    lines += serving(run, repo_id)
    lines += ["## Evaluation", ""] + evaluation(run)
    lines += ["## Safety", ""] + safety(run)
    lines += ["## Training", ""] + training(run)
    lines += ["## Merge configuration", ""] + merge(run)
    lines += ["## Training data", ""] + data(run)
    lines += ["## Limitations", "",
              "- Benchmark accuracy on multiple-choice exams does not measure clinical safety or usefulness.",
              "- Small models (such as the default 135M-parameter one) answer many questions near chance and "
              "produce fluent errors.",
              "- Red-team numbers depend on the judge, the attacks and the request sets used; a low attack success "
              "rate does not mean the model is safe against other attacks.",
              "- Only English benchmarks were evaluated; other languages are untested.",
              "- Biases of the base model and of the training data remain.", ""]
    if run.recipe_text:
        lines += ["## Reproduce", "", "`aloekit run recipe.yaml` with this resolved recipe:", "", "```yaml",
                  run.recipe_text.rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path, out_dir: str | Path | None = None, license: str | None = None,
                     language: list[str] | None = None, tags: list[str] | None = None,
                     repo_id: str | None = None) -> Path:
    """Write <out_dir or run_dir/model_card>/README.md and return its path. license / language / tags default to
    the recipe's `model_card:` section (tags are added to the built-in ones)."""
    run = load(run_dir)
    out = Path(out_dir) if out_dir else run.path / "model_card"
    return atomic_write_text(out / "README.md", render(run, license, language, tags, repo_id))


def push_to_hub(model_dir: str | Path, card: str | Path, repo_id: str, private: bool = True,
                token: str | None = None) -> str:
    """Create the hub repo (private unless asked otherwise) and upload the model folder with the card as its
    README.md. Returns the repo URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    model_dir, card = Path(model_dir), Path(card)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: not a model folder (no config.json); push the recipe's final model")
    if not card.is_file():
        raise UserError(f"{card}: model card not found; write it first (write_model_card)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise UserError(f"--push-to-hub {repo_id}: not a hub repo id; use owner/name")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        # the model folder's own README (e.g. the merge card) is replaced by the release card
        api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), repo_type="model",
                          ignore_patterns=["README.md", "checkpoints/*", ".*"],
                          commit_message="Upload model (aloekit)")
        api.upload_file(path_or_fileobj=str(card), path_in_repo="README.md", repo_id=repo_id, repo_type="model",
                        commit_message="Upload model card (aloekit)")
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"--push-to-hub {repo_id}: {e}; check the network and that you are logged in "
                        "(`hf auth login` or HF_TOKEN)") from None
    return str(url)
