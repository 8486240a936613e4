"""Bulk registration from CSV or XLSX files: the upload, the reading and the rules; its job is in `tasks`.

Files are read by `kit.tabular`, as `registry hash` reads them: a CSV in any encoding and separator people
save it with (refused at upload, with nothing stored, when its encoding cannot be told apart or its header
lacks a required column), dates as `YYYY-MM-DD` or day first. The upload is stored in 1 MiB pieces inside
the database (so any worker process can pick the job up), a CSV decoded and stored as UTF-8; the job copies
it to a temporary file and reads it row by row, never holding the file whole. Rows are registered in
chunks, each chunk one transaction with its progress, so a crashed or restarted worker resumes after the
last committed row. Within a chunk, rows are checked against the database and against the chunk's own
earlier rows; earlier chunks are already in the database, which is how duplicates inside one file are
caught. A row that fails validation is reported, never fatal, with field errors that never quote a value.

Hostile files are refused before they cost memory (limits in Settings, see README): a CSV is read in
bounded lines (`kit.bounded`), a workbook is checked part by part before openpyxl opens it (`kit.workbook`),
and every file is held to `import_max_rows` rows and `upload_max_cell_chars` characters a cell. A worker
asked to stop (`ctx.stopping`) hands the job back after the chunk in hand; the next worker resumes.

A chunk costs a fixed number of round trips whatever its size: one lock statement, one query for every
candidate of every row, and one bulk statement each for the people, their blocking keys, the adjudications,
the row outcomes and the audit events.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import aclosing
from itertools import islice
from pathlib import Path
from typing import IO, Any

from fastapi import UploadFile
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cbi_service.audit.service import AuditEntry, record_audit, record_audit_many
from cbi_service.auth.roles import Principal, Role
from cbi_service.beneficiaries.models import BeneficiaryImport
from cbi_service.beneficiaries.repository import (
    AdjudicationRepository,
    BeneficiaryRepository,
    ImportRepository,
    stream_row_errors,
)
from cbi_service.beneficiaries.schemas import BeneficiaryCreate, ImportAccepted
from cbi_service.beneficiaries.service import Prepared, columns_of, combine, jsonable_matches, prepare
from cbi_service.dedup.blocking import MemoryIndex
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.dedup.registries import RegistryChecks, check_many, defer_rechecks, registries_for
from cbi_service.dedup.scoring import decide
from cbi_service.dedup.service import active_model
from cbi_service.dedup.settings import get_dedup_settings
from cbi_service.jobs.service import enqueue
from cbi_service.kit.cells import SafeWriter
from cbi_service.kit.crypto import keyring
from cbi_service.kit.errors import AppError, UnprocessableEntity, field_errors
from cbi_service.kit.ids import new_id
from cbi_service.kit.settings import Settings
from cbi_service.kit.tabular import (
    ENCODING_NAMES,
    CsvLayout,
    Row,
    TableLimits,
    UnreadableFile,
    parse_date,
    read_layout,
    text_of,
)
from cbi_service.kit.tabular import count_rows as count_table_rows
from cbi_service.kit.tabular import iter_rows as iter_table_rows
from cbi_service.kit.workbook import NotAWorkbook, WorkbookLimits, WorkbookRefused, check_archive

JOB_KIND = "beneficiaries.import"
TEMPLATE_COLUMNS = (
    "given_names", "family_names", "date_of_birth", "sex", "nationality", "document_type", "document_number",
    "document_country", "phone", "country", "admin1", "admin2", "household_size", "external_ref",
    "consent_given", "consent_date", "consent_purpose", "population_type", "disability",
)  # fmt: skip
REQUIRED_COLUMNS = frozenset(
    {"given_names", "family_names", "date_of_birth", "sex", "nationality", "country", "household_size",
     "consent_given", "consent_date", "consent_purpose"}
)  # fmt: skip
# An example row for the template: a made-up person, every column as a file would hold it.
TEMPLATE_EXAMPLE = (
    "María José", "Pérez Rodríguez", "12/03/1990", "female", "VE", "national_id", "V-12.345.678", "VE",
    "0414 765 4321", "CO", "Norte de Santander", "Cúcuta", 4, "EJEMPLO-1", "sí", "15/01/2026",
    "multipurpose cash", "in_destination", "no",
)  # fmt: skip
DATE_COLUMNS = ("date_of_birth", "consent_date")
UPLOAD_PIECE = 1 << 20
CHUNK_ROWS = 500
MAX_UPLOAD_BYTES = 200 << 20
# A failure that is not the file's (the database went away) is retried; after this many the import fails.
MAX_ATTEMPTS = 5
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "si", "sí", "x", "verdadero"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "falso"})
ERRORS_CSV_COLUMNS = ("row_number", "field", "message")

# Where a validation error of the JSON shape points in the file's columns.
_COLUMN_OF = {
    "documents[0].type": "document_type",
    "documents[0].number": "document_number",
    "documents[0].issuing_country": "document_country",
    "location.country": "country",
    "location.admin1": "admin1",
    "location.admin2": "admin2",
    "consent.given": "consent_given",
    "consent.date": "consent_date",
    "consent.purpose": "consent_purpose",
    "consent": "consent_given",
}


# A file row after validation: ready to register, or its field errors.
Checked = Prepared | list[dict[str, str]]


class ContentTooLarge(AppError):
    status, title, slug = 413, "Content Too Large", "content-too-large"


def template_csv() -> str:
    """The columns and an example row, with a UTF-8 byte-order mark so that Excel opens the accents right."""
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(TEMPLATE_COLUMNS)
    writer.writerow(TEMPLATE_EXAMPLE)
    return "\ufeff" + out.getvalue()


def _file_format(upload: UploadFile) -> str:
    name = (upload.filename or "").lower()
    if name.endswith(".xlsx") or upload.content_type == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ):
        return "xlsx"
    if name.endswith((".csv", ".txt")) or (upload.content_type or "").startswith("text/"):
        return "csv"
    raise UnprocessableEntity("Unsupported file.", errors=[{"field": "file", "message": "must be a CSV or XLSX file"}])


async def upload_fingerprint(upload: UploadFile) -> dict[str, Any]:
    """What identifies an upload for Idempotency-Key: its name, type and a SHA-256 of its bytes.

    The multipart framing differs between two sends of one file, so the request body cannot be compared
    as it is. The file is read once in pieces (never whole) and rewound for storing.
    """
    digest = hashlib.sha256()
    size = 0
    while piece := await upload.read(UPLOAD_PIECE):
        size += len(piece)
        if size > MAX_UPLOAD_BYTES:
            raise ContentTooLarge(f"The file exceeds {MAX_UPLOAD_BYTES >> 20} MiB.")
        digest.update(piece)
    await upload.seek(0)
    return {
        "filename": upload.filename,
        "content_type": upload.content_type,
        "bytes": size,
        "sha256": digest.hexdigest(),
    }


def _refuse_workbook_bomb(file: IO[bytes], limits: WorkbookLimits) -> None:
    """What the zip's directory tells at once (a bomb, an oversized part) is refused with the upload; a file
    that is no workbook at all is left for the job, which reports it."""
    try:
        check_archive(file, limits)
    except NotAWorkbook:
        pass
    except WorkbookRefused as exc:
        raise UnprocessableEntity(
            "The workbook is over the import limits.", errors=[{"field": "file", "message": str(exc)}]
        ) from None
    finally:
        file.seek(0)


def _size(file: IO[bytes]) -> int:
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    return size


def _layout(file: IO[bytes], limits: TableLimits) -> CsvLayout:
    try:
        return read_layout(file, REQUIRED_COLUMNS, limits.text)
    except UnreadableFile as exc:
        raise UnprocessableEntity(
            f"The file cannot be read: {exc}.", errors=[{"field": "file", "message": str(exc)}]
        ) from None


async def _pieces(upload: UploadFile, layout: CsvLayout | None) -> AsyncIterator[bytes]:
    """The upload as it is stored: a workbook as it came; a CSV decoded with its `layout` and stored as
    UTF-8, so that the job reads the text the upload was checked as, whatever encoding it came in."""
    if layout is None:
        while piece := await upload.read(UPLOAD_PIECE):
            yield piece
        return
    with text_of(upload.file, layout.encoding) as text:
        while chars := await asyncio.to_thread(text.read, UPLOAD_PIECE):
            yield chars.encode()


async def start_import(
    session: AsyncSession, settings: Settings, principal: Principal, upload: UploadFile
) -> ImportAccepted:
    """Check the upload, store it piece by piece and queue its processing; the job sees it only once this
    commits. A CSV whose encoding cannot be told (`kit.tabular`) or whose header lacks the required columns
    is refused here with a 422, and nothing is stored."""
    file_format = _file_format(upload)
    size = await asyncio.to_thread(_size, upload.file)
    if size > MAX_UPLOAD_BYTES:
        raise ContentTooLarge(f"The file exceeds {MAX_UPLOAD_BYTES >> 20} MiB.")
    if size == 0:
        raise UnprocessableEntity("Empty file.", errors=[{"field": "file", "message": "the file is empty"}])
    limits = TableLimits.of(settings)
    layout = None
    if file_format == "xlsx":
        await asyncio.to_thread(_refuse_workbook_bomb, upload.file, limits.workbook)
    else:
        layout = await asyncio.to_thread(_layout, upload.file, limits)
    repo = ImportRepository(session)
    imp = await repo.add(
        BeneficiaryImport(
            filename=(upload.filename or "upload")[:255], file_format=file_format, created_by=principal.id, counts={}
        )
    )
    seq = 0
    async for piece in _pieces(upload, layout):
        await repo.add_chunk(imp.id, seq, piece)
        seq += 1
    read_as = {"encoding": ENCODING_NAMES[layout.encoding], "delimiter": layout.delimiter} if layout else {}
    await enqueue(
        session, JOB_KIND, {"import_id": str(imp.id)}, dedupe_key=f"{JOB_KIND}:{imp.id}", max_attempts=MAX_ATTEMPTS
    )
    await record_audit(
        session, principal, "beneficiary_import.queued", "beneficiary_import", imp.id, None,
        {"filename": imp.filename, "bytes": size, **read_as},
    )  # fmt: skip
    return ImportAccepted(id=imp.id, status="queued")


async def errors_csv(engine: AsyncEngine, import_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The import's row errors as CSV, one line per field error: the row number, the column and what is
    wrong with it. Never a cell's value: errors are written without them (`validate_row`), and the file
    may be forwarded to whoever fixes the spreadsheet."""
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(ERRORS_CSV_COLUMNS)
    yield out.getvalue().encode()
    batches = stream_row_errors(engine, import_id)
    async with aclosing(batches):
        async for batch in batches:
            out = io.StringIO()
            writer = SafeWriter(out)
            writer.writerows((number, e["field"], e["message"]) for number, errors in batch for e in errors)
            yield out.getvalue().encode()


