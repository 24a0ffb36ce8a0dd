"""Which items a new rater gets, and in which order: balanced over systems, least-rated clips first, seeded.

``plan_items(rng, clips, counts, n_test, n_anchors)`` returns clip ids in the rater's order:

- ``n_test`` system clips, split as evenly as possible over the systems (a remainder goes to the systems with
  the fewest assignments so far); within a system the clips assigned least often so far come first;
- ``n_anchors`` reference anchors and ``n_anchors`` degraded anchors, least assigned first, preferring prompts
  the rater does not already hear;
- shuffled by ``rng``: systems are blinded, and their order differs from rater to rater.

Ties are broken by ``rng``, so the rater's seed (stored with the rater) reproduces the list. A clip is never
given twice to one rater.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np


def _least(rng: np.random.Generator, ids: Sequence[int], counts: Mapping[int, int], k: int,
           avoid: Iterable[int] = (), prompt_of: Mapping[int, int] | None = None) -> list[int]:
    avoid = set(avoid)
    keys = rng.random(len(ids))
    order = sorted(range(len(ids)), key=lambda i: ((prompt_of or {}).get(ids[i]) in avoid,
                                                   counts.get(ids[i], 0), keys[i]))
    return [ids[i] for i in order[:k]]


def plan_items(rng: np.random.Generator, clips: Iterable[tuple[int, int | None, str, int]],
               counts: Mapping[int, int], n_test: int, n_anchors: int) -> list[int]:
    """``clips``: ``(clip id, system id or None, kind, prompt id)`` rows; ``counts``: assignments so far."""
    by_system: dict[int, list[int]] = defaultdict(list)
    anchors: dict[str, list[int]] = defaultdict(list)
    prompt_of: dict[int, int] = {}
    for cid, sid, kind, pid in sorted(clips):
        prompt_of[cid] = pid
        if kind == "test":
            by_system[sid].append(cid)
        else:
            anchors[kind].append(cid)
    systems = sorted(by_system)
    if not systems:
        raise ValueError("the study has no system clips")
    total = sum(len(v) for v in by_system.values())
    if n_test > total:
        raise ValueError(f"{n_test} items per rater, but the study has only {total} system clips")
    quota = {s: 0 for s in systems}
    left = n_test
    while left:  # one round per pass: every system with clips to spare gets one more, least assigned first
        open_ = [s for s in systems if quota[s] < len(by_system[s])]
        load = {s: sum(counts.get(c, 0) for c in by_system[s]) for s in open_}
        tie = rng.random(len(open_))
        for s in [open_[i] for i in sorted(range(len(open_)), key=lambda i: (quota[open_[i]], load[open_[i]],
                                                                             tie[i]))][:left]:
            quota[s] += 1
            left -= 1
    chosen = []
    for s in systems:
        chosen += _least(rng, by_system[s], counts, quota[s])
    heard = {prompt_of[c] for c in chosen}
    for kind in ("reference", "degraded"):
        if n_anchors and len(anchors[kind]) < n_anchors:
            raise ValueError(f"{n_anchors} {kind} anchors per rater, but the study has {len(anchors[kind])}")
        picked = _least(rng, anchors[kind], counts, n_anchors, avoid=heard, prompt_of=prompt_of)
        heard |= {prompt_of[c] for c in picked}
        chosen += picked
    return [chosen[i] for i in rng.permutation(len(chosen))]
