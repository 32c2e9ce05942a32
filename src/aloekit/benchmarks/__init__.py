"""The benchmark layer, below every stage: one registry of benchmarks, one reader per file format, one question
type. See docs/benchmarks.md.

- question.py: `Question` (what a model is asked), `Rows`, `listed`, `loglik_request`
- formats.py: the question file formats' readers; requests.py: the request sets' readers and `Request`
- registry.py: `REGISTRY` (benchmark -> splits, format, hub copy), `GROUPS`, `register`, `absent`
- prompts.py: the letter / generate instructions and `parse_answer`
- files.py: JSON / JSON Lines / CSV rows with line numbers, and the bad-row policy (`collect`)
"""

from .prompts import GENERATE_INSTRUCTION, LETTER_INSTRUCTION, LETTER_PREFIX, parse_answer
from .question import LETTERS, BadRow, Question, Rows, listed, loglik_request, mcq_context
from .registry import (
    GROUPS,
    MMLU_MEDICAL,
    PARTIAL_GROUPS,
    QUESTION_KINDS,
    REGISTRY,
    Benchmark,
    Split,
    absent,
    data_root,
    decontam_benchmarks,
    load_many,
    question_benchmarks,
    read_split,
    register,
    resolve_local,
)
from .requests import Request

__all__ = ["GENERATE_INSTRUCTION", "GROUPS", "LETTERS", "LETTER_INSTRUCTION", "LETTER_PREFIX", "MMLU_MEDICAL",
           "PARTIAL_GROUPS", "QUESTION_KINDS", "REGISTRY", "BadRow", "Benchmark", "Question", "Request", "Rows", "Split",
           "absent", "data_root",
           "decontam_benchmarks", "listed", "load_many", "loglik_request", "mcq_context", "parse_answer",
           "question_benchmarks", "read_split", "register", "resolve_local"]
