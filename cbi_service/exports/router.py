from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.exports import service
from cbi_service.exports.writers import MEDIA_TYPES, ExportFormat
from cbi_service.kit.db import SessionDep
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.streaming import ClosingStreamingResponse
from cbi_service.kit.timeutil import AwareDatetimeQuery

router = APIRouter(prefix="/v1/ledger", tags=["auditors"], route_class=StorableTextRoute)
Auditor = Annotated[Principal, Depends(require_roles(Role.auditor, Role.finance))]

EXPORT_DESCRIPTION = """
Every ledger entry with its transaction (id, key, kind, phase, related transaction, description,
references), account code, amount (a decimal string with the currency's digits, and `amount_minor` in
minor units), currency, posting time and hash-chain fields (stripe `chain`, `seq`, `prev_hash`, `hash`).
One row per entry, the rows of a transaction together, transactions in posting order.

- `from` (inclusive) and `to` (exclusive) filter on the posting time; both optional. A window starts in
  the middle of the chain stripes: verification trusts each stripe's first `prev_hash` in the file and
  checks every link after it.
- `programme_id` keeps the transactions that touch one of the programme's accounts, each with all its
  entries. Such an export holds whole transactions but not whole chain stripes: check it with
  `cbi-service ledger verify --allow-gaps FILE` (every hash and every balance is still checked).
- An account's balance is the sum of `amount_minor` over its rows whose `phase` is `posted` or
  `post_pending` (`pending` rows reserve, `void_pending` rows release, neither moves the balance).

The body is streamed from one consistent snapshot in constant memory. CSV and Parquet can be verified
offline with `cbi-service ledger verify FILE`. In CSV and XLSX, text a spreadsheet would evaluate (a
`key`, `kind`, `phase`, `description`, `account_code` or `currency` starting with `=`, `+`, `-`, `@`, tab,
CR or LF) is written with a leading `'`, as is text already starting with `'`; the verifier removes it
before hashing. Parquet holds the text verbatim. XLSX (numbers as numbers, all else as text, never
formulas, further sheets past Excel's row limit) is for reading; it is built whole before its first byte
is sent. Every export is recorded in the audit trail.
"""

_BODY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/export",
    response_class=ClosingStreamingResponse,
    description=EXPORT_DESCRIPTION,
    responses={200: {"description": "The export file.", "content": {MEDIA_TYPES[f]: _BODY for f in ExportFormat}}},
)
async def export_ledger(
    request: Request,
    session: SessionDep,
    principal: Auditor,
    start: Annotated[AwareDatetimeQuery | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetimeQuery | None, Query(alias="to")] = None,
    fmt: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.csv,
    programme_id: uuid.UUID | None = None,
) -> ClosingStreamingResponse:
    plan = await service.plan_export(session, principal, fmt, start, end, programme_id)
    return ClosingStreamingResponse(
        service.stream_export(request.app.state.engine, plan),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{plan.filename}"'},
    )
