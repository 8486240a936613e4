"""DCI registry adapter: asks a remote registry speaking the DCI (Digital Convergence Initiative) social
registry sync search API whether it knows the person being registered.

One `POST {base_url}/registry/sync/search` per check carries, in the DCI envelope (`header` + `message` with
`transaction_id` and `search_request[]`), one `idtype-value` query per document of a type the registry knows
and one `predicate` query on name and birth date. The registry's records come back in `search_response[]`,
one per `reference_id`.

What a check may cost is bounded: every attempt (tenacity retries transport errors, 5xx and 429) fits in one
deadline of `timeout_seconds`, and a circuit breaker stops asking a registry that failed `failure_threshold`
times in a row until `recovery_seconds` have passed, so a registry that is down costs its timeout a few times,
then nothing. Every failure is a `RegistryUnavailable`, which dedup reports as `unavailable`, never as "no
match". Messages name the registry and what went wrong (a status, a timeout), never what was asked: queries
carry names and document numbers.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from circuitbreaker import CircuitBreaker
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from unidecode import unidecode

from adapters.registries.base import (
    RegistryConfigError,
    RegistryDocument,
    RegistryMatch,
    RegistryProbe,
    RegistryUnavailable,
)

SEARCH_PATH = "/registry/sync/search"
VERSION = "1.0.0"

#: The service's document types as DCI identifier types ("defined as per implementation context"); an entry's
#: `id_types` replaces or adds to these, and a type mapped to "" is not searched.
DEFAULT_ID_TYPES: Mapping[str, str] = {
    "national_id": "NID",
    "passport": "PASSPORT",
    "residence_permit": "RESIDENCE_PERMIT",
    "birth_certificate": "BRN",
    "other": "OTHER",
}

#: Attribute names of the demographic predicate query.
GIVEN_NAME, SURNAME, BIRTH_DATE = "given_name", "surname", "birth_date"

IDENTIFIER_SCORE = 0.95  # found by a document whose issuing country the registry does not confirm
DEMOGRAPHIC_SCORE = 0.9  # found by name and birth date


def identifier_key(value: str) -> str:
    """A document number as registries write it differently (spaces, dashes, dots, case, leading zeros)
    reduced to one form."""
    return re.sub(r"[^0-9A-Z]", "", unidecode(value).upper()).lstrip("0")


class DciOptions(BaseModel):
    """The options of a `dci` entry of CBI_REGISTRIES."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    adapter: Literal["dci"] = "dci"
    base_url: str
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10)
    failure_threshold: int = Field(default=5, ge=1)
    recovery_seconds: float = Field(default=30.0, gt=0)
    api_key: SecretStr | None = None
    sender_id: str = Field(default="cbi-service", min_length=1, max_length=200)
    receiver_id: str | None = Field(default=None, max_length=200)
    #: Issuing country of the registry's identifiers when its records do not say (a national registry).
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    id_types: dict[str, str] = Field(default_factory=dict)
    demographic: bool = True
    max_results: int = Field(default=10, ge=1, le=100)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError("must be an absolute http(s) URL") from None
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @property
    def identifier_types(self) -> dict[str, str]:
        return {kind: code for kind, code in {**DEFAULT_ID_TYPES, **self.id_types}.items() if code}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Query:
    """One search_request of a message: what it asks, and what a record found by it tells."""

    reference_id: str
    criteria: dict[str, Any]
    document: RegistryDocument | None = None
    id_type: str | None = None