def iter_rows(path: Path, file_format: str, limits: TableLimits) -> Iterator[Row]:
    """The file's non-blank data rows (`kit.tabular`), its header holding the import's required columns."""
    return iter_table_rows(path, file_format, REQUIRED_COLUMNS, limits)


def count_rows(path: Path, file_format: str, limits: TableLimits) -> int | None:
    """The rows to import; a file over the limits fails here, before any row is registered."""
    return count_table_rows(path, file_format, REQUIRED_COLUMNS, limits)


def _iso_date(text: str | None) -> str | None:
    try:
        return parse_date(text).isoformat() if text else None
    except ValueError:
        return None


def _yes_no(text: str | None) -> bool | str | None:
    """A yes/no cell as a bool, empty as None; anything else goes on as it is, for validation to refuse."""
    if text is None:
        return None
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return word or None


def _population_type(text: str) -> str:
    """`In transit`, `in-transit` and `in_transit` alike."""
    return re.sub(r"[\s-]+", "_", text.strip().lower())


def to_payload(cells: dict[str, str]) -> dict[str, Any]:
    """A file row in the shape of `POST /v1/beneficiaries`, so both paths share one validation. An empty
    `population_type` is left out, so the API's default applies; an empty `disability` means not asked."""

    def get(name: str) -> str | None:
        return cells.get(name) or None

    documents = []
    if get("document_number"):
        documents.append(
            {
                "type": get("document_type"),
                "number": get("document_number"),
                "issuing_country": (get("document_country") or "").upper() or None,
            }
        )
    optional: dict[str, Any] = {}
    if population_type := get("population_type"):
        optional["population_type"] = _population_type(population_type)
    return {
        "given_names": get("given_names"),
        "family_names": get("family_names"),
        "date_of_birth": _iso_date(get("date_of_birth")),
        "sex": (get("sex") or "").lower() or None,
        "nationality": (get("nationality") or "").upper() or None,
        "documents": documents,
        "phone": get("phone"),
        "location": {
            "country": (get("country") or "").upper() or None,
            "admin1": get("admin1"),
            "admin2": get("admin2"),
        },
        "household_size": get("household_size"),
        "external_ref": get("external_ref"),
        "disability": _yes_no(get("disability")),
        **optional,
        "consent": {
            "given": (get("consent_given") or "").lower() in TRUE_WORDS,
            "date": _iso_date(get("consent_date")),
            "purpose": get("consent_purpose"),
        },
    }


