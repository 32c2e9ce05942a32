"""Safety DPO pairs from successful attacks: prompt = the attacked message, rejected = the model's unsafe
answer, chosen = a safe response (MedSafetyBench's own where it exists, else a refusal-with-guidance from a
configured model or from the templates below). Written as JSONL and as an HF dataset for DPO stage 2."""

from __future__ import annotations

import hashlib
from typing import Sequence

from ..config import SamplingConfig

# Refusals that still help: say no, say briefly why, point to a legitimate route.
GUIDANCE = {
    "self_harm": "If you are thinking about harming yourself, please reach out now to someone you trust or to a "
                 "crisis line (in the US call or text 988; elsewhere, your local emergency number). You deserve "
                 "support, and talking to someone can help.",
    "medical": "If this is about a real clinical situation, a licensed clinician, pharmacist or your institution's "
               "ethics committee can help you find a safe, lawful way forward, and I am glad to explain the "
               "relevant medical facts or guidelines.",
    "general": "If you are dealing with a situation behind this request, I'm glad to help with a safe and legal "
               "alternative, or to point you to appropriate professional resources.",
}
OPENINGS = [
    "I can't help with that.",
    "I'm sorry, but I can't help with this request.",
    "I won't provide that.",
]
REASONS = {
    "self_harm": "It could put your life or health at serious risk.",
    "medical": "It could harm patients and goes against medical ethics and the law.",
    "general": "It could cause real harm to people.",
}

REFUSAL_SYSTEM = ("You are a careful medical assistant. The user's request is harmful. Refuse it in two or three "
                  "sentences: say you can't help, say briefly why it could cause harm, and offer a safe, legitimate "
                  "alternative or resource. Do not include any of the harmful content.")


def topic(row: dict) -> str:
    cat = f"{row['source']} {row['category']}".lower()
    if any(k in cat for k in ("suicide", "self-harm", "self_harm", "eating")):
        return "self_harm"
    if row["source"] == "medsafetybench" or "medical" in cat:
        return "medical"
    return "general"


def template_refusal(row: dict) -> str:
    t = topic(row)
    pick = int(hashlib.sha256(row["request_id"].encode()).hexdigest(), 16) % len(OPENINGS)
    return f"{OPENINGS[pick]} {REASONS[t]} {GUIDANCE[t]}"


def build_pairs(rows: Sequence[dict], chosen: str = "auto", chosen_backend=None,
                exclude_splits: Sequence[str] = ("test",), judge=None) -> tuple[list[dict], dict]:
    """Pairs from successful attempts; returns (pairs, stats). `judge` (a MarkerJudge) checks that a
    model-written chosen answer really is a refusal; if not, the template is used and counted as such."""
    use = [r for r in rows if r["success"] and r.get("split") not in set(exclude_splits)]
    skipped = sum(1 for r in rows if r["success"] and r.get("split") in set(exclude_splits))
    chosen_text: dict[int, tuple[str, str]] = {}
    need_model = []
    for k, r in enumerate(use):
        if chosen == "auto" and r.get("safe_response"):
            chosen_text[k] = (r["safe_response"], "dataset_safe_response")
        elif chosen == "model" or (chosen == "auto" and chosen_backend is not None):
            need_model.append(k)
        else:
            chosen_text[k] = (template_refusal(r), "template")
    if need_model:
        chats = [[{"role": "system", "content": REFUSAL_SYSTEM}, {"role": "user", "content": use[k]["request"]}]
                 for k in need_model]
        outs = chosen_backend.generate(chats, SamplingConfig(max_new_tokens=128, temperature=0.0))
        for k, o in zip(need_model, outs):
            text = o[0].text.strip()
            if judge is not None and judge.refusal(text) != "refusal":
                chosen_text[k] = (template_refusal(use[k]), "template_model_not_refusal")
            else:
                chosen_text[k] = (text, "model")
    pairs = []
    for k, r in enumerate(use):
        text, src = chosen_text[k]
        pairs.append({"prompt": r["prompt"], "chosen": text, "rejected": r["response"],
                      "request": r["request"], "request_id": r["request_id"], "source": r["source"],
                      "category": r["category"], "attack": r["attack"], "chosen_source": src})
    stats: dict[str, int] = {}
    for p in pairs:
        stats[p["chosen_source"]] = stats.get(p["chosen_source"], 0) + 1
    return pairs, {"n": len(pairs), "chosen_sources": stats, "skipped_eval_split": skipped}


def retain_pairs(rows: Sequence[dict]) -> tuple[list[dict], int]:
    """Pairs that keep benign prompts answered: chosen = the model's own answer (only where the marker judge read
    it as an answer, not a refusal or a degenerate reply), rejected = a refusal. Returns (pairs, dropped)."""
    pairs = []
    for r in rows:
        if r["refusal"] != "compliance":
            continue
        pairs.append({"prompt": r["prompt"], "chosen": r["response"],
                      "rejected": f"{OPENINGS[int(hashlib.sha256(r['request_id'].encode()).hexdigest(), 16) % len(OPENINGS)]} "
                                  f"{REASONS['general']}",
                      "request": r["request"], "request_id": r["request_id"], "source": r["source"],
                      "category": r["category"], "attack": "none", "chosen_source": "retain_own_answer"})
    return pairs, len(rows) - len(pairs)
