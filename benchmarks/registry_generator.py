"""A fast labelled synthetic registry for the sweep benchmark: a million match records in about a minute.

dedup_quality's generator calls Faker and validates every document and phone as registration does, which
costs a millisecond a person: fine for registrations replayed one by one, too slow for a million. This one
draws from the same name frequencies (Faker's es_CO lists carry real weights; es_MX and es_ES are
uniform) and writes documents and phones directly in the canonical form validation would produce, so each
record is built with `build_record` as the service builds it from validated fields.

The registry is made of households (parents and children sharing surnames and a phone, some twins), and a
share of people registered twice, the second record corrupted the way dedup_quality's `Corruptor` does
(its string-level corruptions are reused) plus a mistyped document digit. Every record carries the id of
the person it belongs to: the labels precision and recall are counted on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from faker.providers.person.es_CO import Provider as CO
from faker.providers.person.es_ES import Provider as ES
from faker.providers.person.es_MX import Provider as MX

from benchmarks.datasets.spanish import SPELLING, TODAY, Corruptor, strip_accents
from cbi_service.dedup.normalize import DocumentKey, MatchRecord, build_record


def _pool(names: object) -> tuple[list[str], list[float] | None]:
    if isinstance(names, dict):
        return list(names), [float(w) for w in names.values()]
    return list(names), None  # type: ignore[call-overload]


POOLS = {
    "VE": (CO, MX),
    "CO": (CO,),
    "ES": (ES,),
}
NATIONALITIES = (("VE", 0.65), ("CO", 0.25), ("ES", 0.10))
PHONE_PREFIX = {"VE": "+58", "CO": "+57", "ES": "+34"}


@dataclass(frozen=True, slots=True)
class Raw:
    """One registration's validated fields (documents as (type, country, canonical number))."""

    given_names: str
    family_names: str
    date_of_birth: date
    sex: str
    nationality: str
    documents: tuple[tuple[str, str, str], ...]
    phone: str | None

    def record(self) -> MatchRecord:
        return build_record(
            given_names=self.given_names,
            family_names=self.family_names,
            date_of_birth=self.date_of_birth,
            sex=self.sex,
            nationality=self.nationality,
            documents=tuple(DocumentKey(t, c, n) for t, c, n in self.documents),
            phone=self.phone,
        )


