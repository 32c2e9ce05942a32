"""Red teaming: jailbreak attacks x harmful requests (general + medical), judges, ASR, over-refusal, and
safety DPO pairs from the attacks that worked."""

from .config import RedteamConfig
from .run import run

__all__ = ["RedteamConfig", "run"]
