"""Duplicate rows with flat memory: the first pass over a manifest feeds every volume key to
``SeenKeys`` (a set of them up to ``EXACT_KEYS`` keys, a fixed-size Bloom filter beyond) and remembers
only the keys it has possibly seen before, so the second pass needs exact first-seen bookkeeping for
just those keys.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Mapping
from hashlib import blake2b
from typing import Any

from orchestrator.config import RowDefaults
from orchestrator.manifest import KeyCells, RawRow, row_keys

# Up to this many distinct keys, the first pass holds them in a set (about 5 MB at the limit, less than
# the Bloom filter's 4 MiB and its hashing a key: a set costs a lookup); beyond it, the Bloom filter.
EXACT_KEYS = 1 << 15
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def volume_id_of(value: object) -> str | None:
    """A manifest's ``volume_id`` value as every reader compares it (SPEC: surrounding spaces trimmed,
    compared case-insensitively): stripped and lower-cased, or ``None`` when it is not a UUID (or not
    text at all)."""
    if not isinstance(value, str):
        return None
    volume = value.strip().lower()
    return volume if UUID_RE.match(volume) else None


def volume_key(fields: Mapping[str, Any], defaults: RowDefaults) -> bytes | None:
    """The identity of a row's target disk (volume and project, or region when no project is known)."""
    return key_of(fields.get("volume_id"), fields.get("project_id"), fields.get("region"), defaults)


def key_of(raw: object, project: object, region: object, defaults: RowDefaults) -> bytes | None:
    """``volume_key`` from a row's volume_id, project_id and region values (``manifest.KEY_COLUMNS``)."""
    volume = volume_id_of(raw)
    if volume is None:
        return None
    return _scoped(volume, project, region, defaults)


def _scoped(volume: str, project: object, region: object, defaults: RowDefaults) -> bytes:
    """The key of a volume id (stripped and lowered) in the row's project (or region)."""
    scope = project.strip() if isinstance(project, str) and project.strip() else defaults.project_id
    if scope is None:
        scope = "region:" + (region.strip() if isinstance(region, str) else str(defaults.region))
    return f"{volume}/{scope}".encode()


class BloomFilter:
    """A fixed-size blocked Bloom filter over byte strings (4 MiB: about 1 false positive in 2,000 at
    1M keys; a false positive costs only exact bookkeeping for that key).

    Each key lives in one 64-bit word (Putze, Sanders and Singler's blocked filter): one BLAKE2b
    digest of the key picks the word (its low 64 bits) and ``hashes`` bits in it (6 bits each of the
    next 60), so a key costs one digest, one word read and at most one write.
    ``bits`` is rounded up to a power of two (at least one word).
    """

    def __init__(self, bits: int = 1 << 25, hashes: int = 5) -> None:
        if not 1 <= hashes <= 10:
            raise ValueError("a key's bits come from 60 bits of its digest: 1 to 10 hashes")
        words = 1 << max(0, (bits - 1).bit_length() - 6)
        self.bits = words * 64
        self.mask = words - 1
        # Two of the key's bits at a time, from 12 bits of the digest (``_PAIRS``); an odd last one alone.
        self.pairs = range(64, 64 + 12 * (hashes // 2), 12)
        self.single = 64 + 12 * (hashes // 2) if hashes % 2 else None
        self.words = array("Q", bytes(8 * words))

    def add(self, key: bytes) -> bool:
        """Add a key; True when it was possibly present already."""
        index, bits = self._slot(key)
        word = self.words[index]
        if word & bits == bits:
            return True
        self.words[index] = word | bits
        return False

    def __contains__(self, key: bytes) -> bool:
        """True when the key was possibly added (never False for a key that was)."""
        index, bits = self._slot(key)
        return self.words[index] & bits == bits

    def _slot(self, key: bytes) -> tuple[int, int]:
        """The key's word and its bits in that word."""
        # BLAKE2b's whole 512-bit digest: a digest_size argument costs more than the bytes it saves
        # (1.8 -> 1.4 us a key; Python's own hash is cheaper still, but keyed afresh in each process).
        value = int.from_bytes(blake2b(key).digest(), "little")
        bits = 0 if self.single is None else 1 << (value >> self.single & 63)
        for shift in self.pairs:
            bits |= _PAIRS[value >> shift & 4095]
        return value & self.mask, bits


_PAIRS = [1 << (n & 63) | 1 << (n >> 6) for n in range(4096)]  # 12 bits of a digest: their two bits


class SeenKeys:
    """The keys a pass has seen: exactly (a set) up to ``limit`` distinct keys, then in a ``BloomFilter``
    that takes them all over (memory stays flat: the set is dropped). ``add`` never says False for a key
    added before; before the switch it never says True for one that was not."""

    def __init__(self, limit: int = EXACT_KEYS) -> None:
        self.limit = limit
        self.exact: set[bytes] | None = set()
        self.bloom: BloomFilter | None = None

    def add(self, key: bytes) -> bool:
        """Add a key; True when it was possibly present already."""
        exact = self.exact
        if exact is None:
            assert self.bloom is not None  # noqa: S101 - the set is dropped only for the filter
            return self.bloom.add(key)
        if key in exact:
            return True
        exact.add(key)
        if len(exact) > self.limit:
            self.bloom = BloomFilter()
            for seen in exact:
                self.bloom.add(seen)
            self.exact = None
        return False


def duplicate_candidates(rows: Iterable[RawRow], defaults: RowDefaults) -> tuple[int, set[bytes]]:
    """First pass: count the rows and collect every key that may occur more than once."""
    return key_candidates(row_keys(rows), defaults)


def key_candidates(rows: Iterable[KeyCells], defaults: RowDefaults) -> tuple[int, set[bytes]]:
    """``duplicate_candidates`` of the rows' key cells (``manifest.read_keys``).

    A cell is keyed as ``key_of`` keys it but for the UUID check (a regex: a third of the pass's
    instructions, and made again in the second pass): a repeated value that is no UUID may be a
    candidate, which costs nothing but its bookkeeping, as the second pass's ``volume_key`` gives its
    rows no key (they are ``INVALID_VOLUME_ID``, never ``DUPLICATE_VOLUME``)."""
    add = SeenKeys().add
    candidates: set[bytes] = set()
    count = 0
    for cells in rows:
        count += 1
        if cells is None or not isinstance(cells[0], str):
            continue
        volume = cells[0].strip().lower()
        if volume:  # a blank cell is no volume at all
            key = _scoped(volume, cells[1], cells[2], defaults)
            if add(key):
                candidates.add(key)
    return count, candidates
