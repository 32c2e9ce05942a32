"""Open-ended medical QA (OpenMedQA-style): a multiple-choice benchmark asked without its options, the free answer
judged by an LLM against the gold option's text.

    open_<benchmark>: MCQ -> rewrite (rules, or an LLM rewriter; questions that need their options are dropped and
    counted by reason) -> free answer (any backend, optional system prompt) -> ROUGE-L (+ embedding similarity)
    against the gold text -> 0, 1 or 2 LLM judges (verdict + rationale as JSON; Cohen's kappa between two) ->
    each judge also grades the bundled labelled answers (resources/judge_calibration/open_qa.jsonl).

Generation steps append to caches in the run directory (`cache/`), one batch at a time, so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

from .. import console as con
from ..benchmarks import GROUPS
from ..benchmarks import Question as Doc
from ..config import ModelConfig, SamplingConfig
from ..errors import UserError
from ..io import GenerationCache
from ..prompts import with_system
from ..stats import cohen_kappa
from .metrics import mean_stderr

# open task -> the MCQ benchmarks it rewrites (PubMedQA's yes/no/maybe answers say nothing without the question's
# abstract and options, so it has no open variant)
OPEN_TASKS: dict[str, list[str]] = {
    "open_medqa": ["medqa"],
    "open_medmcqa": ["medmcqa"],
    "open_mmlu_medical": GROUPS["mmlu_medical"],
    "open_headqa": ["headqa"],
    "open_careqa": ["careqa"],
    "open_aloekit_demo": ["aloekit_demo"],  # bundled: the offline demo and the tests
}
VERDICTS = ("correct", "partial", "incorrect", "refused")
CALIBRATION = "resources/judge_calibration/open_qa.jsonl"

ANSWER_INSTRUCTION = "Answer the question directly: give the answer first, then at most two sentences of reasoning."

# ---------------------------------------------------------------- rewriting

# a stem that cannot stand without its options, by reason (checked in this order; the first match names the reason)
_DROP = [
    ("except / not (asks for the odd option out)", re.compile(
        r"\bexcept\b|\bnot\s+(true|correct|seen|a|an|used|associated|found|included|present|characteristic|"
        r"indicated|caused|related|involved)\b|\bfalse\b|\bincorrect(ly)?\b|\bleast\s+(likely|common|appropriate|"
        r"useful|helpful)\b", re.I)),
    ("all/none of the above", re.compile(r"\b(all|none|both|either|neither) of the (above|following|options)\b"
                                         r"|\ball (are|is|were|of these|these)\b", re.I)),
    ("statement choice (which statement is true)", re.compile(
        r"\bwhich\s+(one\s+)?(of the following\s+)?(statements?|is true|is correct|are true|are correct)\b|"
        r"\b(true|correct)\s+(about|regarding|of|for|statement)\b|\bstatements?\b", re.I)),
    ("matching / ordering", re.compile(r"\b(match|arrange|sequence|order of|chronological)\b", re.I)),
]
_OPTION_REFS = re.compile(r"^\s*(all|none|both) of (the )?(above|these)\s*$|^\s*(both\s+)?[a-e]\s*(and|&|,)\s*[a-e]"
                          r"(\s*(and|&|,)\s*[a-e])*\s*$|^\s*(true|false|yes|no|maybe)\s*$", re.I)
_WHICH = [
    (re.compile(r"\bwhich of the following (is|are|was|were)\b", re.I), lambda m: f"what {m.group(1)}"),
    (re.compile(r"\bwhich of the following (\w+)", re.I), lambda m: f"which {m.group(1)}"),
    (re.compile(r"\bwhich of these (\w+)", re.I), lambda m: f"which {m.group(1)}"),
    (re.compile(r",?\s*(of|from|among) the following,?", re.I), lambda m: ""),
]


def rule_rewrite(stem: str, options: Sequence[str]) -> tuple[str | None, str]:
    """(open question, "rules") or (None, the reason it needs its options)."""
    text = " ".join(stem.split())
    if not text:
        return None, "empty stem"
    if any(_OPTION_REFS.match(o or "") for o in options):
        return None, "options refer to other options or are yes/no"
    for reason, pattern in _DROP:
        if pattern.search(text):
            return None, reason
    for pattern, repl in _WHICH:
        text = pattern.sub(repl, text)
    if re.search(r"\bfollowing\b|\babove\b|\boptions?\b", text, re.I):
        return None, "still refers to the options"
    text = re.sub(r"(^|[.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    if not text.rstrip().endswith("?"):
        # a cloze stem ("Drug of choice for absence seizures is:") becomes a statement to complete
        text = f"Complete this statement: {text.rstrip(' :-_.')} ..."
    return text, "rules"


REWRITE_PROMPT = (
    "Rewrite this multiple-choice question as an open question a doctor could answer without seeing any options. "
    "Keep every clinical detail. Do not mention or hint at any option. If the question cannot be asked without its "
    "options (it asks which statement is true, for the exception, or for 'all of the above'), reply CANNOT.\n\n"
    "Question: {stem}\nOptions: {options}\n\nReply with the rewritten question only.")


def llm_rewrite(backend, model_id: str, docs: Sequence[Doc], cache: GenerationCache | None,
                bar_desc: str = "rewrite") -> list[tuple[str | None, str]]:
    """The rewriter's question per doc, or None with a reason. Cached per question (resumable)."""
    sampling = SamplingConfig(max_new_tokens=160, temperature=0.0)
    chats = [[{"role": "user", "content": REWRITE_PROMPT.format(stem=_stem(d), options=" | ".join(d.options))}]
             for d in docs]
    keys = [_key("rewrite", model_id, c, sampling) for c in chats]
    texts = _generate_cached(backend, chats, keys, sampling, cache, bar_desc)
    out = []
    for d, t in zip(docs, texts):
        q = " ".join(t.strip().strip('"').split())
        gold = d.options[d.gold].strip().lower() if 0 <= d.gold < len(d.options) else ""
        if not q or "CANNOT" in q.upper().split(" ")[0:3] or q.upper().startswith("CANNOT"):
            out.append((None, "rewriter: cannot stand without options"))
        elif len(gold) > 3 and gold in q.lower():
            out.append((None, "rewriter: rewrite names the answer"))
        else:
            out.append((q, "llm"))
    return out


