"""The `typed` generator: families registered by hand at several desks, with a corruption model of its own.

It is written apart from the Spanish generator so that one data set does not tune the other. People come
from Venezuela, Colombia, Mexico, Argentina, Chile and Spain (names from Faker's es_CO, es_MX, es_AR, es_CL
and es_ES) and are registered in the country they have reached. Households follow Spanish naming: a child carries
the father's first surname and then the mother's (in Argentina usually the father's alone), shares the
household phone, and a few are twins or carry their father's given names (a *junior*).

A duplicate is a registered person written again at another desk, with one or two of these corruptions, each
named in its label:

- `document_digit_wrong`, `document_transposed`, `document_digit_dropped`: the document number typed by hand;
  `document_other_same_type`: another number for a document of the same type (a renewed passport, a second
  national id); in these the person shows that one document only;
- `given_initials` ("María J" for "María José"); `second_given_missing`; `second_surname_missing`;
- `typos_two_fields` (a typo in the given and in the family names); `names_swapped_typo` (given and family
  names exchanged, one of them with a typo);
- `document_missing`, `phone_missing`; `day_month_swapped`; `birth_january_first` (the date was not known);

and sometimes a lighter variation besides: `accents_dropped`, `document_reformatted`, `phone_notation`.
Confusers are new people easy to take for someone registered: `namesake` (same names, another birth date),
`sibling` (same surnames and phone), `twin` (same surnames, phone and birth date), `junior` (a son with his
father's given names and first surname).

A typo here is what a hand on a Spanish keyboard does: a neighbouring key, a letter left out or doubled, two
letters swapped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import date, timedelta

import phonenumbers
from faker import Faker
from stdnum.cl import rut as cl_rut
from stdnum.es import dni as es_dni
from unidecode import unidecode

from benchmarks.datasets import Record, registration

TODAY = date(2026, 11, 1)
NATIONALITIES = {"VE": 0.46, "CO": 0.2, "MX": 0.08, "AR": 0.08, "CL": 0.1, "ES": 0.08}
LOCALE = {"VE": ["es_CO", "es_CL"], "CO": ["es_CO"], "MX": ["es_MX"], "AR": ["es_AR"], "CL": ["es_CL"], "ES": ["es_ES"]}
"""Faker locales to draw names from; its es_VE has no names of its own (it falls back to English ones)."""
HOSTS = {"CO": 0.45, "PE": 0.15, "EC": 0.1, "CL": 0.12, "AR": 0.06, "ES": 0.06, "MX": 0.06}
SINGLE_SURNAME = {"AR": 0.75}
KEYBOARD = ("qwertyuiop", "asdfghjklñ", "zxcvbnm")

PRIMARY = {
    "document_digit_wrong": "document",
    "document_transposed": "document",
    "document_digit_dropped": "document",
    "document_other_same_type": "document",
    "document_missing": "document",
    "given_initials": "given",
    "second_given_missing": "given",
    "second_surname_missing": "family",
    "typos_two_fields": "names",
    "names_swapped_typo": "names",
    "phone_missing": "phone",
    "day_month_swapped": "birth",
    "birth_january_first": "birth",
}
"""Each corruption with the part of the record it changes: two corruptions of one duplicate change two parts."""
LIGHT = {"accents_dropped": "accents", "document_reformatted": "document", "phone_notation": "phone"}
"""Lighter variations, each with the part it changes: one is added only where no corruption changed that part."""
CLASHES = {"names": {"given", "family"}, "given": {"names"}, "family": {"names"}}


@dataclass(frozen=True)
class Document:
    type: str
    digits: str
    """The number without separators (for a Spanish DNI or a Chilean RUT, with its check character)."""
    country: str


@dataclass(frozen=True)
class Person:
    given: tuple[str, ...]
    surnames: tuple[str, ...]
    birth: date
    sex: str
    nationality: str
    host: str
    documents: tuple[Document, ...]
    phone: str | None
    household_size: int


@dataclass(frozen=True)
class Entry:
    """A person as one desk wrote them down."""

    given_names: str
    family_names: str
    birth: date
    sex: str
    documents: tuple[tuple[str, str, str], ...]
    phone: str | None


def neighbours(letter: str) -> str:
    """Keys next to `letter` on a Spanish keyboard (same row and the rows above and below)."""
    for row, keys in enumerate(KEYBOARD):
        if (col := keys.find(letter)) >= 0:
            near = [keys[c] for c in (col - 1, col + 1) if 0 <= c < len(keys)]
            for other in (row - 1, row + 1):
                if 0 <= other < len(KEYBOARD):
                    near.extend(KEYBOARD[other][c] for c in (col - 1, col) if 0 <= c < len(KEYBOARD[other]))
            return "".join(near)
    return ""


class Typed:
    """Generates people and writes them down, with or without mistakes; deterministic for a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {code: Faker(locale) for code, locale in LOCALE.items()}
        for offset, faker in enumerate(self.fakers.values()):
            faker.seed_instance(seed * 31 + offset)
        self.numbers: set[str] = set()

    def pick(self, weights: dict[str, float]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    # people ---------------------------------------------------------------------------------------------

    def given(self, nationality: str, sex: str, avoid: Collection[str] = ()) -> tuple[str, ...]:
        faker = self.fakers[nationality]
        draw = faker.first_name_female if sex == "female" else faker.first_name_male
        while True:
            names = str(draw()).split()
            if len(names) == 1 and self.rng.random() < 0.55:
                names += [n for n in str(draw()).split() if n not in names]
            if not set(names) & set(avoid):  # siblings share no given name
                return tuple(names[:3])

    def surname(self, nationality: str) -> str:
        return str(self.fakers[nationality].last_name())

    def surnames(self, nationality: str) -> tuple[str, ...]:
        if self.rng.random() < SINGLE_SURNAME.get(nationality, 0.04):
            return (self.surname(nationality),)
        return self.surname(nationality), self.surname(nationality)

    def birth(self, youngest: int, oldest: int) -> date:
        first = date(TODAY.year - oldest, 1, 1)
        day = first + timedelta(days=self.rng.randrange((TODAY - first).days - 365 * youngest))
        return date(day.year, 1, 1) if self.rng.random() < 0.03 else day

    def unique_number(self, make: Callable[[], str]) -> str:
        """A number nobody else holds: a document identifies one person."""
        while (number := make()) in self.numbers:
            pass
        self.numbers.add(number)
        return number

    def national_id(self, nationality: str) -> Document:
        rng = self.rng
        if nationality == "ES":
            body = self.unique_number(lambda: f"{rng.randrange(10**7, 10**8):08d}")
            return Document("national_id", body + es_dni.calc_check_digit(body), "ES")
        if nationality == "CL":
            body = self.unique_number(lambda: str(rng.randrange(5 * 10**6, 28 * 10**6)))
            return Document("national_id", body + cl_rut.calc_check_digit(body), "CL")
        if nationality == "MX":
            return Document("other", self.unique_number(lambda: str(rng.randrange(10**12, 10**13))), "MX")
        ranges = {"VE": (3 * 10**6, 33 * 10**6), "CO": (10**9, 11 * 10**8), "AR": (18 * 10**6, 48 * 10**6)}
        low, high = ranges[nationality]
        return Document("national_id", self.unique_number(lambda: str(rng.randrange(low, high))), nationality)

    def passport(self, nationality: str) -> Document:
        prefix = {"MX": "G", "ES": "PA", "AR": "AAB"}.get(nationality, "")
        digits = 9 - len(prefix)
        number = self.unique_number(lambda: prefix + str(self.rng.randrange(10 ** (digits - 1), 10**digits)))
        return Document("passport", number, nationality)

    def documents(self, nationality: str, host: str, age: int) -> tuple[Document, ...]:
        rng = self.rng
        docs: list[Document] = []
        if age < 10:
            if rng.random() < 0.3:
                number = self.unique_number(lambda: str(rng.randrange(10**9, 10**10)))
                docs.append(Document("birth_certificate", number, nationality))
            return tuple(docs)
        if rng.random() < (0.8 if age >= 18 else 0.5):
            docs.append(self.national_id(nationality))
        if age >= 18 and rng.random() < 0.25:
            docs.append(self.passport(nationality))
        if nationality == "VE" and host == "CO" and rng.random() < 0.4:
            docs.append(
                Document("residence_permit", self.unique_number(lambda: str(rng.randrange(10**6, 10**7))), "CO")
            )
        return tuple(docs)

    def phone(self, region: str) -> str:
        """A valid mobile number of `region`, as E.164."""
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        national = str(example.national_number)
        for _ in range(50):
            tail = "".join(str(self.rng.randrange(10)) for _ in range(6))
            candidate = phonenumbers.parse(f"+{example.country_code}{national[:-6]}{tail}")
            if phonenumbers.is_valid_number(candidate):
                return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
        return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)

    def person(
        self, nationality: str, host: str, sex: str, surnames: tuple[str, ...], birth: date, phone: str | None,
        size: int, avoid: Collection[str] = (),
    ) -> Person:  # fmt: skip
        age = (TODAY - birth).days // 365
        return Person(
            given=self.given(nationality, sex, avoid), surnames=surnames, birth=birth, sex=sex,
            nationality=nationality, host=host, documents=self.documents(nationality, host, age), phone=phone,
            household_size=size,
        )  # fmt: skip

    def household(self) -> list[tuple[Person, str]]:
        """A family, each member with its role: `adult`, and `child` for an only child, else `sibling`, `twin`
        or `junior`."""
        rng = self.rng
        nationality, host = self.pick(NATIONALITIES), self.pick(HOSTS)
        region = host if rng.random() < 0.7 else nationality
        phone = self.phone(region) if rng.random() < 0.8 else None
        partner = rng.random() < 0.75
        children = rng.choices(range(6), weights=[0.2, 0.2, 0.25, 0.18, 0.1, 0.07])[0]
        size = 1 + partner + children
        father = self.surnames(nationality)
        mother = self.surnames(nationality)
        parent_birth = self.birth(18, 70)
        members: list[tuple[Person, str]] = []
        head_sex = "male" if partner or rng.random() < 0.4 else "female"
        head = self.person(
            nationality, host, head_sex, father if head_sex == "male" else mother, parent_birth, phone, size
        )
        members.append((head, "adult"))
        if partner:
            birth = min(parent_birth + timedelta(days=rng.randrange(-2500, 2500)), TODAY - timedelta(days=18 * 365))
            members.append((self.person(nationality, host, "female", mother, birth, phone, size), "adult"))
        if children:
            single = len(father) == 1
            surnames = (father[0],) if single else (father[0], mother[0])
            if head_sex == "female" and not partner:
                surnames = (mother[0],) if single else (mother[0], self.surname(nationality))
            eldest = max(parent_birth + timedelta(days=365 * 18), TODAY - timedelta(days=365 * 25))
            taken: set[str] = set()
            for n in range(children):
                sex = rng.choice(["female", "male"])
                twin = n > 0 and rng.random() < 0.06
                birth = (
                    members[-1][0].birth
                    if twin
                    else eldest + timedelta(days=rng.randrange(max((TODAY - eldest).days, 1)))
                )
                child = self.person(
                    nationality, host, sex, surnames, birth, phone if rng.random() < 0.7 else None, size, taken
                )
                role = "twin" if twin else "sibling" if children > 1 else "child"
                if (
                    sex == "male"
                    and head_sex == "male"
                    and "junior" not in {r for _, r in members}
                    and rng.random() < 0.1
                ):
                    child, role = replace(child, given=head.given), "junior"
                taken.update(child.given)
                members.append((child, role))
        return members

    # writing down -----------------------------------------------------------------------------------------

    def written(self, doc: Document) -> str:
        """A document number as a person or a desk writes it: with or without separators and prefixes."""
        style = self.rng.randrange(3)
        digits = doc.digits
        if style == 0:
            return digits
        if doc.country == "VE" and doc.type == "national_id":
            return f"V-{int(digits):,}".replace(",", ".") if style == 1 else f"V{digits}"
        if doc.type == "national_id" and doc.country in {"CO", "AR"} and style == 1:
            return f"{int(digits):,}".replace(",", ".")
        if doc.country == "CL" and doc.type == "national_id":
            return f"{int(digits[:-1]):,}".replace(",", ".") + "-" + digits[-1]
        return " ".join(digits[i : i + 3] for i in range(0, len(digits), 3)) if style == 1 else digits.lower()

    def phone_notation(self, e164: str, host: str) -> str:
        parsed = phonenumbers.parse(e164)
        style = self.rng.randrange(3)
        if style == 0:
            return e164
        if style == 1 and phonenumbers.region_code_for_number(parsed) == host:
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)

    def entry(self, person: Person) -> Entry:
        return Entry(
            given_names=" ".join(person.given),
            family_names=" ".join(person.surnames),
            birth=person.birth,
            sex=person.sex,
            documents=tuple((d.type, self.written(d), d.country) for d in person.documents),
            phone=self.phone_notation(person.phone, person.host) if person.phone else None,
        )

    def typo(self, text: str) -> str:
        letters = [i for i, c in enumerate(text) if c.isalpha() and i > 0]
        if len(letters) < 3:
            return text + text[-1]
        i = self.rng.choice(letters)
        kind = self.rng.randrange(4)
        lower = text[i].lower()
        if kind == 0 and (near := neighbours(unidecode(lower))):
            return text[:i] + self.rng.choice(near) + text[i + 1 :]
        if kind == 1:
            return text[:i] + text[i + 1 :]
        if kind == 2:
            return text[:i] + text[i] + text[i:]
        j = i - 1 if text[i - 1].isalpha() and text[i - 1] != text[i] else i
        if j == i:
            return text[:i] + text[i + 1 :]
        return text[:j] + text[i] + text[j] + text[i + 1 :]

    def mistyped(self, digits: str, kind: str) -> str | None:
        """`digits` with one typing mistake of `kind`, or None when that mistake cannot happen to it. A mistake
        never puts a 0 first: numbers lose their leading zeros when compared, and it would read as a dropped digit."""
        positions = [i for i, c in enumerate(digits) if c.isdigit()]
        if kind == "document_digit_wrong":
            i = self.rng.choice(positions)
            other = [d for d in "0123456789" if d != digits[i] and (i > 0 or d != "0")]
            return digits[:i] + self.rng.choice(other) + digits[i + 1 :]
        if kind == "document_transposed":
            pairs = [
                i
                for i in positions[:-1]
                if i + 1 in positions and digits[i] != digits[i + 1] and (i > 0 or digits[1] != "0")
            ]
            if not pairs:
                return None
            i = self.rng.choice(pairs)
            return digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
        i = self.rng.choice(positions[1:])
        return digits[:i] + digits[i + 1 :]

    def applicable(self, person: Person, kind: str) -> bool:
        birth = person.birth
        return {
            "given_initials": len(person.given) >= 2,
            "second_given_missing": len(person.given) >= 2,
            "second_surname_missing": len(person.surnames) >= 2,
            "phone_missing": person.phone is not None,
            "day_month_swapped": birth.day <= 12 and birth.day != birth.month,
            "birth_january_first": (birth.month, birth.day) != (1, 1),
            "accents_dropped": any(unidecode(name) != name for name in (*person.given, *person.surnames)),
            "phone_notation": person.phone is not None,
        }.get(kind, not kind.startswith("document") or bool(person.documents))

    def duplicate(self, person: Person) -> tuple[Entry, tuple[str, ...]]:
        """`person` written again at another desk, and the corruptions it went through."""
        rng = self.rng
        options = [k for k in PRIMARY if self.applicable(person, k)]
        kinds = [rng.choice(options)]
        if rng.random() < 0.35:
            used = {PRIMARY[kinds[0]], *CLASHES.get(PRIMARY[kinds[0]], ())}
            if second := [k for k in options if PRIMARY[k] not in used]:
                kinds.append(rng.choice(second))
        if rng.random() < 0.4:
            used = {PRIMARY[k] for k in kinds}
            if light := [k for k, part in LIGHT.items() if part not in used and self.applicable(person, k)]:
                kinds.append(rng.choice(light))
        entry = self.entry(person)
        for kind in kinds:
            entry = self.corrupt(person, entry, kind)
        return entry, tuple(kinds)

    def corrupt(self, person: Person, entry: Entry, kind: str) -> Entry:
        rng = self.rng
        if kind in {"document_digit_wrong", "document_transposed", "document_digit_dropped"}:
            i = rng.randrange(len(person.documents))
            doc = person.documents[i]
            number = self.mistyped(doc.digits, kind) or self.mistyped(doc.digits, "document_digit_wrong")
            return replace(entry, documents=((doc.type, str(number), doc.country),))
        if kind == "document_other_same_type":
            i = rng.randrange(len(person.documents))
            doc = person.documents[i]
            other = self.passport(doc.country) if doc.type == "passport" else self.national_id(person.nationality)
            other = replace(other, type=doc.type, country=doc.country)
            return replace(entry, documents=((doc.type, self.written(other), doc.country),))
        if kind == "document_missing":
            return replace(entry, documents=())
        if kind == "document_reformatted":
            return replace(entry, documents=tuple((d.type, self.written(d), d.country) for d in person.documents))
        if kind == "given_initials":
            return replace(entry, given_names=f"{person.given[0]} {person.given[1][0]}")
        if kind == "second_given_missing":
            return replace(entry, given_names=person.given[0])
        if kind == "second_surname_missing":
            return replace(entry, family_names=person.surnames[0])
        if kind == "typos_two_fields":
            return replace(entry, given_names=self.typo(entry.given_names), family_names=self.typo(entry.family_names))
        if kind == "names_swapped_typo":
            given, family = entry.family_names, entry.given_names
            if rng.random() < 0.5:
                given = self.typo(given)
            else:
                family = self.typo(family)
            return replace(entry, given_names=given, family_names=family)
        if kind == "phone_missing":
            return replace(entry, phone=None)
        if kind == "phone_notation":
            return replace(entry, phone=self.phone_notation(person.phone, person.host) if person.phone else None)
        if kind == "day_month_swapped":
            return replace(entry, birth=date(entry.birth.year, entry.birth.day, entry.birth.month))
        if kind == "birth_january_first":
            return replace(entry, birth=date(entry.birth.year, 1, 1))
        if kind == "accents_dropped":
            return replace(entry, given_names=unidecode(entry.given_names), family_names=unidecode(entry.family_names))
        raise ValueError(kind)


