"""Evaluation's view of the benchmark layer: the question type under its old name `Doc`.

Every benchmark file is read in `aloekit.benchmarks` (one reader per format); tasks load through
`eval.tasks.TASKS[name].load(root, skip_bad, limit)`.
"""

from __future__ import annotations

from ..benchmarks import LETTERS, BadRow, Question, Rows, listed, mcq_context

Doc = Question  # the same class: evaluation called a benchmark question a Doc

__all__ = ["LETTERS", "BadRow", "Doc", "Question", "Rows", "listed", "mcq_context"]