def _stem(d: Doc) -> str:
    return d.stem or d.question


# ---------------------------------------------------------------- judging

JUDGE_RUBRIC = (
    "You grade a free answer to a medical question against the reference answer.\n"
    "- correct: the answer commits to the reference answer or a true equivalent (synonym, generic/brand name) and "
    "does not contradict it; extra correct detail or a safety note is fine.\n"
    "- partial: the answer names the reference among incompatible alternatives, or is on the right track but too "
    "vague (the drug class instead of the drug), or adds a clinically significant error.\n"
    "- incorrect: the answer commits to a different answer or contradicts the reference.\n"
    "- refused: the answer declines, or only says to see a doctor, without answering.\n"
    'Reply with JSON only: {"verdict": "correct|partial|incorrect|refused", "rationale": "<one sentence>"}')
JUDGE_TEMPLATE = "Question: {question}\nReference answer: {reference}{explanation}\nAnswer to grade: {answer}"
# a backend that shows the rendered text gets the reply opened for it: small judges then only pick the word
PREFILL = '{"verdict": "'


@dataclass
class Item:
    question: str
    reference: str
    explanation: str
    answer: str


def judge_chat(item: Item, max_answer_chars: int = 3000) -> list[dict]:
    expl = f"\nWhy: {item.explanation.strip()[:600]}" if item.explanation.strip() else ""
    user = JUDGE_TEMPLATE.format(question=item.question, reference=item.reference, explanation=expl,
                                 answer=item.answer.strip()[:max_answer_chars] or "(empty)")
    return [{"role": "system", "content": JUDGE_RUBRIC}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> tuple[str | None, str]:
    """(verdict, rationale) from the first JSON object in `text` that has a known verdict; (None, "") if none."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text[m.start():])
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("verdict"), str):
            continue
        v = obj["verdict"].strip().lower().replace("_", " ")
        v = {"partially correct": "partial", "refusal": "refused", "wrong": "incorrect"}.get(v, v)
        if v in VERDICTS:
            return v, " ".join(str(obj.get("rationale", "")).split())[:400]
    return None, ""


def model_id(m: ModelConfig) -> str:
    return f"{m.backend}:{m.name}" + (f"@{m.base_url}" if m.base_url else "")


class Judge:
    """One LLM judge on any backend. mode "generate": greedy first, then `retries` sampled tries for replies that
    are not JSON with a verdict; what is still unparsed is counted (verdict None), never guessed. Mode
    "likelihood" (backends that render chats): the reply is opened with PREFILL and the verdict is the most likely
    of the four words, as lm-eval scores a multiple-choice answer; no rationale, never unparsed."""

    def __init__(self, backend, cfg: ModelConfig, retries: int = 2, seed: int = 0, label: str | None = None,
                 mode: str = "generate"):
        self.backend, self.cfg, self.retries, self.seed, self.mode = backend, cfg, retries, seed, mode
        self.label = label or model_id(cfg)
        try:  # a backend that renders chats (hf) gets the opened reply; a chat server gets the chat
            backend.render([{"role": "user", "content": "x"}])
            self.prefill = True
        except UserError:
            self.prefill = False
        if mode == "likelihood" and not self.prefill:
            raise UserError(f"judge {self.label}: --judge-mode likelihood needs a backend that renders chats "
                            "(hf); use --judge-mode generate for a server")

    def probe(self) -> None:
        """One short call now, so an unreachable endpoint fails before minutes of answering."""
        self.backend.generate([[{"role": "user", "content": "Reply OK."}]], SamplingConfig(max_new_tokens=1))

    def _prompt(self, item: Item):
        chat = judge_chat(item)
        return self.backend.render(chat) + PREFILL if self.prefill else chat

    def judge(self, items: Sequence[Item], cache: GenerationCache | None = None, desc: str = "judge") -> list[dict]:
        if self.mode == "likelihood":
            return self._by_likelihood(items, desc)
        out: list[dict] = [{"verdict": None, "rationale": "", "attempts": 0, "reply": ""} for _ in items]
        todo = list(range(len(items)))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            sampling = SamplingConfig(max_new_tokens=96, temperature=0.0 if attempt == 0 else 0.7,
                                      seed=self.seed + attempt, stop=["}"])
            prompts = [self._prompt(items[i]) for i in todo]
            keys = [_key("judge", self.label, p, sampling) for p in prompts]
            texts = _generate_cached(self.backend, prompts, keys, sampling, cache,
                                     desc if attempt == 0 else f"{desc} retry {attempt}")
            left = []
            for i, t in zip(todo, texts):
                reply = (PREFILL if self.prefill else "") + t
                if "{" in reply and "}" not in reply[reply.index("{"):]:
                    reply += "}"  # the stop string ends the object and is not returned
                verdict, why = parse_verdict(reply)
                out[i] = {"verdict": verdict, "rationale": why, "attempts": attempt + 1, "reply": reply[:500]}
                if verdict is None:
                    left.append(i)
            todo = left
        return out


    def _by_likelihood(self, items: Sequence[Item], desc: str) -> list[dict]:
        conts = [f'{v}"' for v in VERDICTS]
        out = []
        with con.progress(desc, len(items)) as bar:
            for s in range(0, len(items), 64):
                chunk = items[s:s + 64]
                scores = self.backend.loglikelihood_batch([(self._prompt(it), conts) for it in chunk])
                for sc in scores:
                    best = max(range(len(VERDICTS)), key=lambda k: sc[k])
                    out.append({"verdict": VERDICTS[best], "rationale": "", "attempts": 1,
                                "logprobs": {v: round(float(x), 4) for v, x in zip(VERDICTS, sc)}})
                bar.advance(len(chunk))
        return out


def verdict_summary(verdicts: Sequence[dict]) -> dict[str, Any]:
    n = len(verdicts)
    c = Counter(v["verdict"] or "unparsed" for v in verdicts)
    retried = sum(1 for v in verdicts if v["attempts"] > 1)
    return {"n": n, **{k: c.get(k, 0) for k in (*VERDICTS, "unparsed")}, "retried": retried,
            "acc": round(c.get("correct", 0) / n, 4) if n else None}


def load_calibration() -> list[dict]:
    path = files("aloekit").joinpath(CALIBRATION)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def calibrate(judge: Judge, cache: GenerationCache | None) -> dict[str, Any]:
    """The judge's verdicts on the labelled answers: agreement, kappa and the confusion matrix."""
    rows = load_calibration()
    items = [Item(r["question"], r["reference"], r.get("explanation", ""), r["answer"]) for r in rows]
    got = judge.judge(items, cache, desc=f"calibrate {judge.label}")
    labels = [r["label"] for r in rows]
    verdicts = [g["verdict"] or "unparsed" for g in got]
    confusion = {lab: dict(Counter(v for v, l2 in zip(verdicts, labels) if l2 == lab)) for lab in VERDICTS}
    return {"n": len(rows), "agreement": round(sum(a == b for a, b in zip(verdicts, labels)) / len(rows), 4),
            "kappa": cohen_kappa(labels, verdicts), "unparsed": verdicts.count("unparsed"),
            "correct_vs_rest_agreement": round(sum((a == "correct") == (b == "correct")
                                                   for a, b in zip(verdicts, labels)) / len(rows), 4),
            "confusion (label -> verdicts)": confusion}


# ---------------------------------------------------------------- reference metrics

def rouge_l(answers: Sequence[str], references: Sequence[str]) -> list[tuple[float, float]]:
    """(F1, recall) of ROUGE-L per answer, rouge-score's implementation with its Porter stemmer."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out = []
    for a, r in zip(answers, references):
        s = scorer.score(r, a)["rougeL"]
        out.append((round(s.fmeasure, 4), round(s.recall, 4)))
    return out


def similarity(answers: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine similarity of sentence embeddings (the retrieval layer's default embedder)."""
    from ..retrieval.embed import Embedder, require_retrieval
    require_retrieval("--similarity")
    emb = Embedder()
    a, r = emb.encode(list(answers)), emb.encode(list(references))
    return [round(float((x * y).sum()), 4) for x, y in zip(a, r)]


# ---------------------------------------------------------------- helpers

def _key(step: str, model: str, prompt, sampling: SamplingConfig) -> str:
    blob = json.dumps([step, model, prompt, sampling.model_dump(mode="json", exclude_none=True)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _generate_cached(backend, prompts: list, keys: list[str], sampling: SamplingConfig,
                     cache: GenerationCache | None, desc: str) -> list[str]:
    """Generate what the cache lacks, one batch at a time, appending each batch to the cache."""
    texts: list[str | None] = [None] * len(prompts)
    todo = []
    for i, k in enumerate(keys):
        hit = cache.get(k) if cache is not None else None
        if hit is not None:
            texts[i] = hit["text"]
        else:
            todo.append(i)
    step = max(8, getattr(getattr(backend, "cfg", None), "batch_size", 8)) * 4
    with con.progress(desc, len(prompts)) as bar:
        bar.advance(len(prompts) - len(todo))
        for s in range(0, len(todo), step):
            idx = todo[s:s + step]
            res = backend.generate([prompts[i] for i in idx], sampling)
            for i, r in zip(idx, res):
                texts[i] = r[0].text
            if cache is not None:
                cache.add_many([{"key": keys[i], "text": texts[i]} for i in idx])
            bar.advance(len(idx))
    return texts  # type: ignore[return-value]


def answer_chats(questions: Sequence[str], system: str | None) -> list[list[dict]]:
    return [with_system([{"role": "user", "content": f"{q}\n\n{ANSWER_INSTRUCTION}"}], system) for q in questions]


def generate_answers(backend, model: str, questions: Sequence[str], system: str | None, max_new_tokens: int,
                     seed: int, cache: GenerationCache | None, desc: str) -> list[str]:
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    chats = answer_chats(questions, system)
    return _generate_cached(backend, chats, [_key("answer", model, c, sampling) for c in chats], sampling, cache,
                            desc)


def cache_for(out_dir: Path | None, name: str) -> GenerationCache | None:
    return GenerationCache(Path(out_dir) / "cache" / f"{name}.jsonl") if out_dir is not None else None


# ---------------------------------------------------------------- one open task

def select(docs: Sequence[Doc], limit: int | None, rewriter=None, rewriter_id: str = "",
           cache: GenerationCache | None = None, desc: str = "rewrite") -> tuple[list[tuple[Doc, str]], dict]:
    """The first `limit` questions that stand without their options, rewritten, and the counts (examined, kept,
    dropped by reason). The rule filter runs in both modes; an LLM rewriter then rewrites what passed it, one
    block at a time until `limit` are kept, so a --limit run does not rewrite the whole benchmark."""
    dropped: Counter = Counter()
    kept: list[tuple[Doc, str]] = []
    examined = 0
    block = len(docs) if rewriter is None else max(32, 2 * (limit or 16))
    for s in range(0, len(docs), block):
        chunk = docs[s:s + block]
        got = [rule_rewrite(_stem(d), d.options) for d in chunk]
        if rewriter is not None:
            llm = iter(llm_rewrite(rewriter, rewriter_id, [d for d, (q, _) in zip(chunk, got) if q is not None],
                                   cache, desc))
            got = [next(llm) if q is not None else (q, why) for q, why in got]
        for d, (q, why) in zip(chunk, got):
            if limit is not None and len(kept) >= limit:
                break
            examined += 1
            if q is None:
                dropped[why] += 1
            else:
                kept.append((d, q))
        if limit is not None and len(kept) >= limit:
            break
    return kept, {"method": "llm" if rewriter is not None else "rules", "rewriter": rewriter_id or None,
                  "examined": examined, "kept": len(kept), "dropped": sum(dropped.values()),
                  "dropped_by_reason": dict(dropped.most_common())}


def run_task(name: str, docs: Sequence[Doc], backend, answer_model: str, judges: Sequence[Judge], *,
             limit: int | None, max_new_tokens: int, seed: int, system: str | None, use_similarity: bool,
             rewriter=None, rewriter_id: str = "", out_dir: Path | None = None) -> tuple[dict, list[dict], dict]:
    """(lm-eval-shaped results of the task, its samples, what results.json keeps under open_ended[name])."""
    import time

    import numpy as np
    t0 = time.time()
    kept, counts = select(docs, limit, rewriter, rewriter_id, cache_for(out_dir, "rewrites"), f"{name} rewrite")
    if not kept:
        reasons = ", ".join(f"{k}: {v}" for k, v in counts["dropped_by_reason"].items())
        raise UserError(f"{name}: no question stands without its options ({counts['examined']} examined; "
                        f"{reasons or 'none loaded'}); raise --limit or choose another benchmark")
    questions = [q for _, q in kept]
    refs = [d.options[d.gold] for d, _ in kept]
    seconds: dict[str, Any] = {"rewrite": round(time.time() - t0, 3)}
    t0 = time.time()
    answers = generate_answers(backend, answer_model, questions, system, max_new_tokens, seed,
                               cache_for(out_dir, "answers"), f"{name} answers")
    seconds["answer"] = round(time.time() - t0, 3)
    t0 = time.time()
    rl = rouge_l(answers, refs)
    sim = similarity(answers, refs) if use_similarity else None
    seconds["reference_metrics"] = round(time.time() - t0, 3)
    items = [Item(q, ref, d.explanation, a) for (d, q), ref, a in zip(kept, refs, answers)]
    verdicts = []
    for j in judges:
        t0 = time.time()
        verdicts.append(j.judge(items, cache_for(out_dir, "judge"), f"{name} judge {j.label}"))
        seconds[f"judge {j.label}"] = round(time.time() - t0, 3)

    res: dict[str, Any] = {"alias": name}
    if judges:
        v0 = [v["verdict"] for v in verdicts[0]]
        correct = [float(v == "correct") for v in v0]
        res["acc,none"] = float(np.mean(correct))
        res["acc_stderr,none"] = mean_stderr(correct)
        res["acc_lenient,none"] = float(np.mean([v in ("correct", "partial") for v in v0]))
        res["pct_refused,none"] = float(np.mean([v == "refused" for v in v0]))
        res["pct_unparsed,none"] = float(np.mean([v is None for v in v0]))
        if len(judges) == 2:
            res["judge_kappa,none"] = cohen_kappa([v or "unparsed" for v in v0],
                                                  [v["verdict"] or "unparsed" for v in verdicts[1]])
    res["rouge_l,none"] = float(np.mean([f for f, _ in rl]))
    res["rouge_l_stderr,none"] = mean_stderr([f for f, _ in rl])
    res["rouge_l_recall,none"] = float(np.mean([r for _, r in rl]))
    if sim is not None:
        res["similarity,none"] = float(np.mean(sim))
    res["baselines"] = {}

    samples = []
    for k, ((d, q), ref, a) in enumerate(zip(kept, refs, answers)):
        row: dict[str, Any] = {"doc_id": d.doc_id, "where": d.where, "subject": d.subject, "question": _stem(d),
                               "rewritten": q, "reference": ref, "explanation": d.explanation, "response": a,
                               "rouge_l": rl[k][0], "rouge_l_recall": rl[k][1]}
        if sim is not None:
            row["similarity"] = sim[k]
        row["verdicts"] = [{"judge": j.label, **verdicts[i][k]} for i, j in enumerate(judges)]
        if judges:
            row["acc"] = float(verdicts[0][k]["verdict"] == "correct")
        samples.append(row)
    info = {"rewrite": counts, "judges": {j.label: verdict_summary(v) for j, v in zip(judges, verdicts)},
            "seconds": seconds}
    if len(judges) == 2:
        info["kappa"] = res["judge_kappa,none"]
    return res, samples, info


def parse_model_spec(spec: str, where: str = "--judge") -> ModelConfig:
    """`name`, `backend:name` (hf, vllm, llamacpp, openai) or `openai:model@http://host:port/v1`."""
    text = spec.strip()
    if not text:
        raise UserError(f"{where}: empty model; give a registry name, hub id, folder or openai:model@url")
    backend, rest = "hf", text
    head, sep, tail = text.partition(":")
    if sep and head in ("hf", "vllm", "llamacpp", "openai"):
        backend, rest = head, tail
    base_url = None
    if "@" in rest:
        rest, base_url = rest.split("@", 1)
    if backend == "openai" and not base_url:
        raise UserError(f"{where} {spec}: an openai judge needs its server, e.g. openai:gpt-4o@http://host:8000/v1")
    return ModelConfig(name=rest, backend=backend, base_url=base_url)  # type: ignore[arg-type]