def search_queries(probe: RegistryProbe, options: DciOptions) -> list[Query]:
    """The searches a probe asks a registry: by each document it can look up, then by name and birth date."""
    queries: list[Query] = []
    id_types = options.identifier_types
    page = {"page_size": options.max_results, "page_number": 1}
    for document in probe.documents:
        id_type = id_types.get(document.type)
        if id_type is None:
            continue
        criteria: dict[str, Any] = {
            "version": VERSION,
            "query_type": "idtype-value",
            "response_entity": "Member",
            "query": {"type": id_type, "value": document.number},
            "pagination": page,
        }
        queries.append(Query(str(uuid.uuid4()), criteria, document, id_type))
    if options.demographic and probe.given and probe.family:
        predicates = [
            {
                "seq_num": 1,
                "expression1": {
                    "attribute_name": GIVEN_NAME,
                    "operator": "eq",
                    "attribute_value": " ".join(probe.given),
                },
                "condition": "and",
                "expression2": {"attribute_name": SURNAME, "operator": "eq", "attribute_value": " ".join(probe.family)},
            },
            {
                "seq_num": 2,
                "condition": "and",
                "expression1": {
                    "attribute_name": BIRTH_DATE,
                    "operator": "eq",
                    "attribute_value": probe.date_of_birth.isoformat(),
                },
            },
        ]
        criteria = {
            "version": VERSION,
            "query_type": "predicate",
            "response_entity": "Member",
            "query": predicates,
            "pagination": page,
        }
        queries.append(Query(str(uuid.uuid4()), criteria))
    return queries


def search_message(queries: list[Query], options: DciOptions) -> dict[str, Any]:
    """The DCI envelope of a sync search."""
    stamp = now()
    header: dict[str, Any] = {
        "version": VERSION,
        "message_id": str(uuid.uuid4()),
        "message_ts": stamp,
        "action": "search",
        "sender_id": options.sender_id,
        "total_count": len(queries),
        "is_msg_encrypted": False,
    }
    if options.receiver_id:
        header["receiver_id"] = options.receiver_id
    return {
        "header": header,
        "message": {
            "transaction_id": str(uuid.uuid4()),
            "search_request": [
                {"reference_id": q.reference_id, "timestamp": stamp, "search_criteria": q.criteria} for q in queries
            ],
        },
    }


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ResponseData(_Loose):
    reg_records: list[dict[str, Any]] = Field(default_factory=list)


class _SearchResponse(_Loose):
    reference_id: str
    status: Literal["rcvd", "pdng", "succ", "rjct"]
    status_reason_code: str | None = None
    data: _ResponseData | None = None


class _Message(_Loose):
    transaction_id: str
    search_response: list[_SearchResponse]


class _Header(_Loose):
    status: Literal["rcvd", "pdng", "succ", "rjct"]
    status_reason_code: str | None = None


class SearchReply(_Loose):
    """What the adapter reads of an on-search message; the rest of it is the registry's own."""

    header: _Header
    message: _Message


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code >= 500 or exc.response.status_code == 429
    )


def record_ref(record: Mapping[str, Any]) -> str | None:
    """The registry's own reference of a record: its `member_identifier` when that is the registry's member
    id (a string), else `@id`. A list of identifiers is the person's documents (a national id, a passport):
    never taken as a reference, since references are stored and shown in clear."""
    member = record.get("member_identifier")
    if isinstance(member, str | int) and str(member):
        return str(member)
    ident = record.get("@id")
    return ident if isinstance(ident, str) and ident else None


