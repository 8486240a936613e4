"""A small DCI social registry for tests and demos: `POST /registry/sync/search` answered from a caseload.

It matches as a real registry would, not as this service does: a document by its identifier type and its
number with spaces, dashes, dots, case and leading zeros ignored; a person by birth date and at least one
given and one family name in common, accents and case folded. `GET /admin/stats` counts the messages and
queries it was sent, so tests can prove what the service did (or did not) ask; `PUT /admin/outage` makes
it answer the next searches 503.
"""

from __future__ import annotations

import socket
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from unidecode import unidecode

from adapters.registries.dci import (
    BIRTH_DATE,
    DEFAULT_ID_TYPES,
    GIVEN_NAME,
    SEARCH_PATH,
    SURNAME,
    VERSION,
    identifier_key,
    now,
)

READY_PREFIX = "registry simulator listening on "


@dataclass(frozen=True)
class SimDocument:
    type: str
    number: str
    country: str


@dataclass(frozen=True)
class SimRecord:
    """One person of the caseload, as the registry holds them."""

    ref: str
    given_names: str
    family_names: str
    birth_date: date
    sex: str = "unknown"
    documents: tuple[SimDocument, ...] = ()

    def as_member(self) -> dict[str, Any]:
        """The record as a DCI `Member`; identifiers carry their issuing country (a registry's extension)."""
        return {
            "@type": "Member",
            "member_identifier": self.ref,
            "demographic_info": {
                "identifier": [
                    {
                        "identifier_type": id_type(d.type),
                        "identifier_value": d.number,
                        "issuing_country": d.country,
                    }
                    for d in self.documents
                ],
                "name": {"given_name": self.given_names, "surname": self.family_names},
                "sex": self.sex,
                "birth_date": self.birth_date.isoformat(),
            },
        }


def id_type(document_type: str) -> str:
    return DEFAULT_ID_TYPES.get(document_type, document_type.upper())


def folded(text: str) -> frozenset[str]:
    return frozenset("".join(c if c.isalpha() else " " for c in unidecode(text).lower()).split())


