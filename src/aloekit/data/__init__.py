"""Medical data curation: sources -> clean -> dedup -> decontaminate -> CoT -> mixture -> templates -> dataset."""

from .pipeline import DataConfig, run
from .records import Record

__all__ = ["DataConfig", "Record", "run"]
