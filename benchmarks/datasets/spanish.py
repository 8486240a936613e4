"""The Spanish household generator: a registered population and corrupted copies of some of its people.

The population is generated with Faker's Spanish locales (es_CO, es_MX, es_ES) as households: children carry
their father's and mother's first surnames and share the household phone, some are twins. Duplicates are
people written again with one to three realistic corruptions (accents dropped, surnames swapped or one
dropped, given and family names exchanged, typos, spelling variants, day/month swapped, a mistyped birth date,
the document formatted differently or missing, phone missing or written in another notation, sex unknown).
Confusers are new people easy to take for someone registered: namesakes (same names, another birth date),
new household members (same surnames and phone; twins share the birth date too), and fresh people.

B3's speed benchmark (b3_dedup.py) loads its registry from the same generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, timedelta

import phonenumbers
from faker import Faker
from stdnum.es import dni as es_dni

from benchmarks.datasets import Record, registration

# Venezuelan names are drawn from the Colombian and Mexican pools, which share them (as when Faker had no es_VE).
LOCALES = {"VE": ["es_CO", "es_MX"], "CO": ["es_CO"], "ES": ["es_ES"]}
NATIONALITY_WEIGHTS = {"VE": 0.65, "CO": 0.25, "ES": 0.10}
TODAY = date(2026, 11, 22)


@dataclass(frozen=True)
class Person:
    """Raw registration fields, as a registration tool would send them."""

    given_names: str
    family_names: str
    date_of_birth: date
    sex: str
    nationality: str
    documents: tuple[tuple[str, str, str], ...]
    phone: str | None
    country: str


def e164_phone(raw: str, *regions: str) -> str | None:
    """`raw` in E.164 if it is a valid number read in one of `regions`, else None."""
    for region in regions:
        try:
            parsed = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {code: Faker(locale) for code, locale in LOCALES.items()}
        for offset, faker in enumerate(self.fakers.values()):
            faker.seed_instance(seed * 10 + offset)
        self.issued: set[int] = set()

    def nationality(self) -> str:
        return self.rng.choices(list(NATIONALITY_WEIGHTS), weights=list(NATIONALITY_WEIGHTS.values()))[0]

    def given(self, nationality: str, sex: str) -> str:
        faker = self.fakers[nationality]
        pick = faker.first_name_female if sex == "female" else faker.first_name_male
        names = [pick()]
        if self.rng.random() < 0.45:
            names.append(pick())
        return " ".join(dict.fromkeys(" ".join(names).split()))

    def surname(self, nationality: str) -> str:
        return str(self.fakers[nationality].last_name())

    def phone(self, nationality: str) -> str:
        rng = self.rng
        if nationality == "VE":
            return f"0{rng.choice(['412', '414', '416', '424', '426'])}-{rng.randrange(10**6, 10**7)}"
        if nationality == "CO":
            return f"3{rng.randrange(0, 3)}{rng.randrange(10)} {rng.randrange(10**6, 10**7)}"
        return f"6{rng.randrange(10**7, 10**8)}"

    def serial(self, low: int, high: int) -> int:
        """A document number nobody else holds: documents identify people uniquely."""
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
            if nationality == "VE":
                return (("national_id", f"V-{self.serial(1_000_000, 32_000_000):,}".replace(",", "."), "VE"),)
            if nationality == "CO":
                return (("national_id", str(self.serial(10**9, 11 * 10**8)), "CO"),)
            body = f"{self.serial(10**7, 10**8):08d}"
            return (("national_id", body + es_dni.calc_check_digit(body), "ES"),)
        if roll < 0.77:
            return (("passport", f"{self.serial(10**8, 10**9):09d}", nationality),)
        if roll < 0.85 and nationality == "VE":
            return (("residence_permit", f"PPT{self.serial(10**6, 10**7):07d}", "CO"),)
        return ()

    def birth_date(self, low: int, high: int) -> date:
        start = date(TODAY.year - high, 1, 1)
        end = date(TODAY.year - low, 12, 31)
        day = start + timedelta(days=self.rng.randrange((end - start).days))
        if self.rng.random() < 0.04:
            return date(day.year, 1, 1)
        return day

    def household(self) -> list[Person]:
        """Parents and children: the surnames and phone they share are what makes siblings look alike."""
        rng = self.rng
        nationality = self.nationality()
        country = "CO" if rng.random() < 0.8 else nationality
        phone = self.phone(nationality) if rng.random() < 0.75 else None
        father = (self.surname(nationality), self.surname(nationality))
        mother = (self.surname(nationality), self.surname(nationality))
        members: list[Person] = []
        parent_birth = self.birth_date(20, 60)
        size = rng.choice([1, 1, 2, 3, 3, 4, 4, 5, 6])
        for role in range(size):
            if role < 2:
                sex = "male" if role == 0 else "female"
                surnames = father if role == 0 else mother
                dob = parent_birth + timedelta(days=rng.randrange(-2000, 2000))
            else:
                sex = rng.choice(["female", "male"])
                surnames = (father[0], mother[0])
                twin = members and role > 2 and rng.random() < 0.06
                dob = members[-1].date_of_birth if twin else self.birth_date(0, 19)
            age = TODAY.year - dob.year
            given = self.given(nationality, sex)
            while any(given.split()[0] == m.given_names.split()[0] for m in members):
                given = self.given(nationality, sex)  # parents do not give two children the same first name
            members.append(
                Person(
                    given_names=given,
                    family_names=" ".join(surnames),
                    date_of_birth=min(dob, TODAY),
                    sex=sex,
                    nationality=nationality,
                    documents=self.document(nationality, age),
                    phone=phone if rng.random() < 0.9 else None,
                    country=country,
                )
            )
        return members


def strip_accents(text: str) -> str:
    return text.translate(str.maketrans("áéíóúÁÉÍÓÚñÑüÜ", "aeiouAEIOUnNuU"))


SPELLING = [
    ("v", "b"),
    ("b", "v"),
    ("z", "s"),
    ("s", "z"),
    ("ll", "y"),
    ("y", "ll"),
    ("h", ""),
    ("ce", "se"),
    ("ci", "si"),
]


class Corruptor:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def typo(self, text: str) -> str:
        letters = [i for i, c in enumerate(text) if c.isalpha()]
        if len(letters) < 4:
            return text
        i = self.rng.choice(letters[1:-1])
        kind = self.rng.randrange(4)
        alphabet = "abcdefghijklmnopqrstuvwxyz"
        if kind == 0:
            return text[:i] + text[i + 1 :]
        if kind == 1:
            return text[:i] + self.rng.choice(alphabet) + text[i:]
        if kind == 2:
            return text[:i] + self.rng.choice(alphabet) + text[i + 1 :]
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :] if i + 1 < len(text) else text

    def spelling(self, text: str) -> str:
        options = [(a, b) for a, b in SPELLING if a in text.lower()]
        if not options:
            return text
        a, b = self.rng.choice(options)
        return text.lower().replace(a, b, 1).title()

    def date_typo(self, value: date) -> date:
        digits = list(value.strftime("%Y%m%d"))
        for _ in range(20):
            changed = digits.copy()
            i = self.rng.randrange(2, 8)
            changed[i] = str(self.rng.randrange(10))
            text = "".join(changed)
            try:
                candidate = date(int(text[:4]), int(text[4:6]), int(text[6:]))
            except ValueError:
                continue
            if candidate != value and candidate <= TODAY:
                return candidate
        return value

    def reformat_document(self, doc: tuple[str, str, str]) -> tuple[str, str, str]:
        doc_type, number, country = doc
        digits = "".join(c for c in number if c.isalnum())
        style = self.rng.randrange(4)
        if style == 0:
            number = digits
        elif style == 1:
            number = " ".join(digits[i : i + 3] for i in range(0, len(digits), 3))
        elif style == 2:
            number = f"{'V-' if country == 'VE' and doc_type == 'national_id' else ''}{digits}"
        else:
            number = "0" + digits if digits.isdigit() and country != "ES" else digits.lower()
        return doc_type, number, country

    def local_phone(self, phone: str, *regions: str) -> str:
        e164 = e164_phone(phone, *regions)
        if e164 is None:
            return phone
        return e164 if self.rng.random() < 0.5 else e164.replace("+", "00")

    def corrupt(self, person: Person) -> tuple[Person, list[str]]:
        rng = self.rng
        kinds = [
            "accents", "swap_surnames", "drop_second_surname", "given_typo", "family_typo", "spelling",
            "day_month", "date_typo", "document_format", "document_missing", "phone_missing",
            "phone_notation", "fields_swapped", "drop_second_given", "sex_unknown",
        ]  # fmt: skip
        count = rng.choices([1, 2, 3], weights=[0.5, 0.35, 0.15])[0]
        applied = rng.sample(kinds, count)
        given, family = person.given_names, person.family_names
        dob, documents, phone, sex = person.date_of_birth, person.documents, person.phone, person.sex
        for kind in applied:
            surnames = family.split()
            if kind == "accents":
                given, family = strip_accents(given), strip_accents(family)
            elif kind == "swap_surnames" and len(surnames) >= 2:
                family = " ".join([*surnames[-1:], *surnames[:-1]])
            elif kind == "drop_second_surname" and len(surnames) >= 2:
                family = surnames[0]
            elif kind == "given_typo":
                given = self.typo(given)
            elif kind == "family_typo":
                family = self.typo(family)
            elif kind == "spelling":
                family = self.spelling(family) if rng.random() < 0.5 else family
                given = self.spelling(given) if family == person.family_names else given
            elif kind == "day_month" and dob.day <= 12:
                dob = date(dob.year, dob.day, dob.month)
            elif kind == "date_typo":
                dob = self.date_typo(dob)
            elif kind == "document_format":
                documents = tuple(self.reformat_document(d) for d in documents)
            elif kind == "document_missing":
                documents = ()
            elif kind == "phone_missing":
                phone = None
            elif kind == "phone_notation" and phone:
                phone = self.local_phone(phone, person.country, person.nationality)
            elif kind == "fields_swapped":
                given, family = family, given
            elif kind == "drop_second_given" and len(given.split()) >= 2:
                given = given.split()[0]
            elif kind == "sex_unknown":
                sex = "unknown"
        corrupted = replace(
            person, given_names=given, family_names=family, date_of_birth=dob, documents=documents,
            phone=phone, sex=sex,
        )  # fmt: skip
        return corrupted, applied


def body_of(person: Person, household_size: int = 1) -> dict[str, object]:
    return registration(
        given_names=person.given_names,
        family_names=person.family_names,
        date_of_birth=person.date_of_birth.isoformat(),
        sex=person.sex,
        nationality=person.nationality,
        documents=[{"type": t, "number": n, "issuing_country": c} for t, n, c in person.documents],
        phone=person.phone,
        location={"country": person.country},
        household_size=household_size,
    )


def dataset(people: int, duplicates: int, confusers: int, seed: int) -> list[Record]:
    """`people` registered in households, corrupted copies of `duplicates` of them (each person at most
    once), and `confusers` new people: namesakes, new household members or twins, and fresh people."""
    generator = Generator(seed)
    population: list[Person] = []
    households: list[list[int]] = []
    while len(population) < people:
        members = generator.household()
        households.append(list(range(len(population), len(population) + len(members))))
        population.extend(members)
    size = {i: len(h) for h in households for i in h}
    records = [Record(f"p{i}", "original", body_of(p, size[i])) for i, p in enumerate(population)]

    rng = random.Random(seed + 1)
    corruptor = Corruptor(rng)
    for i in rng.sample(range(len(population)), min(duplicates, len(population))):
        probe, applied = corruptor.corrupt(population[i])
        records.append(Record(f"p{i}", "duplicate", body_of(probe, size[i]), tuple(sorted(applied))))
    for n in range(confusers):
        roll = rng.random()
        if roll < 0.3:
            source = population[rng.randrange(len(population))]
            probe = replace(
                generator.household()[0], given_names=source.given_names, family_names=source.family_names,
                sex=source.sex, nationality=source.nationality,
            )  # fmt: skip
            role = "namesake"
        elif roll < 0.64:
            household = population[rng.choice(households)[-1]]
            sibling = generator.household()[0]
            while sibling.given_names.split()[0] == household.given_names.split()[0]:
                sibling = generator.household()[0]
            twin = rng.random() < 0.15
            probe = replace(
                sibling, family_names=household.family_names, phone=household.phone,
                nationality=household.nationality, country=household.country,
                date_of_birth=household.date_of_birth if twin else generator.birth_date(0, 19),
            )  # fmt: skip
            role = "twin" if twin else "sibling"
        else:
            probe = generator.household()[0]
            role = "fresh"
        records.append(Record(f"c{n}", role, body_of(probe)))
    return records
