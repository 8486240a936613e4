"""The ledger's read API for auditors and finance (contract §9, §10): its accounts, an account's entries, the
trial balance (read through accounting), the export of every entry (streamed by `exports.service`), and the
signed manifest of an export with the keys that verify it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from cbi_service.accounting import service as accounting
from cbi_service.accounting.schemas import LedgerAccountOut, LedgerEntryOut, TrialBalanceOut
from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.exports import service
from cbi_service.exports.keys import manifest_keys
from cbi_service.exports.schemas import ManifestJwks, SignedExportManifest
from cbi_service.exports.writers import MEDIA_TYPES, ExportFormat
from cbi_service.kit.db import SessionDep
from cbi_service.kit.money import CurrencyCode
from cbi_service.kit.pagination import Page, PageDep, encode_cursor
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.streaming import ClosingStreamingResponse
from cbi_service.kit.timeutil import AwareDatetimeQuery

router = APIRouter(prefix="/v1/ledger", route_class=StorableTextRoute)
Auditor = Annotated[Principal, Depends(require_roles(Role.auditor, Role.finance))]
LedgerReader = Annotated[Principal, Depends(require_roles(Role.auditor, Role.finance, Role.admin))]

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

The body is streamed from one consistent snapshot in constant memory. Every format can be verified
offline with `cbi-service ledger verify FILE`. In CSV and XLSX, text a spreadsheet would evaluate (a
`key`, `kind`, `phase`, `description`, `account_code` or `currency` starting with `=`, `+`, `-`, `@`, tab,
CR or LF) is written with a leading `'`, as is text already starting with `'`; the verifier removes it
before hashing. Parquet holds the text verbatim.

XLSX: sheet `entries` (then `entries 2`, ... past Excel's 1,048,576 rows, each with the header), a bold
header row frozen above an autofilter over the data. `chain`, `seq`, `entry` and `amount_minor` are
integers and `amount` a number shown with the currency's decimals; where `amount_minor` has more than
Excel's 15 significant digits, both amounts are text instead, so that no digit is lost. Ids, digests,
times, references and the other text are text cells, never formulas; control characters are written as
OOXML's `_xHHHH_` escapes, which spreadsheets (and the verifier) read back as the character, and a text
of the form `<r>…</r>` in the columns above also gets the leading `'`. Text beyond Excel's 32,767
characters per cell is cut there: such an export fails verification; use CSV or Parquet for it. The
workbook is built whole in a temporary folder before its first byte is sent.

Every export is recorded in the audit trail.
"""

_BODY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/export",
    tags=["auditors"],
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


MANIFEST_DESCRIPTION = """
A signed statement of what an export with the same `from`, `to` and `programme_id` must contain (any
format): its first and last transaction, the numbers of transactions and entries, the debits and credits
per currency, each chain stripe's first and last transaction, and the SHA-256 of every transaction's hash
in export order. `cbi-service ledger verify FILE --manifest M.json --keys K.json` checks an export
against it offline and names what differs: a transaction cut from either end or the middle fails.

Read from one snapshot at `generated_at`. An export holds the same transactions when nothing was posted
into its window in between: ask for a window that has ended (`to` in the past), or the export may hold
later transactions the manifest does not. Signed with the ledger's Ed25519 key (`key_id`), whose public
half `GET /v1/ledger/export/manifest/keys` publishes; no personal data. Every manifest is recorded in the
audit trail.
"""

MANIFEST_KEYS_MAX_AGE_SECONDS = 300


@router.get(
    "/export/manifest",
    tags=["auditors"],
    response_model=SignedExportManifest,
    description=MANIFEST_DESCRIPTION,
)
async def export_manifest(
    request: Request,
    session: SessionDep,
    principal: Auditor,
    start: Annotated[AwareDatetimeQuery | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetimeQuery | None, Query(alias="to")] = None,
    programme_id: uuid.UUID | None = None,
) -> Response:
    window = await service.plan_manifest(session, principal, start, end, programme_id)
    keys = manifest_keys(request.app.state.settings)
    # Served as signed, not re-serialised through the model (which documents it).
    return JSONResponse(await service.signed_manifest(request.app.state.engine, keys, window))


@router.get("/export/manifest/keys", tags=["auditors"], response_model=ManifestJwks)
async def manifest_public_keys(request: Request, response: Response) -> ManifestJwks:
    """The JWKS export manifests verify against: pick the key by the manifest's `key_id`. No
    authentication: an auditor saves it from the service and verifies offline with it."""
    response.headers["Cache-Control"] = f"public, max-age={MANIFEST_KEYS_MAX_AGE_SECONDS}"
    return ManifestJwks.model_validate(manifest_keys(request.app.state.settings).jwks())


@router.get("/accounts", tags=["ledger"], response_model=Page[LedgerAccountOut])
async def list_accounts(
    session: SessionDep,
    _: LedgerReader,
    page: PageDep,
    programme_id: uuid.UUID | None = None,
    currency: CurrencyCode | None = None,
) -> Page[LedgerAccountOut]:
    items, after = await accounting.list_ledger_accounts(
        session, after_id=page.after_id(), limit=page.limit, programme_id=programme_id, currency=currency
    )
    return Page(items=items, next_cursor=encode_cursor([after]) if after else None)


@router.get("/accounts/{account_id}/entries", tags=["ledger"], response_model=Page[LedgerEntryOut])
async def account_entries(
    account_id: uuid.UUID, session: SessionDep, _: LedgerReader, page: PageDep
) -> Page[LedgerEntryOut]:
    """The account's entries oldest first, each with the running posted balance after it."""
    keys = page.keys()
    items, cursor = await accounting.account_entries(
        session, account_id, cursor=keys[0] if keys else None, limit=page.limit
    )
    return Page(items=items, next_cursor=encode_cursor([cursor]) if cursor else None)


@router.get("/trial-balance", tags=["ledger"], response_model=TrialBalanceOut)
async def trial_balance(
    session: SessionDep,
    _: LedgerReader,
    as_of: Annotated[
        AwareDatetimeQuery | None,
        Query(description="RFC 3339 with offset, years 1900 to 9998 in UTC; balances as they stood then."),
    ] = None,
    programme_id: uuid.UUID | None = None,
) -> TrialBalanceOut:
    return await accounting.trial_balance(session, as_of=as_of, programme_id=programme_id)