def _identifiers(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    person = record.get("demographic_info")
    if isinstance(person, Mapping) and isinstance(person.get("person"), Mapping):
        person = person["person"]
    for holder in (record, person):
        if isinstance(holder, Mapping):
            for name in ("identifier", "member_identifier"):
                values = holder.get(name)
                if isinstance(values, list):
                    found.extend(v for v in values if isinstance(v, Mapping))
    return found


def same_document(record: Mapping[str, Any], query: Query, registry_country: str | None) -> bool:
    """Whether a record found by a document holds that very document: same identifier type and number, and
    the same issuing country (the record's own `issuing_country`, else the registry's `country` option)."""
    assert query.document is not None
    wanted = identifier_key(query.document.number)
    for identifier in _identifiers(record):
        if identifier.get("identifier_type") != query.id_type:
            continue
        if identifier_key(str(identifier.get("identifier_value", ""))) != wanted:
            continue
        country = identifier.get("issuing_country") or registry_country
        if isinstance(country, str) and country.upper() == query.document.country:
            return True
    return False


class DciRegistry:
    """A remote DCI registry; one per CBI_REGISTRIES entry, shared by every request of the process."""

    def __init__(self, name: str, options: DciOptions) -> None:
        self.name = name
        self.options = options
        self.timeout_seconds = options.timeout_seconds
        self._url = options.base_url + SEARCH_PATH
        self._headers = {"User-Agent": "cbi-service/dci-registry-adapter"}
        if options.api_key is not None:
            self._headers["Authorization"] = f"Bearer {options.api_key.get_secret_value()}"
        self._breaker = CircuitBreaker(
            failure_threshold=options.failure_threshold,
            recovery_timeout=options.recovery_seconds,
            expected_exception=RegistryUnavailable,
            name=f"registry:{name}",
        )
        self._guarded_search = self._breaker.decorate(self._search)
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> DciRegistry:
        try:
            options = DciOptions.model_validate(dict(config))
        except ValidationError as exc:
            problems = "; ".join(
                f"'{'.'.join(map(str, e['loc']))}' {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors(include_input=False)
            )
            raise RegistryConfigError(f"registry {name!r}: {problems}") from None
        return cls(name, options)

    @property
    def breaker_open(self) -> bool:
        """Whether the breaker refuses calls now (it lets one through again once `recovery_seconds` passed)."""
        return bool(self._breaker.opened)

    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (a client's connections belong to the loop that opened them)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = httpx.AsyncClient(headers=self._headers, timeout=httpx.Timeout(self.timeout_seconds))
            self._clients[loop] = client
        return client

    async def check(self, probe: RegistryProbe) -> list[RegistryMatch]:
        queries = search_queries(probe, self.options)
        if not queries:
            return []
        try:
            reply = await self._guarded_search(search_message(queries, self.options))
        except RegistryUnavailable:
            raise
        except Exception as exc:  # the breaker's own refusal (CircuitBreakerError) and anything unforeseen
            raise RegistryUnavailable(f"registry {self.name!r} is not being asked ({type(exc).__name__})") from None
        return self._matches(queries, reply)

    async def _search(self, body: dict[str, Any]) -> SearchReply:
        """One search within the deadline, retried while it may still succeed; any failure is
        RegistryUnavailable (what the breaker counts)."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(self.options.retries + 1),
                    wait=wait_random_exponential(multiplier=0.05, max=1.0),
                    retry=retry_if_exception(_transient),
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        response = await self._client().post(self._url, json=body)
                        response.raise_for_status()
            reply = SearchReply.model_validate_json(response.content)
        except TimeoutError:
            raise RegistryUnavailable(
                f"registry {self.name!r} did not answer within {self.timeout_seconds:g}s"
            ) from None
        except httpx.HTTPStatusError as exc:
            raise RegistryUnavailable(f"registry {self.name!r} answered HTTP {exc.response.status_code}") from None
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"registry {self.name!r} could not be reached ({type(exc).__name__})") from None
        except ValidationError:
            raise RegistryUnavailable(
                f"registry {self.name!r} answered something other than a DCI search reply"
            ) from None
        if reply.header.status == "rjct":
            raise RegistryUnavailable(
                f"registry {self.name!r} rejected the search ({reply.header.status_reason_code or 'no reason given'})"
            )
        return reply

    def _matches(self, queries: list[Query], reply: SearchReply) -> list[RegistryMatch]:
        """Best match per record of the registry. A query it did not answer with `succ` leaves the check
        incomplete, which is not a "no match"."""
        answers = {r.reference_id: r for r in reply.message.search_response}
        best: dict[str, RegistryMatch] = {}
        for query in queries:
            answer = answers.get(query.reference_id)
            if answer is None or answer.status != "succ":
                reason = answer.status_reason_code if answer is not None else None
                raise RegistryUnavailable(
                    f"registry {self.name!r} did not complete a search ({reason or 'no answer to it'})"
                )
            for record in answer.data.reg_records if answer.data else ():
                ref = record_ref(record)
                if ref is None:
                    continue
                if query.document is None:
                    match = RegistryMatch(
                        self.name, ref, DEMOGRAPHIC_SCORE, ["given_names", "family_names", "date_of_birth"]
                    )
                elif same_document(record, query, self.options.country):
                    match = RegistryMatch(self.name, ref, 1.0, ["document"], same_document=True)
                else:
                    match = RegistryMatch(self.name, ref, IDENTIFIER_SCORE, ["document"])
                current = best.get(ref)
                if current is None or (match.same_document, match.score) > (current.same_document, current.score):
                    best[ref] = match
        return sorted(best.values(), key=lambda m: (m.same_document, m.score), reverse=True)
