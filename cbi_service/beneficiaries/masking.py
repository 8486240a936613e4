"""Personal data shown in full or masked by role (§2, §13), and who saw it in full.

Full to `admin`, `registrar` and `programme_officer` (a caller with any of them); every other role sees
names as initials ("María José" → "M. J."), the birth date as its year ("1990"), phone, document numbers
and the external reference with all but their last two characters as `*` (the length kept), and
`disability` (health data: masking a yes/no leaves nothing to show) as null. Each response
reads `personal_data: "full" | "masked"`. A response showing people in full writes one audit event,
`beneficiary.personal_data_viewed`, naming them and the route, in the request's transaction. An erased
person shows nothing personal and is not named. A replayed Idempotency-Key response writes none: only the
key's own caller gets it back, and the first response's event already names them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import date
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal, Role
from cbi_service.beneficiaries.schemas import BeneficiaryOut, DocumentIn

FULL_ACCESS = frozenset({Role.admin, Role.registrar, Role.programme_officer})
VIEWED = "beneficiary.personal_data_viewed"
Shown = TypeVar("Shown", bound=BeneficiaryOut)


def sees_in_full(principal: Principal) -> bool:
    return bool(principal.roles & FULL_ACCESS)


def initials(name: str | None) -> str | None:
    """The first letter of each word and a dot; composed first (NFC), so that an accent typed as a separate
    mark stays on its letter."""
    if name is None:
        return None
    return " ".join(f"{word[0]}." for word in unicodedata.normalize("NFC", name).split())


def tail(value: str) -> str:
    """All but the last two characters as '*'."""
    return "*" * max(0, len(value) - 2) + value[-2:]


def last_two(value: str | None) -> str | None:
    return None if value is None else tail(value)


def masked(person: Shown) -> Shown:
    born = person.date_of_birth
    return person.model_copy(
        update={
            "given_names": initials(person.given_names),
            "family_names": initials(person.family_names),
            "date_of_birth": f"{born.year:04d}" if isinstance(born, date) else born,
            "phone": last_two(person.phone),
            "external_ref": last_two(person.external_ref),
            "documents": [
                DocumentIn.model_construct(type=d.type, number=tail(d.number), issuing_country=d.issuing_country)
                for d in person.documents
            ],
            "disability": None,
            "personal_data": "masked",
        }
    )


async def present(session: AsyncSession, principal: Principal, route: str, people: Sequence[Shown]) -> list[Shown]:
    """People as this caller may see them; viewing in full is recorded."""
    if not sees_in_full(principal):
        return [masked(p) for p in people]
    shown = [p for p in people if p.given_names is not None]  # the erased show nothing personal
    if shown:
        ids = [str(p.id) for p in shown]
        await record_audit(
            session, principal, VIEWED, "beneficiary", ids[0] if len(ids) == 1 else "many", None,
            {"beneficiary_ids": ids, "route": route},
        )  # fmt: skip
    return [p.model_copy(update={"personal_data": "full"}) for p in people]
