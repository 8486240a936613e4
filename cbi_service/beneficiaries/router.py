from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.beneficiaries import imports, service
from cbi_service.beneficiaries.masking import present
from cbi_service.beneficiaries.repository import AdjudicationRepository, BeneficiaryRepository, ImportRepository
from cbi_service.beneficiaries.schemas import (
    AdjudicationOut,
    BeneficiaryCreate,
    BeneficiaryOut,
    BeneficiaryPatch,
    BeneficiaryRegistered,
    DecisionIn,
    DedupResult,
    ImportAccepted,
    ImportOut,
    ImportRowOut,
    ImportSummary,
    Status,
)
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import Conflict, UnprocessableEntity
from cbi_service.kit.idempotency import IdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.streaming import ClosingStreamingResponse

router = APIRouter(tags=["beneficiaries"], route_class=StorableTextRoute)
Registrar = Annotated[Principal, Depends(require_roles(Role.registrar))]
Reader = Annotated[Principal, Depends(require_roles(Role.registrar, Role.programme_officer, Role.admin, Role.auditor))]
Checker = Annotated[Principal, Depends(require_roles(Role.registrar, Role.admin))]
Adjudicator = Annotated[Principal, Depends(require_roles(Role.registrar, Role.admin))]
AdjudicationReader = Annotated[Principal, Depends(require_roles(Role.registrar, Role.admin, Role.auditor))]
ImportReader = Annotated[Principal, Depends(require_roles(Role.registrar, Role.admin, Role.auditor))]
ImportStatus = Literal["queued", "running", "completed", "failed"]
FINISHED_IMPORTS = frozenset({"completed", "failed"})
CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}}}


@router.post(
    "/v1/beneficiaries",
    status_code=201,
    response_model=BeneficiaryRegistered,
    summary="Register a beneficiary (409 with the existing id if already registered)",
)
async def register(
    request: Request, body: BeneficiaryCreate, session: SessionDep, principal: Registrar, idem: IdempotencyDep
) -> Response:
    settings = request.app.state.settings
    checks = await service.registration_checks(session, settings, body, answered=await idem.answered())

    async def register_and_show() -> BeneficiaryRegistered:
        registered = await service.register(session, settings, principal, body, checks)
        return (await present(session, principal, "POST /v1/beneficiaries", [registered]))[0]

    return await idem.run(body, register_and_show, status_code=201)


@router.get("/v1/beneficiaries", response_model=Page[BeneficiaryOut])
async def list_beneficiaries(
    session: SessionDep,
    principal: Reader,
    page: PageDep,
    status: Status | None = None,
    programme_id: uuid.UUID | None = None,
    external_ref: Annotated[str | None, Query(max_length=100)] = None,
) -> Page[BeneficiaryOut]:
    rows = await BeneficiaryRepository(session).list(
        after_id=page.after_id(),
        limit=page.limit,
        status=status,
        programme_id=programme_id,
        external_ref=external_ref,
    )
    items, cursor = page_of(rows, page.limit, lambda b: [b.id])
    shown = await present(session, principal, "GET /v1/beneficiaries", await service.out_many(session, items))
    return Page(items=shown, next_cursor=cursor)


class CsvResponse(PlainTextResponse):
    media_type = "text/csv"


@router.get(
    "/v1/beneficiaries/imports/template",
    response_class=CsvResponse,
    responses={200: {"description": "The columns of an import file and an example row", "content": CSV_CONTENT}},
)
async def import_template(_: Reader) -> CsvResponse:
    """The columns an import file may have, and a made-up example row (UTF-8 with a byte-order mark, so that
    Excel shows its accents)."""
    return CsvResponse(
        imports.template_csv(),
        headers={"Content-Disposition": 'attachment; filename="beneficiaries-template.csv"'},
    )


@router.get("/v1/beneficiaries/imports", response_model=Page[ImportSummary])
async def list_imports(
    session: SessionDep, _: ImportReader, page: PageDep, status: ImportStatus | None = None
) -> Page[ImportSummary]:
    """Imports, newest first, with their progress and counts (the rows: `GET /v1/beneficiaries/imports/{id}`)."""
    rows = await ImportRepository(session).list(before_id=page.after_id(), limit=page.limit, status=status)
    items, cursor = page_of(rows, page.limit, lambda i: [i.id])
    return Page(items=[ImportSummary.of(i) for i in items], next_cursor=cursor)


@router.post("/v1/beneficiaries/imports", status_code=202, response_model=ImportAccepted)
async def start_import(
    request: Request,
    session: SessionDep,
    principal: Registrar,
    idem: IdempotencyDep,
    file: Annotated[UploadFile, File(description="CSV or XLSX")],
) -> Response:
    """Queue a bulk registration file; the same Idempotency-Key with the same file replays the first answer.

    A CSV may be UTF-8 (with or without a byte-order mark), UTF-16 with a byte-order mark, or Windows-1252 /
    Latin-1, separated by commas, semicolons or tabs; dates `YYYY-MM-DD` or day first `DD/MM/YYYY`. A CSV
    whose encoding cannot be told apart, or whose header lacks a required column, is refused with a 422 and
    nothing is stored."""
    fingerprint = await imports.upload_fingerprint(file) if idem.key is not None else None
    settings = request.app.state.settings
    return await idem.run(
        fingerprint, lambda: imports.start_import(session, settings, principal, file), status_code=202
    )