@dataclass
class Caseload:
    """The records, indexed by identifier and by birth date."""

    records: list[SimRecord]
    by_identifier: dict[tuple[str, str], list[SimRecord]] = field(default_factory=lambda: defaultdict(list))
    by_birth_date: dict[date, list[SimRecord]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        for record in self.records:
            for document in record.documents:
                self.by_identifier[(id_type(document.type), identifier_key(document.number))].append(record)
            self.by_birth_date[record.birth_date].append(record)

    def by_document(self, kind: str, value: str) -> list[SimRecord]:
        return list(self.by_identifier.get((kind, identifier_key(value)), ()))

    def by_person(self, given: str, family: str, born: date) -> list[SimRecord]:
        g, f = folded(given), folded(family)
        return [r for r in self.by_birth_date.get(born, ()) if folded(r.given_names) & g and folded(r.family_names) & f]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Criteria(_Loose):
    query_type: str
    query: Any
    pagination: dict[str, Any] = Field(default_factory=dict)


class _Request(_Loose):
    reference_id: str
    search_criteria: _Criteria


class _Message(_Loose):
    transaction_id: str
    search_request: list[_Request]


class _Header(_Loose):
    message_id: str
    action: str
    sender_id: str
    receiver_id: str | None = None


class SearchMessage(_Loose):
    header: _Header
    message: _Message


class Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _demographic(query: Any) -> tuple[str, str, date]:
    """given name, surname and birth date from a predicate list of `eq` expressions."""
    if not isinstance(query, list):
        raise Rejected("rjct.search_criteria.invalid", "a predicate query is a list of expressions")
    values: dict[str, Any] = {}
    for item in query:
        for key in ("expression1", "expression2"):
            expression = item.get(key) if isinstance(item, dict) else None
            if isinstance(expression, dict) and expression.get("operator") == "eq":
                values[str(expression.get("attribute_name"))] = expression.get("attribute_value")
    try:
        born = date.fromisoformat(str(values[BIRTH_DATE]))
        return str(values[GIVEN_NAME]), str(values[SURNAME]), born
    except (KeyError, ValueError):
        raise Rejected(
            "rjct.search_criteria.invalid", f"searchable by {GIVEN_NAME}, {SURNAME} and {BIRTH_DATE} (eq)"
        ) from None


def _answer(caseload: Caseload, request: _Request) -> dict[str, Any]:
    criteria = request.search_criteria
    base = {"reference_id": request.reference_id, "timestamp": now()}
    try:
        if criteria.query_type == "idtype-value":
            query = criteria.query
            if not isinstance(query, dict) or not isinstance(query.get("type"), str) or "value" not in query:
                raise Rejected("rjct.search_criteria.invalid", "an idtype-value query is {type, value}")
            found = caseload.by_document(query["type"], str(query["value"]))
        elif criteria.query_type == "predicate":
            found = caseload.by_person(*_demographic(criteria.query))
        else:
            raise Rejected("rjct.search_criteria.invalid", "query_type: idtype-value or predicate")
    except Rejected as exc:
        return base | {"status": "rjct", "status_reason_code": exc.code, "status_reason_message": str(exc)}
    size = criteria.pagination.get("page_size")
    page_size = int(size) if isinstance(size, int | float) and size >= 1 else 10
    return base | {
        "status": "succ",
        "data": {"version": VERSION, "reg_records": [r.as_member() for r in found[:page_size]]},
        "pagination": {"page_size": page_size, "page_number": 1, "total_count": len(found)},
    }


def _errors(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status)


def create_app(records: list[SimRecord], *, api_key: str | None = None, name: str = "registry-sim") -> FastAPI:
    caseload = Caseload(records)
    stats = {"messages": 0, "queries": 0, "refused": 0, "unauthorized": 0}
    outage = {"failures": 0}
    app = FastAPI(title="DCI registry simulator", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "records": len(caseload.records)}

    @app.get("/admin/stats")
    async def admin_stats() -> dict[str, int]:
        return stats

    @app.put("/admin/outage")
    async def admin_outage(request: Request) -> dict[str, int]:
        """`{"failures": n}`: the next n searches are answered 503, as a registry in trouble would."""
        body = await request.json()
        outage["failures"] = int(body.get("failures", 0))
        return outage

    @app.post(SEARCH_PATH)
    async def sync_search(request: Request) -> JSONResponse:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            stats["unauthorized"] += 1
            return _errors(401, "err.request.unauthorized", "a bearer token is required")
        if outage["failures"] > 0:
            outage["failures"] -= 1
            stats["refused"] += 1
            return _errors(503, "err.service.unavailable", "the registry is unavailable")
        try:
            search = SearchMessage.model_validate_json(await request.body())
        except ValidationError:
            return _errors(400, "err.request.bad", "not a DCI search message")
        stats["messages"] += 1
        stats["queries"] += len(search.message.search_request)
        header: dict[str, Any] = {
            "version": VERSION,
            "message_id": str(uuid.uuid4()),
            "message_ts": now(),
            "action": "on-search",
            "status": "succ",
            "total_count": len(search.message.search_request),
            "sender_id": search.header.receiver_id or name,
            "receiver_id": search.header.sender_id,
            "is_msg_encrypted": False,
        }
        if search.header.action != "search":
            header |= {"status": "rjct", "status_reason_code": "rjct.action.invalid", "completed_count": 0}
            responses: list[dict[str, Any]] = []
        else:
            responses = [_answer(caseload, r) for r in search.message.search_request]
            header["completed_count"] = len(responses)
        message = {
            "transaction_id": search.message.transaction_id,
            "correlation_id": str(uuid.uuid4()),
            "search_response": responses,
        }
        return JSONResponse({"header": header, "message": message})

    return app


def serve(
    records: list[SimRecord], *, host: str, port: int, api_key: str | None = None, log_level: str = "warning"
) -> None:
    """Bind, announce the URL on stdout (with `port=0`, how a parent learns the port), then serve."""
    sock = socket.create_server((host, port), backlog=1024)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"{READY_PREFIX}http://{url_host}:{bound_port}\n")
    sys.stdout.flush()
    config = uvicorn.Config(
        create_app(records, api_key=api_key), log_level=log_level, access_log=False, timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run(sockets=[sock])
