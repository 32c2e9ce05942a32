"""Model merging on mergekit (DARE-TIES, TIES, SLERP, linear, task arithmetic, ...), streamed, checked, searchable."""

from .config import DevSet, MergeConfig, MergeInput, SearchSettings
from .run import mergekit_yaml, run, validate

__all__ = ["DevSet", "MergeConfig", "MergeInput", "SearchSettings", "mergekit_yaml", "run", "validate"]
