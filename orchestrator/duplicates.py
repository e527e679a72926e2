"""Duplicate rows with flat memory: the first pass over a manifest feeds every volume key to a
fixed-size Bloom filter and remembers only the keys it has possibly seen before, so the second pass
needs exact first-seen bookkeeping for just those keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from hashlib import blake2b
from typing import Any

from orchestrator.config import RowDefaults
from orchestrator.manifest import RawRow

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def volume_key(fields: Mapping[str, Any], defaults: RowDefaults) -> bytes | None:
    """The identity of a row's target disk (volume and project, or region when no project is known)."""
    raw = fields.get("volume_id")
    if not isinstance(raw, str):
        return None
    volume = raw.strip().lower()
    if not UUID_RE.match(volume):
        return None
    project = fields.get("project_id")
    scope = str(project).strip() if isinstance(project, str) and project.strip() else defaults.project_id
    if scope is None:
        region = fields.get("region")
        scope = "region:" + (str(region).strip() if isinstance(region, str) else str(defaults.region))
    return f"{volume}/{scope}".encode()


class BloomFilter:
    """A fixed-size Bloom filter over byte strings (4 MiB: about 1 false positive in 15,000 at 1M keys).

    Its ``hashes`` bit positions come from one 64-bit BLAKE2b digest of the key by double hashing
    (Kirsch and Mitzenmacher): one digest and a few additions per key. ``bits`` is rounded up to a
    power of two.
    """

    def __init__(self, bits: int = 1 << 25, hashes: int = 5) -> None:
        self.bits = 1 << max(6, (bits - 1).bit_length())
        self.mask = self.bits - 1
        self.hashes = hashes
        self.steps = range(hashes)
        self.array = bytearray(self.bits // 8)

    def add(self, key: bytes) -> bool:
        """Add a key; True when it was possibly present already."""
        array, mask = self.array, self.mask
        bit, step = self._start(key)
        present = True
        for position in range(bit, bit + step * self.hashes, step):  # the positions, counted in C
            byte, flag = (position & mask) >> 3, 1 << (position & 7)
            if not array[byte] & flag:
                present = False
                array[byte] |= flag
        return present

    def __contains__(self, key: bytes) -> bool:
        """True when the key was possibly added (never False for a key that was)."""
        array, mask = self.array, self.mask
        bit, step = self._start(key)
        for _ in self.steps:
            if not array[(bit & mask) >> 3] & (1 << (bit & 7)):
                return False
            bit += step
        return True

    @staticmethod
    def _start(key: bytes) -> tuple[int, int]:
        """The first bit position and the step between positions (odd, so the positions differ)."""
        value = int.from_bytes(blake2b(key, digest_size=8).digest(), "little")
        return value & 0xFFFFFFFF, (value >> 32) | 1


def duplicate_candidates(rows: Iterable[RawRow], defaults: RowDefaults) -> tuple[int, set[bytes]]:
    """First pass: count the rows and collect every key that may occur more than once."""
    bloom = BloomFilter()
    candidates: set[bytes] = set()
    count = 0
    for raw in rows:
        count += 1
        key = volume_key(raw.fields, defaults) if raw.fields is not None else None
        if key is not None and bloom.add(key):
            candidates.add(key)
    return count, candidates