@router.get("/v1/beneficiaries/imports/{import_id}", response_model=ImportOut)
async def get_import(
    import_id: uuid.UUID,
    session: SessionDep,
    _: ImportReader,
    page: PageDep,
    outcome: Literal["created", "duplicate", "pending_adjudication", "invalid"] | None = None,
) -> ImportOut:
    """Progress, counts per outcome, and a page of per-row results (`limit`/`cursor` page the rows)."""
    repo = ImportRepository(session)
    imp = await repo.require(import_id)
    keys = page.keys()
    try:
        after = int(keys[0]) if keys else None
    except ValueError as exc:
        raise UnprocessableEntity("Invalid cursor.", errors=[{"field": "cursor", "message": "not valid"}]) from exc
    rows = await repo.rows(import_id, after=after, limit=page.limit, outcome=outcome)
    items, cursor = page_of(rows, page.limit, lambda r: [r.row_number])
    return ImportOut.with_rows(imp, Page(items=[ImportRowOut.of(r) for r in items], next_cursor=cursor))


@router.get(
    "/v1/beneficiaries/imports/{import_id}/errors.csv",
    response_class=ClosingStreamingResponse,
    responses={200: {"description": "row_number, field, message: one line per field error", "content": CSV_CONTENT}},
)
async def import_errors(
    request: Request, import_id: uuid.UUID, session: SessionDep, _: ImportReader
) -> ClosingStreamingResponse:
    """The field errors of a finished import's invalid rows, one CSV line each (row number, column, what is
    wrong), without any value from the file. 409 while the import is queued or running."""
    imp = await ImportRepository(session).require(import_id)
    if imp.status not in FINISHED_IMPORTS:
        raise Conflict(f"The import is {imp.status}; its row errors are ready once it has finished.")
    return ClosingStreamingResponse(
        imports.errors_csv(request.app.state.engine, import_id),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"'},
    )


@router.get("/v1/beneficiaries/{beneficiary_id}", response_model=BeneficiaryOut)
async def get_beneficiary(beneficiary_id: uuid.UUID, session: SessionDep, principal: Reader) -> BeneficiaryOut:
    person = await service.out_one(session, await BeneficiaryRepository(session).require(beneficiary_id))
    return (await present(session, principal, "GET /v1/beneficiaries/{beneficiary_id}", [person]))[0]


@router.patch("/v1/beneficiaries/{beneficiary_id}", response_model=BeneficiaryRegistered)
async def correct(
    request: Request, beneficiary_id: uuid.UUID, body: BeneficiaryPatch, session: SessionDep, principal: Registrar
) -> BeneficiaryRegistered:
    corrected = await service.correct(session, request.app.state.settings, principal, beneficiary_id, body)
    return (await present(session, principal, "PATCH /v1/beneficiaries/{beneficiary_id}", [corrected]))[0]


@router.post("/v1/beneficiaries/{beneficiary_id}/deactivate", response_model=BeneficiaryOut)
async def deactivate(beneficiary_id: uuid.UUID, session: SessionDep, principal: Registrar) -> BeneficiaryOut:
    person = await service.deactivate(session, principal, beneficiary_id)
    return (await present(session, principal, "POST /v1/beneficiaries/{beneficiary_id}/deactivate", [person]))[0]


@router.post("/v1/dedup/check", response_model=DedupResult, summary="Dedup outcome of a registration, stored nowhere")
async def dedup_check(request: Request, body: BeneficiaryCreate, session: SessionDep, _: Checker) -> DedupResult:
    return await service.check(session, request.app.state.settings, body)


@router.get("/v1/adjudications", response_model=Page[AdjudicationOut])
async def list_adjudications(
    session: SessionDep,
    _: AdjudicationReader,
    page: PageDep,
    status: Literal["open", "decided", "withdrawn"] | None = None,
) -> Page[AdjudicationOut]:
    rows = await AdjudicationRepository(session).list(after_id=page.after_id(), limit=page.limit, status=status)
    items, cursor = page_of(rows, page.limit, lambda a: [a.id])
    return Page(items=[AdjudicationOut.of(a) for a in items], next_cursor=cursor)


@router.post("/v1/adjudications/{adjudication_id}/decision", response_model=AdjudicationOut)
async def decide(
    adjudication_id: uuid.UUID, body: DecisionIn, session: SessionDep, principal: Adjudicator
) -> AdjudicationOut:
    return await service.decide_adjudication(session, principal, adjudication_id, body)
