"""Choice shuffling, mapping answers back, majority vote with a seeded tie rule, and adaptive stopping: exact (the
full ensemble's answer never changes) or, opt-in, with a stated risk (`overturn_risk`).

Pure functions, no model: the invariants the ensemble relies on are tested here exhaustively.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from collections import Counter
from fractions import Fraction
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
            tie_rng: Callable[[], random.Random] | None = None, stop_risk: float | None = None) -> bool:
    """True when the remaining members cannot change the full ensemble's winner (`stop_risk` None, the default),
    or, with `stop_risk` = δ, when `overturn_risk` is at most δ (δ = 0 is the exact rule with the tie rule).

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
    if stop_risk is not None:
        if tie_rng is None:
            raise ValueError("decided: stop_risk needs the tie rule (n_options and tie_rng)")
        return overturn_risk(answers, total_members, n_options, tie_rng) <= stop_risk
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
                   tie_rng: Callable[[], random.Random] | None = None, stop_risk: float | None = None) -> int:
    """The fewest further members that could settle the vote (if they all voted for one option): the size of
    the next round. Never more than what is left. With `stop_risk`, settled means `decided(..., stop_risk)`."""
    remaining = total_members - len(answers)
    if remaining <= 0 or decided(answers, total_members, n_options, tie_rng, stop_risk):
        return 0
    if tie_rng is None:
        _, lead, second = _lead(Counter(a for a in answers if a >= 0))
        # after m more votes for the leader: lead + m > second + (remaining - m)
        return max(1, min((second + remaining - lead) // 2 + 1, remaining))
    for m in range(1, remaining):
        if any(decided(list(answers) + [o] * m, total_members, n_options, tie_rng, stop_risk)
               for o in range(n_options)):
            return m
    return remaining


def members_run(sequence: Sequence[int], total_members: int, n_options: int = 0,
                tie_rng: Callable[[], random.Random] | None = None, stop_risk: float | None = None) -> int:
    """How many members the engine's adaptive rounds run for a question whose members would answer `sequence`
    (all `total_members` of them, in member order): rounds of `members_needed` until `decided`. Members sample
    from their own seeds, so a full run's answers replay any stopping rule without rerunning the model."""
    used = 0
    while used < total_members and not decided(sequence[:used], total_members, n_options, tie_rng, stop_risk):
        used += members_needed(sequence[:used], total_members, n_options, tie_rng, stop_risk)
    return used


def _urn_weight(a: int, x: int) -> int:
    """Pólya urn: the ways x more draws of a colour that has a balls, up to the common denominator: C(a+x-1, x)
    (the rising factorial a(a+1)...(a+x-1) over x!); a colour with no ball is never drawn."""
    if a == 0:
        return int(x == 0)
    return math.comb(a + x - 1, x)


def overturn_risk(answers: Sequence[int], total_members: int, n_options: int,
                  tie_rng: Callable[[], random.Random]) -> Fraction:
    """The probability that the remaining members make the full ensemble's winner differ from the winner of the
    votes in so far (`vote(answers, ...)`, the seeded tie rule included), under this model of the vote:

    the remaining members answer like draws from a Pólya urn that holds one ball per option (add-one smoothing)
    plus one ball per answer seen so far (an unparsed answer's ball stands for "no answer"); each member draws a
    ball, answers its colour, and puts it back with one more of that colour. Equivalently: their answers are
    i.i.d. given answer probabilities p ~ Dirichlet(1 + votes of each option, unparsed answers), so they are
    exchangeable, not independent: agreement among the first members makes later agreement likelier.

    With r members left, the chance that option i gets x_i more answers (and x_none no answer) is
    prod_i C(a_i + x_i - 1, x_i) / C(A + r - 1, r), a_i the balls of colour i and A all balls (members seen +
    options). Summed exactly over the final counts that keep the current winner (a leader with t more votes
    keeps it when no option ends above it and the tie rule picks it among the options that end level with it:
    a small dynamic programme over options, no sampling), so the result is an exact fraction and deterministic.

    0 exactly when no remaining answers can change the winner (then `decided` is True with the tie rule);
    1 when no member has answered yet (no leader: the question never stops on risk)."""
    remaining = total_members - len(answers)
    if remaining <= 0:
        return Fraction(0)
    counts = [0] * n_options
    unparsed = 0
    for a in answers:
        if 0 <= a < n_options:
            counts[a] += 1
        else:
            unparsed += 1
    leader = vote(answers, n_options, tie_rng())[0]
    if leader < 0:
        return Fraction(1)
    # index the tie rule picks among k tied options (sorted by option index), as vote() draws it
    pick = (0, 0) + tuple(tie_rng().choice(list(range(k))) for k in range(2, n_options + 1))
    return _overturn(tuple(counts), unparsed, remaining, leader, pick)


@functools.lru_cache(maxsize=1 << 16)
def _overturn(counts: tuple[int, ...], unparsed: int, remaining: int, leader: int, pick: tuple[int, ...]) -> Fraction:
    others = [o for o in range(len(counts)) if o != leader]
    keeps = 0
    for t in range(remaining + 1):  # t more votes for the leader
        top = counts[leader] + t
        left = remaining - t
        # (draws used by the other options, options tied with the leader below it, above it) -> weight
        states: dict[tuple[int, int, int], int] = {(0, 0, 0): 1}
        for o in others:
            nxt: dict[tuple[int, int, int], int] = {}
            for (used, below, above), w in states.items():
                for x in range(min(left - used, top - counts[o]) + 1):
                    tied = counts[o] + x == top
                    key = (used + x, below + (tied and o < leader), above + (tied and o > leader))
                    nxt[key] = nxt.get(key, 0) + w * _urn_weight(counts[o] + 1, x)
            states = nxt
        wins = sum(w * _urn_weight(unparsed, left - used) for (used, below, above), w in states.items()
                   if pick[1 + below + above] == below)
        keeps += _urn_weight(counts[leader] + 1, t) * wins
    balls = sum(counts) + unparsed + len(counts)  # members seen + one per option
    total = math.comb(balls + remaining - 1, remaining)
    return Fraction(total - keeps, total)


def all_sequences(n_members: int, n_options: int):
    """Every possible sequence of member answers (with -1 for unparsed): for exhaustive tests."""
    return itertools.product(range(-1, n_options), repeat=n_members)
