"""Blocking keys: the few exact-match strings under which a person is filed for candidate lookup.

Comparing a registration with a million people one by one is impossible inside a request, and the embedded
PostgreSQL has no pg_trgm. Each person is instead filed under ~7-12 short keys in an indexed table; a new
registration looks up its own keys with one btree probe each and scores only the people found. The keys
are chosen so that every single corruption seen in the field (accents, swapped or missing surnames, given
and family names exchanged, a typo in one name, day and month swapped, a typo in the date, a reformatted
document) still leaves at least one key shared with the original record, while each key stays selective
(name codes are always combined with all or part of the birth date).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from cbi_service.dedup.normalize import MatchRecord

# Document numbers shorter than this are too common to be a key on their own (scoring still sees them).
MIN_DOCUMENT_KEY_LENGTH = 5

K = TypeVar("K", bound=Hashable)


def _day_month_agnostic(record: MatchRecord) -> str:
    """Birth date with day and month in sorted order, so 03/07 and 07/03 give the same key."""
    dob = record.date_of_birth
    low, high = sorted((dob.month, dob.day))
    return f"{dob.year:04d}{low:02d}{high:02d}"


def blocking_keys(record: MatchRecord) -> list[str]:
    """Blocking keys of one person, deduplicated, in a stable order.

    - ``d:`` document number alone (type/country mistakes in data entry must still meet).
    - ``p:`` phone in E.164 (shared by a household, so it only brings in a handful).
    - ``t:`` phonetic code of the first given name and of the first surname, each with the day/month
      agnostic birth date: survives two corrupted names when the date is right.
    - ``y:`` and ``m:`` every sorted pair among (first given name, first surname, second surname) with the
      birth year, and with the day/month: whatever single name is mistyped or dropped, and whether or not
      surnames or given/family fields are swapped, one pair survives, and one of its two date parts
      survives a typo anywhere in the birth date.
    - ``i:`` the initials of the first given name and first surname, sorted, with the day/month agnostic
      birth date: survives a typo in both names at once (typists rarely get a first letter wrong), and
      stays selective because the whole date is in it.
    - ``a:`` the initials of the first two given names and first two surnames, sorted, with the birth
      year, for people with three of them or more: survives typos in two names (or one, with the names
      exchanged) when the date is 1 January written for an unknown one; three or four initials and the
      year keep it selective.
    """
    keys: list[str] = []
    for document in record.documents:
        if len(document.number) >= MIN_DOCUMENT_KEY_LENGTH:
            keys.append(f"d:{document.number}")
    if record.phone:
        keys.append(f"p:{record.phone}")
    dob_key = _day_month_agnostic(record)
    given = record.given_phonetic
    family = record.family_phonetic
    for code in (*given[:1], *family[:1]):
        keys.append(f"t:{code}:{dob_key}")
    if record.given and record.family:
        keys.append(f"i:{''.join(sorted((record.given[0][0], record.family[0][0])))}:{dob_key}")
    names = [*given[:1], *family[:2]]
    for i, first_name in enumerate(names):
        for second_name in names[i + 1 :]:
            first, second = sorted((first_name, second_name))
            keys.append(f"y:{first}:{second}:{dob_key[:4]}")
            keys.append(f"m:{first}:{second}:{dob_key[4:]}")
    tokens = [*record.given[:2], *record.family[:2]]
    if len(tokens) >= 3:
        keys.append(f"a:{''.join(sorted(t[0] for t in tokens))}:{dob_key[:4]}")
    return list(dict.fromkeys(keys))


def key_hash(key: str) -> int:
    """The 64-bit integer a blocking key is stored and looked up as (`dedup_keys.key`).

    An index of 8-byte integers is a fraction of the size of one over the key strings and compares without
    collation rules, so lookups among a million people stay in cache; the table holds no readable names,
    documents or phones either. A collision only brings in a candidate that scoring then rejects.
    The first 8 bytes of SHA-256, signed big-endian, so SQL computes the same value:
    ``('x' || encode(substring(sha256(convert_to(key, 'UTF8')) for 8), 'hex'))::bit(64)::bigint``.
    """
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class MemoryIndex(Generic[K]):
    """Blocking-key index held in memory: finds duplicates inside one import file and drives benchmarks.

    It uses exactly the keys the database table holds, so what it finds is what the database would find.
    """

    def __init__(self) -> None:
        self._by_key: defaultdict[str, list[K]] = defaultdict(list)
        self._records: dict[K, MatchRecord] = {}

    def add(self, ident: K, record: MatchRecord, keys: Iterable[str] | None = None) -> None:
        self._records[ident] = record
        for key in blocking_keys(record) if keys is None else keys:
            self._by_key[key].append(ident)

    def candidates(self, record: MatchRecord, keys: Iterable[str] | None = None) -> list[tuple[K, MatchRecord]]:
        """People sharing at least one key with `record`, most shared keys first."""
        counts: dict[K, int] = {}
        for key in blocking_keys(record) if keys is None else keys:
            for ident in self._by_key.get(key, ()):
                counts[ident] = counts.get(ident, 0) + 1
        ranked = sorted(counts, key=counts.__getitem__, reverse=True)
        return [(ident, self._records[ident]) for ident in ranked]

    def __len__(self) -> int:
        return len(self._records)