class FastRegistry:
    """Households of people, and corrupted second registrations of some of them."""

    def __init__(self, seed: int, duplicate_share: float = 0.1) -> None:
        self.rng = random.Random(seed)
        self.corruptor = Corruptor(random.Random(seed + 1))
        self.duplicate_share = duplicate_share
        self.issued: set[int] = set()
        self.pools = {
            code: [
                (
                    _pool(provider.first_names_female),
                    _pool(provider.first_names_male),
                    _pool(provider.last_names),
                )
                for provider in providers
            ]
            for code, providers in POOLS.items()
        }

    def _pick(self, pool: tuple[list[str], list[float] | None]) -> str:
        names, weights = pool
        if weights is None:
            return names[int(self.rng.random() * len(names))]
        return self.rng.choices(names, weights)[0]

    def _provider(self, nationality: str) -> tuple[tuple[list[str], list[float] | None], ...]:
        pools = self.pools[nationality]
        return pools[int(self.rng.random() * len(pools))]

    def given(self, nationality: str, sex: str) -> str:
        female, male, _ = self._provider(nationality)
        pool = female if sex == "female" else male
        names = [self._pick(pool)]
        if self.rng.random() < 0.45:
            names.append(self._pick(pool))
        return " ".join(dict.fromkeys(" ".join(names).split()))

    def surname(self, nationality: str) -> str:
        return self._pick(self._provider(nationality)[2])

    def serial(self, low: int, high: int) -> int:
        while True:
            number = self.rng.randrange(low, high)
            if number not in self.issued:
                self.issued.add(number)
                return number

    def document(self, nationality: str, age: int) -> tuple[tuple[str, str, str], ...]:
        rng = self.rng
        if age < 9 and rng.random() < 0.7:
            return ()
        roll = rng.random()
        if roll < 0.62:
            return (("national_id", nationality, str(self.serial(1_000_000, 1_100_000_000))),)
        if roll < 0.77:
            return (("passport", nationality, str(self.serial(10**8, 10**9))),)
        if roll < 0.85 and nationality == "VE":
            return (("residence_permit", "CO", f"PPT{self.serial(10**6, 10**7)}"),)
        return ()

    def birth_date(self, low: int, high: int) -> date:
        start = date(TODAY.year - high, 1, 1)
        span = (date(TODAY.year - low, 12, 31) - start).days
        day = start + timedelta(days=int(self.rng.random() * span))
        if self.rng.random() < 0.04:
            return date(day.year, 1, 1)
        return min(day, TODAY)

    def household(self) -> list[Raw]:
        rng = self.rng
        roll = rng.random()
        nationality = next(code for code, share in _cumulative(NATIONALITIES) if roll < share)
        phone = f"{PHONE_PREFIX[nationality]}{rng.randrange(3 * 10**9, 4 * 10**9)}" if rng.random() < 0.75 else None
        father = (self.surname(nationality), self.surname(nationality))
        mother = (self.surname(nationality), self.surname(nationality))
        parent_birth = self.birth_date(20, 60)
        members: list[Raw] = []
        for role in range(rng.choice((1, 1, 2, 3, 3, 4, 4, 5, 6))):
            if role < 2:
                sex = "male" if role == 0 else "female"
                surnames = father if role == 0 else mother
                dob = min(parent_birth + timedelta(days=rng.randrange(-2000, 2000)), TODAY)
            else:
                sex = "female" if rng.random() < 0.5 else "male"
                surnames = (father[0], mother[0])
                twin = role > 2 and rng.random() < 0.06
                dob = members[-1].date_of_birth if twin else self.birth_date(0, 19)
            given = self.given(nationality, sex)
            while any(given.split()[0] == m.given_names.split()[0] for m in members):
                given = self.given(nationality, sex)
            members.append(
                Raw(
                    given, " ".join(surnames), dob, sex, nationality,
                    self.document(nationality, TODAY.year - dob.year), phone if rng.random() < 0.9 else None,
                )
            )  # fmt: skip
        return members

    def corrupt(self, raw: Raw) -> Raw:
        """A second registration of the same person, one to three corruptions."""
        rng, fix = self.rng, self.corruptor
        kinds = (
            "accents", "swap_surnames", "drop_second_surname", "given_typo", "family_typo", "spelling",
            "day_month", "date_typo", "document_digit", "document_missing", "phone_missing", "fields_swapped",
            "drop_second_given", "sex_unknown",
        )  # fmt: skip
        given, family, dob = raw.given_names, raw.family_names, raw.date_of_birth
        documents, phone, sex = raw.documents, raw.phone, raw.sex
        for kind in rng.sample(kinds, rng.choices((1, 2, 3), (0.5, 0.35, 0.15))[0]):
            surnames = family.split()
            if kind == "accents":
                given, family = strip_accents(given), strip_accents(family)
            elif kind == "swap_surnames" and len(surnames) >= 2:
                family = " ".join([*surnames[-1:], *surnames[:-1]])
            elif kind == "drop_second_surname" and len(surnames) >= 2:
                family = surnames[0]
            elif kind == "given_typo":
                given = fix.typo(given)
            elif kind == "family_typo":
                family = fix.typo(family)
            elif kind == "spelling":
                given = fix.spelling(given)
            elif kind == "day_month" and dob.day <= 12:
                dob = date(dob.year, dob.day, dob.month)
            elif kind == "date_typo":
                dob = fix.date_typo(dob)
            elif kind == "document_digit" and documents:
                doc_type, country, number = documents[0]
                i = rng.randrange(len(number))
                digit = str((int(number[i]) + 1) % 10) if number[i].isdigit() else number[i]
                documents = ((doc_type, country, number[:i] + digit + number[i + 1 :]), *documents[1:])
            elif kind == "document_missing":
                documents = ()
            elif kind == "phone_missing":
                phone = None
            elif kind == "fields_swapped":
                given, family = family, given
            elif kind == "drop_second_given" and len(given.split()) >= 2:
                given = given.split()[0]
            elif kind == "sex_unknown":
                sex = "unknown"
        return Raw(given, family, dob, sex, raw.nationality, documents, phone)

    def records(self, count: int) -> Iterator[tuple[int, MatchRecord]]:
        """`count` records as (person id, match record); a person's second record follows soon after."""
        person = 0
        made = 0
        while made < count:
            for raw in self.household():
                yield person, raw.record()
                made += 1
                if made < count and self.rng.random() < self.duplicate_share:
                    yield person, self.corrupt(raw).record()
                    made += 1
                person += 1
                if made >= count:
                    return


def _cumulative(shares: tuple[tuple[str, float], ...]) -> Iterator[tuple[str, float]]:
    total = 0.0
    for code, share in shares:
        total += share
        yield code, total
    yield shares[-1][0], 2.0


__all__ = ["SPELLING", "FastRegistry", "Raw"]
