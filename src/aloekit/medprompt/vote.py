"""Choice shuffling, mapping answers back, majority vote with a seeded tie rule, and adaptive stopping.

Pure functions, no model: the invariants the ensemble relies on are tested here exhaustively.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections import Counter
from typing import Sequence


def seeded_rng(*parts) -> random.Random:
    """A Random seeded from the config seed and the question's identity (stable across runs and platforms)."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def permutations(n_options: int, members: int, rng: random.Random, identity_first: bool = True) -> list[list[int]]:
    """`members` orders of the options, distinct while there are enough of them (n! >= members).

    perm[i] is the original index of the option shown at position i. The first member sees the original order
    (so a one-member ensemble is exactly the unshuffled prompt), the others distinct shuffles."""
    total = math.factorial(n_options)
    out: list[list[int]] = [list(range(n_options))] if identity_first else []
    seen = {tuple(p) for p in out}
    while len(out) < members:
        p = list(range(n_options))
        rng.shuffle(p)
        if tuple(p) in seen and len(seen) < total:
            continue
        seen.add(tuple(p))
        out.append(p)
    return out[:members]


def apply_permutation(options: Sequence[str], perm: Sequence[int]) -> list[str]:
    if sorted(perm) != list(range(len(options))):
        raise ValueError(f"permutation {list(perm)} does not fit {len(options)} options")
    return [options[j] for j in perm]


def map_back(shown_index: int, perm: Sequence[int]) -> int:
    """The original option index for an answer given at position `shown_index` of a shuffled list (-1 stays -1)."""
    return -1 if shown_index < 0 else perm[shown_index]


def vote(answers: Sequence[int], n_options: int, rng: random.Random) -> tuple[int, dict[int, int]]:
    """Majority over parsed answers (-1 = unparsed, no vote). Ties: a seeded uniform pick among the tied options.

    Returns (winner or -1 if nobody answered, {option: votes})."""
    counts = Counter(a for a in answers if 0 <= a < n_options)
    if not counts:
        return -1, {}
    top = max(counts.values())
    tied = sorted(o for o, c in counts.items() if c == top)
    winner = tied[0] if len(tied) == 1 else rng.choice(tied)
    return winner, dict(sorted(counts.items()))


def decided(answers: Sequence[int], total_members: int) -> bool:
    """True when the remaining members cannot change the full ensemble's winner: the leader is strictly ahead
    of the runner-up by more than the votes still to come (so no tie can arise either, and the tie rule is
    never consulted for a different set of tied options)."""
    counts = sorted(Counter(a for a in answers if a >= 0).values(), reverse=True)
    remaining = total_members - len(answers)
    if remaining <= 0:
        return True
    if not counts:
        return False
    second = counts[1] if len(counts) > 1 else 0
    return counts[0] > second + remaining


def members_needed(answers: Sequence[int], total_members: int) -> int:
    """The fewest further members that could settle the vote (if they all agreed with the leader): the size of
    the next round. Never more than what is left."""
    remaining = total_members - len(answers)
    if remaining <= 0 or decided(answers, total_members):
        return 0
    counts = sorted(Counter(a for a in answers if a >= 0).values(), reverse=True)
    lead = counts[0] if counts else 0
    second = counts[1] if len(counts) > 1 else 0
    # after m more votes for the leader: lead + m > second + (remaining - m)
    m = (second + remaining - lead) // 2 + 1
    return max(1, min(m, remaining))


def all_sequences(n_members: int, n_options: int):
    """Every possible sequence of member answers (with -1 for unparsed): for exhaustive tests."""
    return itertools.product(range(-1, n_options), repeat=n_members)
