"""Instruction templates: each record is rendered with one of >= 10 templates for its kind, picked by a
seeded RNG per record (so the choice does not shift when other records are added or removed). The template id
is stored on every output row."""

from __future__ import annotations

import random

from .records import Record

OPTION_STYLES = ["{L}. {t}", "{L}) {t}", "({L}) {t}", "{L}: {t}", "- {L}. {t}"]

# (user prompt, option style index, answer style). {ctx} is "" or "Context: ...\n\n".
MCQ = [
    ("{ctx}Answer the following multiple-choice question.\n\n{q}\n\n{opts}", 0, "Answer: {L}. {t}"),
    ("{ctx}{q}\n{opts}", 1, "The correct answer is {L}) {t}"),
    ("{ctx}Question: {q}\nOptions:\n{opts}\nWhich option is correct?", 2, "({L}) {t}"),
    ("You are a medical expert. {ctx}Choose the single best answer.\n\n{q}\n\n{opts}", 3, "{L}: {t}"),
    ("{ctx}Read the question and pick one option.\n\nQ: {q}\n{opts}", 0, "The answer is {L}. {t}"),
    ("{ctx}{q}\n\nPossible answers:\n{opts}\n\nReply with the letter of the correct answer and explain why.", 4,
     "{L}. {t}"),
    ("Medical exam question:\n{ctx}{q}\n\n{opts}", 1, "Correct option: {L}) {t}"),
    ("{ctx}Here is a question from a medical licensing exam.\n{q}\n{opts}\nSelect the best option.", 0,
     "Best option: {L}. {t}"),
    ("{ctx}Test your clinical knowledge: {q}\n\nChoices:\n{opts}", 2, "The right choice is ({L}) {t}"),
    ("Which of these options answers the question below?\n\n{ctx}{q}\n{opts}", 3, "Answer {L}: {t}"),
    ("{ctx}Solve this multiple-choice problem step by step.\n\n{q}\n\n{opts}", 0, "So the answer is {L}. {t}"),
]

QA = [
    "{ctx}{q}",
    "{ctx}Question: {q}",
    "{ctx}Please answer the following medical question.\n\n{q}",
    "{ctx}I have a health question: {q}",
    "{ctx}Answer this question as a careful medical assistant would.\n{q}",
    "{ctx}Can you help me with this? {q}",
    "{ctx}Explain in plain language: {q}",
    "{ctx}Give an accurate, evidence-based answer.\n\nQ: {q}",
    "{ctx}A patient asks: \"{q}\" How would you respond?",
    "{ctx}{q}\n\nPlease be clear and concise.",
    "{ctx}Medical question:\n{q}",
]

SYSTEMS = [
    None,
    "You are a helpful medical assistant.",
    "You are a careful medical assistant. Give accurate, evidence-based information and advise seeing a "
    "qualified health professional when appropriate.",
    "You are an expert clinician answering questions from patients and colleagues.",
    "You are a medical AI assistant. Be accurate, honest about uncertainty and safe.",
    "You are a knowledgeable and empathetic healthcare assistant.",
    "You are an assistant that answers medical questions precisely.",
    "You are a medical tutor helping students prepare for exams.",
    "You are a safe and trustworthy medical assistant. Refuse requests that could cause harm.",
    "You are a doctor explaining things clearly to a patient.",
]
CHAT = SYSTEMS  # chats keep their own turns; the template varies the system prompt
PREFERENCE = QA  # preference prompts get the same user-facing wrappers as QA

COUNTS = {"mcq": len(MCQ), "qa": len(QA), "chat": len(CHAT), "preference": len(PREFERENCE)}

# General-domain rows (tag "general") draw only from the templates that do not call the question medical, and get
# no medical system prompt: they are there to keep general skills, not to dress arithmetic as a patient's question.
GENERAL_MCQ = (0, 1, 2, 4, 5, 9, 10)
GENERAL_QA = (0, 1, 5, 9)


def _rng(seed: int, rec_id: str) -> random.Random:
    return random.Random(f"{seed}:{rec_id}")


def _ctx(r: Record) -> str:
    return f"Context: {r.context}\n\n" if r.context else ""


def _system(rng: random.Random) -> list[dict]:
    s = SYSTEMS[rng.randrange(len(SYSTEMS))]
    return [{"role": "system", "content": s}] if s else []


def render_sft(r: Record, seed: int) -> tuple[list[dict], str]:
    """-> (messages, template id) for an SFT row."""
    rng = _rng(seed, r.id)
    general = "general" in r.tags
    if r.kind == "mcq":
        t = rng.choice(GENERAL_MCQ) if general else rng.randrange(len(MCQ))
        user, style, ans = MCQ[t]
        opts = "\n".join(OPTION_STYLES[style].format(L=k, t=v) for k, v in sorted(r.options.items()))
        prompt = user.format(ctx=_ctx(r), q=r.question, opts=opts)
        final = ans.format(L=r.answer, t=r.options[r.answer])
        if r.cot:
            response = r.cot.strip()
        elif r.explanation:
            response = f"{r.explanation.strip()}\n\n{final}"
        else:
            response = final
        system = [] if general else _system(rng)
        return system + [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": response}], f"mcq/{t:02d}"
    if r.kind == "qa":
        t = rng.choice(GENERAL_QA) if general else rng.randrange(len(QA))
        prompt = QA[t].format(ctx=_ctx(r), q=r.question)
        system = [] if general else _system(rng)
        return system + [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": r.answer}], f"qa/{t:02d}"
    if r.kind == "chat":
        t = 0 if general else rng.randrange(len(CHAT))  # CHAT[0] adds no system prompt
        msgs = list(r.messages)
        if CHAT[t] and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": CHAT[t]}] + msgs
        return msgs, f"chat/{t:02d}"
    raise ValueError(f"render_sft: {r.kind} records go to the preference set")


def render_preference(r: Record, seed: int) -> tuple[dict, str]:
    """-> a TRL conversational preference row (prompt/chosen/rejected as message lists) and the template id."""
    rng = _rng(seed, r.id)
    t = rng.randrange(len(PREFERENCE))
    # multi-turn HH prompts are kept verbatim: wrapping a whole dialogue in "Question: ..." would be wrong
    text = r.prompt if "\nAssistant:" in r.prompt else PREFERENCE[t].format(ctx="", q=r.prompt)
    row = {"prompt": [{"role": "user", "content": text}],
           "chosen": [{"role": "assistant", "content": r.chosen}],
           "rejected": [{"role": "assistant", "content": r.rejected}]}
    return row, f"preference/{t:02d}"
