"""Continuity of each installation's hash chain, link by link.

Every stored record (and tombstone) carries a `link` verdict about what precedes it:
`ok` (the predecessor is known and its hash is this item's prev_hash), `break` (it is known and
does not match: something was altered or replaced), `gap` (nothing known precedes it yet: a
record is missing, possibly removed). A `gap` is re-examined whenever its predecessor arrives,
so uploads may come in any order; `ok` and `break` are final. Records without a chain (older
imports) are `unchained`.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from ..store import GENESIS

OK, BREAK, GAP, UNCHAINED = "ok", "break", "gap", "unchained"


@dataclass
class Known:
    """What one installation's neighbourhood of the chain looks like: records by seq, tombstones."""

    records: dict  # seq -> {"id", "hash", "prev_hash", "link"}
    tombstones: list  # {"seq_from", "seq_to", "prev_hash", "last_hash", "link"}

    def tombstone_ending(self, seq: int) -> dict | None:
        for t in self.tombstones:
            if t["seq_to"] == seq:
                return t
        return None

    def expected_prev(self, seq: int) -> str | None:
        """The hash the item at SEQ must name as prev_hash, or None when its predecessor is unknown."""
        if seq == 1:
            return GENESIS
        before = self.records.get(seq - 1)
        if before is not None:
            return before["hash"]
        t = self.tombstone_ending(seq - 1)
        return t["last_hash"] if t else None

    def link(self, seq: int, prev_hash: str) -> str:
        expected = self.expected_prev(seq)
        if expected is None:
            return GAP
        return OK if expected == prev_hash else BREAK


def coverage(tombstones: list[dict]):
    """A test of whether a tombstone says the record at a seq was deleted."""
    ranges = sorted((t["seq_from"], t["seq_to"]) for t in tombstones if t["seq_from"] is not None)
    starts = [lo for lo, _ in ranges]
    reach = list(itertools.accumulate((hi for _, hi in ranges), max))  # ranges may nest

    def covered(seq: int) -> bool:
        i = bisect.bisect_right(starts, seq) - 1
        return i >= 0 and seq <= reach[i]

    return covered


def needed_seqs(records: list[dict], tombstones: list[dict]) -> set[int]:
    """The seqs whose stored records decide the links of (and around) an upload."""
    seqs: set[int] = set()
    for r in records:
        s = r["seq"]
        seqs.update((s - 1, s, s + 1))
    for t in tombstones:
        if t["seq_from"] is None:
            continue
        seqs.update((t["seq_from"] - 1, t["seq_from"], t["seq_to"], t["seq_to"] + 1))
    seqs.discard(0)
    return seqs


def tombstone_mismatch(t: dict, known: Known) -> str | None:
    """Why a tombstone disagrees with records already stored inside its range, if it does."""
    first = known.records.get(t["seq_from"])
    if first is not None and first["prev_hash"] != t["prev_hash"]:
        return f"tombstone {t['seq_from']}..{t['seq_to']} does not start where stored record {t['seq_from']} does"
    last = known.records.get(t["seq_to"])
    if last is not None and last["hash"] != t["last_hash"]:
        return f"tombstone {t['seq_from']}..{t['seq_to']} does not end at stored record {t['seq_to']}'s hash"
    return None
