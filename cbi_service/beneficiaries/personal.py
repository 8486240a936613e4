"""A person's personal data as it is sealed at rest (§13), and the columns it becomes.

Two sealed columns per person, under their own data key: `personal` (what the API shows) and `profile`
(the normalised match record dedup compares, itself derived from the names and documents, so as sensitive).
The external reference is found by a keyed digest (`external_ref_index`), never by its value.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from cbi_service.dedup.normalize import MatchRecord
from cbi_service.kit.crypto import Keyring

EXTERNAL_REF = "external_ref"


@dataclass(frozen=True, slots=True)
class Personal:
    """What identifies a person, and what would harm them if it leaked; `documents` keep the number as typed
    and its normalised form.

    `disability` is sealed here, `population_type` kept in clear beside sex and birth year, because:
    - disability is health data, a special category in every data-protection law partners work under, and
      it narrows a person down: with sex, birth year and admin2 in clear, a "yes" can point at one child
      in a small town. No report counts it (R4V's 5W has no disability column), so nothing needs it in
      clear, and erasure must destroy it: §13 keeps only sex, birth year, location and population type.
    - `population_type` is what the 5W counts (its five population columns) and must go on counting after
      erasure (§13 names it among what an erased record keeps). It says which of five groups of millions a
      person belongs to, the same kind of fact as sex; sealed, a 5W of 100,000 people would have to open
      100,000 records, and the erased ones could not be counted at all.

    `disability` is None when nobody said (records sealed before it existed read so too), which is not
    "no"."""

    given_names: str
    family_names: str
    date_of_birth: date
    phone: str | None
    external_ref: str | None
    documents: list[dict[str, str]]
    disability: bool | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "given_names": self.given_names,
                "family_names": self.family_names,
                "date_of_birth": self.date_of_birth.isoformat(),
                "phone": self.phone,
                "external_ref": self.external_ref,
                "documents": self.documents,
                "disability": self.disability,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Personal:
        value = json.loads(data)
        return cls(
            given_names=value["given_names"],
            family_names=value["family_names"],
            date_of_birth=date.fromisoformat(value["date_of_birth"]),
            phone=value["phone"],
            external_ref=value["external_ref"],
            documents=value["documents"],
            disability=value.get("disability"),
        )


def sealed_columns(
    ring: Keyring, version: int, beneficiary_id: uuid.UUID, personal: Personal, record: MatchRecord
) -> dict[str, Any]:
    """The columns of a person's sealed data, under a fresh data key wrapped by `version`."""
    profile = json.dumps(record.to_profile(), separators=(",", ":"), ensure_ascii=False).encode()
    sealed = ring.seal_subject(beneficiary_id, {"personal": personal.to_bytes(), "profile": profile}, version)
    return {
        "key_version": sealed.version,
        "data_key": sealed.data_key,
        "personal": sealed.fields["personal"],
        "profile": sealed.fields["profile"],
        "external_ref_index": external_ref_index(ring, personal.external_ref),
        "birth_year": personal.date_of_birth.year,
    }


def external_ref_index(ring: Keyring, external_ref: str | None) -> bytes | None:
    return None if external_ref is None else ring.blind(EXTERNAL_REF, external_ref)


def open_personal(ring: Keyring, beneficiary_id: uuid.UUID, version: int, data_key: bytes, sealed: bytes) -> Personal:
    key = ring.subject_key(beneficiary_id, version, data_key)
    return Personal.from_bytes(ring.open_field(key, beneficiary_id, "personal", sealed))


def profile_dict(
    ring: Keyring, beneficiary_id: uuid.UUID, version: int, data_key: bytes, sealed: bytes
) -> dict[str, Any]:
    """The stored profile as the JSON object it was sealed from (what training and sweeps read)."""
    key = ring.subject_key(beneficiary_id, version, data_key)
    value: dict[str, Any] = json.loads(ring.open_field(key, beneficiary_id, "profile", sealed))
    return value


def open_profile(ring: Keyring, beneficiary_id: uuid.UUID, version: int, data_key: bytes, sealed: bytes) -> MatchRecord:
    return MatchRecord.from_profile(profile_dict(ring, beneficiary_id, version, data_key, sealed))