def _row_errors(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"field": _COLUMN_OF.get(e["field"], e["field"]), "message": e["message"]} for e in errors]


def _date_errors(cells: dict[str, str]) -> dict[str, str]:
    """The date columns that do not hold a date as files write them, with what is wrong (never the value)."""
    errors = {}
    for column in DATE_COLUMNS:
        text = cells.get(column, "")
        if not text:
            errors[column] = "is required"
            continue
        try:
            parse_date(text)
        except ValueError as exc:
            errors[column] = str(exc)
    return errors


def validate_row(cells: dict[str, str]) -> Checked:
    unstorable = [name for name, value in cells.items() if "\x00" in value]
    if unstorable:  # PostgreSQL text cannot hold NUL: the row is refused rather than failing its chunk
        return [{"field": name, "message": "must not contain NUL characters"} for name in unstorable]
    try:
        return prepare(BeneficiaryCreate.model_validate(to_payload(cells)))
    except ValidationError as exc:
        errors = _row_errors(field_errors(exc))
    except UnprocessableEntity as exc:
        errors = _row_errors(exc.extra["errors"])
    # A date the file writes in a way it may not reaches the model as missing: say what is wrong with it.
    dates = _date_errors(cells)
    return [e for e in errors if e["field"] not in dates] + [
        {"field": column, "message": message} for column, message in dates.items()
    ]


