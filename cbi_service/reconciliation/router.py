from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import IO, Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import IdempotencyDep
from cbi_service.kit.negotiation import CSV_CONTENT, CSV_MEDIA_TYPE, wants_csv
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.streaming import ClosingStreamingResponse
from cbi_service.kit.timeutil import IsoDate
from cbi_service.reconciliation import service
from cbi_service.reconciliation.repository import BreakRepository, ReconciliationRepository
from cbi_service.reconciliation.schemas import (
    BreakKind,
    ReconciliationBreakOut,
    ReconciliationOut,
    ReconciliationReport,
)

router = APIRouter(prefix="/v1/reconciliations", tags=["auditors"], route_class=StorableTextRoute)
Reconciler = Annotated[Principal, Depends(require_roles(Role.finance, Role.auditor))]

CREATE_DESCRIPTION = """
Reconcile a provider's statement against the ledger. The statement (the multipart field `file`, as for
imports) is told apart by its content, whatever its name or content type:
- a CSV with columns `entitlement_id`, `provider_ref`, `amount`, `currency`, `date` (extra columns ignored;
  comma or semicolon separated);
- an ISO 20022 camt.053 bank-to-customer statement (any version, such as camt.053.001.02 or .08): a line per
  transaction (`TxDtls`) of every booked entry; a debit is a payment (positive), a credit money coming back
  (negative);
- an ISO 20022 pain.002 payment status report: a line per transaction whose status says it was paid
  (`ACSC`, `ACCC`); any other status (pending, accepted but not settled, rejected) is no line;
- a SWIFT MT940 statement: a line per `:61:`, signed like camt.053, the end-to-end id read from its `:86:`
  (`EREF`, or the UUID written there) or its references.
In the standard formats the entitlement id is the payment's end-to-end id (`EndToEndId`), `provider_ref`
the bank's reference (`AcctSvcrRef`, the MT940 reference after `//`). Answers 202 with the report in
`running` state; poll `GET /v1/reconciliations/{id}` (`lines_done` of `lines_total` is the progress).

A line is compared with the provider's disbursement of the entitlement it names: the ledger posting made
when the provider issued an entitlement of a programme using this provider. `matched`: same amount,
currency and `provider_ref` (when the line gives one); `amount_mismatch`: any of them differs, which the
item's `differences` names; `missing_in_ledger`: no such disbursement (unknown id,
another provider's entitlement, never issued) or a line repeating an earlier line's entitlement;
`missing_in_statement`: a disbursement of the period (the statement's first to last date, or
`period_start`..`period_end`, UTC days) that no line names. A statement with an unreadable line is refused
whole (422 naming each problem: a CSV's lines as `file.<column>`, an MT940's line, the path of a camt.053's
or pain.002's element as `file.<path>`), together with any other problem of the request (provider, period).
"""


def _sha256(file: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


@router.post("", status_code=202, response_model=ReconciliationOut, description=CREATE_DESCRIPTION)
async def create_reconciliation(
    request: Request,
    session: SessionDep,
    principal: Reconciler,
    idem: IdempotencyDep,
    provider: Annotated[str, Form(min_length=1, max_length=100)],
    file: Annotated[
        UploadFile, File(description="The statement: CSV in UTF-8, camt.053, pain.002 or MT940, told by its content.")
    ],
    period_start: Annotated[IsoDate | None, Form()] = None,
    period_end: Annotated[IsoDate | None, Form()] = None,
) -> Response:
    sha = await asyncio.to_thread(_sha256, file.file)
    payload = {"provider": provider, "statement_sha256": sha, "period_start": period_start, "period_end": period_end}
    return await idem.run(
        payload,
        lambda: service.create_reconciliation(
            session,
            request.app.state.settings,
            principal,
            provider=provider,
            statement=file.file,
            filename=file.filename or "statement.csv",
            statement_sha256=sha,
            period_start=period_start,
            period_end=period_end,
        ),
        status_code=202,
    )


@router.get("/breaks", response_model=Page[ReconciliationBreakOut])
async def list_breaks(
    session: SessionDep,
    _: Reconciler,
    page: PageDep,
    provider: Annotated[str | None, Query(max_length=100)] = None,
    kind: BreakKind | None = None,
) -> Page[ReconciliationBreakOut]:
    """Provider confirmations the ledger could not record, oldest first: the provider believes this money
    moved and the ledger does not show it. Each names its entitlement and provider event (`refused` in the
    webhook inbox), the amount, and the movement between the programme's balances that would reflect it;
    finance resolves them with the provider (e.g. a correcting funding or a provider reversal)."""
    rows = await BreakRepository(session).list(after_id=page.after_id(), limit=page.limit, provider=provider, kind=kind)
    items, cursor = page_of(rows, page.limit, lambda found: [found.id])
    return Page(items=[ReconciliationBreakOut.of(found) for found in items], next_cursor=cursor)


@router.get(
    "/{reconciliation_id}",
    response_model=ReconciliationReport,
    description="The report with every item by category, as JSON or (`Accept: text/csv`) one CSV line per item.",
    responses={200: {"content": CSV_CONTENT}},
)
async def get_reconciliation(
    request: Request, reconciliation_id: uuid.UUID, session: SessionDep, _: Reconciler
) -> ClosingStreamingResponse:
    head = ReconciliationOut.of(await ReconciliationRepository(session).require(reconciliation_id))
    engine = request.app.state.engine
    if wants_csv(request):
        return ClosingStreamingResponse(
            service.report_csv(engine, head.id),
            media_type=CSV_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="reconciliation-{head.id}.csv"'},
        )
    return ClosingStreamingResponse(service.report_json(engine, head), media_type="application/json")
