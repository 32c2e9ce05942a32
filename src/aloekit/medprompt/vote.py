"""Choice shuffling, mapping answers back, majority vote with a seeded tie rule, and adaptive stopping.

Pure functions, no model: the invariants the ensemble relies on are tested here exhaustively.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections import Counter
from typing import Callable, Sequence


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


def _lead(counts: Counter) -> tuple[int, int, int]:
    """(leading option or -1, its votes, the runner-up's votes) from the counts of parsed answers."""
    ranked = counts.most_common(2)
    if not ranked:
        return -1, 0, 0
    return ranked[0][0], ranked[0][1], ranked[1][1] if len(ranked) > 1 else 0


def decided(answers: Sequence[int], total_members: int, n_options: int = 0,
            tie_rng: Callable[[], random.Random] | None = None) -> bool:
    """True when the remaining members cannot change the full ensemble's winner.

    Without a tie rule: the leader is ahead of the runner-up by more than the votes still to come. With the vote's
    own tie rule (`tie_rng` returns a fresh copy of the rng the final vote uses): also when the remaining members can
    at most tie the leader and the tie rule would give every such tie to the leader. A tie is then only reachable by
    all remaining members voting for one option that has the runner-up's count, so those are the completions to try.
    """
    if tie_rng is not None and n_options < 1:
        raise ValueError("decided: the tie rule needs n_options")
    remaining = total_members - len(answers)
    if remaining <= 0:
        return True
    counts = Counter(a for a in answers if a >= 0)
    leader, lead, second = _lead(counts)
    if leader < 0:
        return False
    if lead > second + remaining:
        return True
    if tie_rng is None or lead < second + remaining:
        return False
    for c in range(n_options):
        if c != leader and counts[c] == second:
            if vote(list(answers) + [c] * remaining, n_options, tie_rng())[0] != leader:
                return False
    return True


def members_needed(answers: Sequence[int], total_members: int, n_options: int = 0,
                   tie_rng: Callable[[], random.Random] | None = None) -> int:
    """The fewest further members that could settle the vote (if they all voted for one option): the size of
    the next round. Never more than what is left."""
    remaining = total_members - len(answers)
    if remaining <= 0 or decided(answers, total_members, n_options, tie_rng):
        return 0
    if tie_rng is None:
        _, lead, second = _lead(Counter(a for a in answers if a >= 0))
        # after m more votes for the leader: lead + m > second + (remaining - m)
        return max(1, min((second + remaining - lead) // 2 + 1, remaining))
    for m in range(1, remaining):
        if any(decided(list(answers) + [o] * m, total_members, n_options, tie_rng) for o in range(n_options)):
            return m
    return remaining


def all_sequences(n_members: int, n_options: int):
    """Every possible sequence of member answers (with -1 for unparsed): for exhaustive tests."""
    return itertools.product(range(-1, n_options), repeat=n_members)