def raw_chunks(path: Path, file_format: str, after_row: int, limits: TableLimits) -> Iterator[list[Row]]:
    """The file's rows after `after_row`, in chunks of CHUNK_ROWS."""
    rows = ((n, cells) for n, cells in iter_rows(path, file_format, limits) if n > after_row)
    while chunk := list(islice(rows, CHUNK_ROWS)):
        yield chunk


def validate_rows(rows: list[Row]) -> list[tuple[int, Checked]]:
    """Validation of a chunk: CPU only, so it may run in another process."""
    return [(number, validate_row(cells)) for number, cells in rows]


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the validation process ends when the process that started it does, even by
    kill -9 (which runs no clean-up that could stop the pool). Linux is told to kill it then; elsewhere
    a thread watches for the parent to go."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def validation_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )


async def validated_chunks(
    chunks: Iterator[list[Row]], *, parallel: bool
) -> AsyncGenerator[list[tuple[int, Checked]], None]:
    """The chunks, validated. With `parallel`, a separate process validates one chunk ahead while the
    previous one is registered: validation is a quarter of the work and needs no database, so on two cores
    it stops adding to the import's time. (A thread would not do: it would hold the GIL that the event loop
    needs to take the database's replies.)"""
    if not parallel:
        for chunk in chunks:
            yield validate_rows(chunk)
        return
    loop = asyncio.get_running_loop()
    with validation_pool() as pool:
        pending: asyncio.Future[list[tuple[int, Checked]]] | None = None
        for chunk in chunks:
            upcoming = loop.run_in_executor(pool, validate_rows, chunk)
            if pending is not None:
                yield await pending
            pending = upcoming
        if pending is not None:
            yield await pending


async def registry_checks(settings: Settings, rows: Sequence[tuple[int, Checked]]) -> list[RegistryChecks]:
    """The external registries' answers for a chunk's valid rows, in order: asked before the chunk's
    transaction begins (`process_chunk` takes them), so a slow registry holds no lock, no connection and no
    transaction open while it answers."""
    records = [checked.record for _, checked in rows if not isinstance(checked, list)]
    return await check_many(registries_for(settings.registries), records)