def body_of(person: Person, entry: Entry) -> dict[str, object]:
    return registration(
        given_names=entry.given_names,
        family_names=entry.family_names,
        date_of_birth=entry.birth.isoformat(),
        sex=entry.sex,
        nationality=person.nationality,
        documents=[{"type": t, "number": n, "issuing_country": c} for t, n, c in entry.documents],
        phone=entry.phone,
        location={"country": person.host},
        household_size=person.household_size,
    )


def confuser(typed: Typed, families: list[list[tuple[Person, str]]]) -> tuple[Person, str]:
    """A new person made to be taken for someone registered, and how: namesake, sibling, twin or junior."""
    rng = typed.rng
    role = typed.pick({"namesake": 0.3, "sibling": 0.3, "twin": 0.2, "junior": 0.2})
    if role == "namesake":
        source = rng.choice(rng.choice(families))[0]
        stranger = typed.household()[0][0]
        return replace(stranger, given=source.given, surnames=source.surnames, sex=source.sex,
                       nationality=source.nationality), role  # fmt: skip
    if role == "junior":
        father = rng.choice([f for f in families if f[0][0].sex == "male"])[0][0]
        second = (typed.surname(father.nationality),) if len(father.surnames) > 1 else ()
        birth = min(father.birth + timedelta(days=365 * rng.randrange(18, 40)), TODAY)
        son = typed.person(father.nationality, father.host, "male", (father.surnames[0], *second), birth,
                           father.phone if rng.random() < 0.5 else None, father.household_size)  # fmt: skip
        return replace(son, given=father.given), role
    family = rng.choice([f for f in families if f[-1][1] != "adult"])
    child = family[-1][0]
    taken = {name for p, role in family if role != "adult" for name in p.given}
    sex = rng.choice(["female", "male"])
    birth = child.birth if role == "twin" else typed.birth(0, 18)
    new = typed.person(
        child.nationality, child.host, sex, child.surnames, birth, child.phone, child.household_size, taken
    )
    if role == "twin" and len(child.given) > 1 and len(new.given) > 1 and rng.random() < 0.3:
        new = replace(new, given=(child.given[0], *new.given[1:]))  # "Juan David" and "Juan Diego"
    return new, role


def dataset(people: int, duplicates: int, confusers: int, seed: int) -> list[Record]:
    """`people` registered in families, another desk's copy of `duplicates` of them (each person at most
    once, with its corruptions as labels), and `confusers` new people easy to take for someone registered."""
    typed = Typed(seed)
    families: list[list[tuple[Person, str]]] = []
    population: list[Person] = []
    records: list[Record] = []
    while len(population) < people:
        family = typed.household()
        families.append(family)
        for person, role in family:
            records.append(Record(f"t{len(population)}", role, body_of(person, typed.entry(person))))
            population.append(person)
    for i in typed.rng.sample(range(len(population)), min(duplicates, len(population))):
        entry, kinds = typed.duplicate(population[i])
        records.append(Record(f"t{i}", "duplicate", body_of(population[i], entry), kinds))
    for n in range(confusers):
        person, role = confuser(typed, families)
        records.append(Record(f"k{n}", role, body_of(person, typed.entry(person))))
    return records
