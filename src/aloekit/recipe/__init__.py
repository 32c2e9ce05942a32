"""The recipe: one YAML from raw sources to a released model (`aloekit run`). See run.py for the layout."""

from .config import RecipeConfig  # noqa: F401
from .run import GateFailed, run  # noqa: F401
