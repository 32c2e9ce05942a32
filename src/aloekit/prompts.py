"""Default prompts, and the registered system prompts ("policies") every stage can name.

`system_prompt:` in eval, red teaming, Medprompt / `infer` and the recipe's evaluation takes a registered name
(`aloe_medical`) or literal text; `resolve_system_prompt` turns either into the text, so a report can state the
name and the text each number was measured with."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, Field
from pydantic_core import PydanticCustomError

from .errors import UserError

MEDICAL_SYSTEM_PROMPT = (
    "You are a careful medical assistant. Give accurate, evidence-based information in plain language, "
    "say when something is uncertain, and advise seeing a qualified health professional for diagnosis or "
    "treatment. Never help with requests that could cause harm."
)

SYSTEM_PROMPTS: dict[str, str] = {
    "aloe_medical": MEDICAL_SYSTEM_PROMPT,  # the policy the recipe aligns with and `aloekit serve` applies
}


def resolve_system_prompt(value: str | None, where: str = "system_prompt") -> str | None:
    """None, "" or "none" -> no system prompt; a registered name -> its text; other text is used as written.
    A single identifier-like word that is not registered is refused: it is a misspelt name far more often than a
    one-word prompt."""
    if value is None or not value.strip() or value.strip().lower() == "none":
        return None
    name = value.strip()
    if name in SYSTEM_PROMPTS:
        return SYSTEM_PROMPTS[name]
    if name.replace("_", "").replace("-", "").isalnum() and " " not in name:
        raise UserError(f"{where}: unknown system prompt name '{name}'; registered: {', '.join(SYSTEM_PROMPTS)} "
                        "(or write the prompt's text, or 'none')")
    return value


def system_prompt_label(value: str | None) -> str:
    """How reports name a system prompt: its registered name, 'none', or 'custom: <first words>'."""
    if value is None or not value.strip() or value.strip().lower() == "none":
        return "none"
    if value.strip() in SYSTEM_PROMPTS:
        return value.strip()
    text = " ".join(value.split())
    return "custom: " + (text[:60] + "..." if len(text) > 60 else text)


def with_system(chat: list[dict], system: str | None) -> list[dict]:
    """`chat` with `system` as its first message (kept as it is when it has one or `system` is None)."""
    if system is None or (chat and chat[0].get("role") == "system"):
        return list(chat)
    return [{"role": "system", "content": system}, *chat]


def _check_system_prompt(value: str | None) -> str | None:
    # keeps what was written (the name), so config.yaml and the labels show it; the text is resolved where used
    try:
        resolve_system_prompt(value, "system_prompt")
    except UserError as e:
        raise PydanticCustomError("system_prompt", str(e).removeprefix("system_prompt: ")) from None
    return value


# a config field holding a registered name or text: an unknown name fails when the config loads
SystemPrompt = Annotated[str | None, AfterValidator(_check_system_prompt)]


def system_prompt_field(description: str) -> Any:
    """The `system` field of the stage configs that had one before `system_prompt` became the documented name:
    both keys are read, the field keeps its old name (configs, caches and recipe keys stay as they were)."""
    return Field(None, validation_alias=AliasChoices("system_prompt", "system"), description=description)


def one_system_key(cls, data: Any) -> Any:
    """A `model_validator(mode="before")` for configs with `system_prompt_field`: both keys at once is ambiguous."""
    if isinstance(data, dict) and "system" in data and "system_prompt" in data:
        raise PydanticCustomError("system_prompt", "give system_prompt or system (its old name), not both")
    return data