async def process_chunk(
    session: AsyncSession,
    imp: BeneficiaryImport,
    rows: list[tuple[int, Checked]],
    external: Sequence[RegistryChecks],
) -> None:
    """Register one chunk of validated rows in the caller's transaction, together with the import's progress,
    on the registries' answers `external` for its valid rows (`registry_checks`)."""
    dedup_settings = get_dedup_settings()
    model = await active_model(session)
    principal = Principal(id=imp.created_by, name=f"beneficiary import {imp.id}", roles=frozenset({Role.registrar}))
    repo = BeneficiaryRepository(session)
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, Prepared]] = []
    for number, checked in rows:
        if isinstance(checked, list):
            results.append(
                {"row_number": number, "outcome": "invalid", "errors": checked, "matches": [],
                 "registries_unavailable": []}
            )  # fmt: skip
        else:
            valid.append((number, checked))

    all_keys = sorted({k for _, p in valid for k in p.keys})
    await repo.lock_keys(all_keys)
    filed = await repo.filed_under(all_keys)
    owners: dict[str, list[uuid.UUID]] = {}
    for ident, (_, shared_keys) in filed.items():
        for key in shared_keys:
            owners.setdefault(key, []).append(ident)
    in_chunk: MemoryIndex[uuid.UUID] = MemoryIndex()
    ring = await keyring(session)
    version = await ring.active(session)
    beneficiaries: list[dict[str, Any]] = []
    keys: list[tuple[str, uuid.UUID]] = []
    adjudications: list[dict[str, Any]] = []
    rechecks: list[tuple[uuid.UUID, str]] = []
    for (number, prepared), checks in zip(valid, external, strict=True):
        shared: dict[uuid.UUID, int] = {}
        for key in prepared.keys:
            for owner in owners.get(key, ()):
                shared[owner] = shared.get(owner, 0) + 1
        ranked = sorted(shared, key=shared.__getitem__, reverse=True)
        candidates: list[tuple[uuid.UUID, MatchRecord]] = [
            (i, filed[i][0]) for i in ranked[: dedup_settings.max_candidates]
        ]
        candidates += in_chunk.candidates(prepared.record, prepared.keys)
        outcome = combine(decide(prepared.record, candidates, dedup_settings, model), checks)
        matches = jsonable_matches(outcome.matches)
        unavailable = [name for name in checks.asked if name in checks.unavailable]
        if outcome.status == "duplicate":
            results.append(
                {"row_number": number, "outcome": "duplicate", "errors": [], "matches": matches,
                 "registries_unavailable": unavailable}
            )  # fmt: skip
            continue
        beneficiary_id = new_id()
        status = "active" if outcome.status == "unique" else "pending_adjudication"
        beneficiaries.append(
            {
                "id": beneficiary_id,
                "status": status,
                "consent_date": prepared.data.consent.date,
                "consent_purpose": prepared.data.consent.purpose,
                "registered_by": imp.created_by,
                **columns_of(ring, version, beneficiary_id, prepared),
            }
        )
        keys.extend((k, beneficiary_id) for k in prepared.keys)
        rechecks.extend(outcome.unchecked(beneficiary_id))
        in_chunk.add(beneficiary_id, prepared.record, prepared.keys)
        if status == "pending_adjudication":
            adjudications.append({"beneficiary_id": beneficiary_id, "matches": matches})
        results.append(
            {
                "row_number": number,
                "outcome": "created" if status == "active" else "pending_adjudication",
                "beneficiary_id": beneficiary_id,
                "errors": [],
                "matches": matches,
                "registries_unavailable": unavailable,
            }
        )

    await repo.add_many(beneficiaries, keys)
    await AdjudicationRepository(session).open_many(adjudications)
    await defer_rechecks(session, rechecks)
    await ImportRepository(session).add_rows([{"import_id": imp.id, "beneficiary_id": None, **r} for r in results])
    import_ref = str(imp.id)
    events = [
        AuditEntry("beneficiary.registered", "beneficiary", row["id"], None,
                   {"status": row["status"], "import_id": import_ref})
        for row in beneficiaries
    ]  # fmt: skip
    await record_audit_many(session, principal, events)
    counts = dict(imp.counts)
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    imp.counts = counts
    imp.rows_done += len(rows)
