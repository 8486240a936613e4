"""The `dci` registry adapter against `cbi-service registry-sim` in its own process, a registry that never
answers and one that answers errors; what goes over the wire checked against the published DCI schemas."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.registries.base import RegistryConfigError, RegistryUnavailable
from adapters.registries.dci import DciRegistry, record_ref
from adapters.registries.registry import build_registries
from cbi_service.dedup.normalize import DocumentKey, build_record
from cbi_service.dedup.registries import check_registries, probe_of
from cbi_service.kit.logging import configure_logging
from tests.adapters.registries.dci_support import (
    CORE,
    PARTNER_CASELOAD,
    SEARCH_REQUEST,
    SEARCH_RESPONSE,
    SOCIAL,
    RecordingProxy,
    registry_sim,
    schema_errors,
    silent_registry,
    standards_dir,
    write_caseload,
)


@pytest.fixture(scope="module")
def caseload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_caseload(tmp_path_factory.mktemp("partner") / "caseload.csv", PARTNER_CASELOAD)


@pytest.fixture(scope="module")
def partner(caseload: Path) -> Any:
    """The partner's registry: `registry-sim` holding its caseload."""
    with registry_sim(caseload) as base_url:
        yield base_url


def dci(base_url: str, **options: Any) -> DciRegistry:
    registry = DciRegistry.from_config("partner", {"adapter": "dci", "base_url": base_url, **options})
    return registry


def person(given: str, family: str, born: date, *documents: DocumentKey) -> Any:
    return probe_of(build_record(given_names=given, family_names=family, date_of_birth=born, documents=documents))


async def test_finds_the_partners_record_by_a_document_written_differently(partner: str) -> None:
    # The partner typed "0079 845-321"; the service holds the canonical 79845321.
    probe = person("Pedro", "Otro Nombre", date(2001, 1, 1), DocumentKey("national_id", "CO", "79845321"))
    (match,) = await dci(partner).check(probe)
    assert (match.registry, match.registry_ref, match.same_document, match.matched_on) == (
        "partner", "NRC-1001", True, ["document"],
    )  # fmt: skip


async def test_a_passport_in_another_case_with_dashes_is_the_same_document(partner: str) -> None:
    probe = person("Ana", "Pérez", date(1985, 3, 7), DocumentKey("passport", "VE", "AB1234567"))
    matches = await dci(partner).check(probe)
    assert [(m.registry_ref, m.same_document, m.score) for m in matches] == [("NRC-1002", True, 1.0)]


async def test_finds_a_person_by_name_and_birth_date_whatever_the_accents(partner: str) -> None:
    (match,) = await dci(partner).check(person("YESICA", "ortiz pena", date(1988, 4, 12)))
    assert (match.registry_ref, match.same_document) == ("NRC-1003", False)
    assert match.matched_on == ["given_names", "family_names", "date_of_birth"]
    assert 0.6 <= match.score < 1.0


async def test_a_document_the_registry_holds_under_another_country_is_not_the_same_document(partner: str) -> None:
    probe = person("Pedro", "Otro", date(2001, 1, 1), DocumentKey("national_id", "VE", "79845321"))
    (match,) = await dci(partner).check(probe)
    assert (match.registry_ref, match.same_document, match.score) == ("NRC-1001", False, 0.95)


async def test_nobody_known_is_no_match(partner: str) -> None:
    probe = person("Luis", "Mora", date(1975, 1, 30), DocumentKey("national_id", "CO", "1"))
    assert await dci(partner).check(probe) == []


async def test_the_messages_sent_and_answered_follow_the_published_schemas(partner: str) -> None:
    probe = person("José Luis", "García López", date(1990, 5, 1), DocumentKey("national_id", "CO", "79845321"))
    with RecordingProxy(partner) as proxy:
        await dci(proxy.url, sender_id="cbi.example.org", receiver_id="registry.example.org").check(probe)
        rejected = httpx.post(
            f"{proxy.url}/registry/sync/search",
            json=_with_query(proxy.exchanges[0][0], {"query_type": "expression", "query": {"type": "x", "value": {}}}),
        )
    assert rejected.status_code == 200
    (request, response), (_, rejection) = proxy.exchanges
    for spec in (SOCIAL, CORE):
        assert schema_errors(spec, SEARCH_REQUEST, request) == [], spec
    assert schema_errors(SOCIAL, SEARCH_RESPONSE, response) == []
    assert schema_errors(SOCIAL, SEARCH_RESPONSE, rejection) == []
    header = request["header"]
    assert (header["action"], header["sender_id"], header["receiver_id"]) == (
        "search", "cbi.example.org", "registry.example.org",
    )  # fmt: skip
    searches = request["message"]["search_request"]
    assert header["total_count"] == len(searches) == 2
    assert [s["search_criteria"]["query_type"] for s in searches] == ["idtype-value", "predicate"]
    assert searches[0]["search_criteria"]["query"] == {"type": "NID", "value": "79845321"}
    assert response["message"]["transaction_id"] == request["message"]["transaction_id"]
    assert [r["status"] for r in response["message"]["search_response"]] == ["succ", "succ"]
    assert rejection["message"]["search_response"][0]["status_reason_code"] == "rjct.search_criteria.invalid"


def test_the_schemas_refuse_what_they_should() -> None:
    """The validators are not vacuous: the published examples' own slips (counts as strings) are caught."""
    example = json.loads((standards_dir() / "examples" / "processflow1-1req.json").read_text())
    assert any("total_count" in e for e in schema_errors(SOCIAL, SEARCH_REQUEST, example))
    assert schema_errors(SOCIAL, SEARCH_REQUEST, {"header": {}, "message": {}})


def _with_query(message: dict[str, Any], criteria: dict[str, Any]) -> dict[str, Any]:
    search = message["message"]["search_request"][0]
    changed = {**search, "search_criteria": {**search["search_criteria"], **criteria}}
    return {**message, "message": {**message["message"], "search_request": [changed]}}


async def test_a_registry_that_never_answers_costs_its_timeout_then_nothing() -> None:
    probe = person("Luis", "Mora", date(1975, 1, 30), DocumentKey("national_id", "CO", "1"))
    with silent_registry() as url:
        registry = dci(url, timeout_seconds=0.5, retries=3, failure_threshold=2, recovery_seconds=60)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(RegistryUnavailable, match=r"did not answer within 0\.5s"):
                await registry.check(probe)
            assert 0.45 <= time.monotonic() - started < 0.9
        assert registry.breaker_open
        started = time.monotonic()
        checks = await check_registries(
            [registry], build_record(given_names="A", family_names="B", date_of_birth=date(1990, 1, 1))
        )
        assert time.monotonic() - started < 0.05
    assert checks.statuses()[1] == {"registry": "partner", "status": "unavailable"}
    assert checks.matches == []


async def test_the_breaker_lets_a_call_through_once_its_wait_is_over(caseload: Path) -> None:
    from tests.support import free_port

    port = free_port()
    wait = 8
    registry = dci(f"http://127.0.0.1:{port}", timeout_seconds=1, retries=0, failure_threshold=1, recovery_seconds=wait)
    probe = person("José", "García", date(1990, 5, 1))
    with pytest.raises(RegistryUnavailable, match="could not be reached"):
        await registry.check(probe)  # nothing listens yet
    opened = time.monotonic()
    assert registry.breaker_open
    with registry_sim(caseload, port=port) as url:
        assert time.monotonic() - opened < wait - 1, "the simulator took too long to start for this test"
        with pytest.raises(RegistryUnavailable, match="not being asked"):
            await registry.check(probe)  # still open: not even tried
        assert httpx.get(f"{url}/admin/stats").json()["messages"] == 0
        await asyncio.sleep(wait + 0.1 - (time.monotonic() - opened))
        (match,) = await registry.check(probe)
    assert match.registry_ref == "NRC-1001"
    assert not registry.breaker_open


async def test_server_errors_are_retried_within_the_deadline_then_unavailable(partner: str) -> None:
    probe = person("José", "García", date(1990, 5, 1))
    httpx.put(f"{partner}/admin/outage", json={"failures": 2})
    (match,) = await dci(partner, retries=2).check(probe)
    assert match.registry_ref == "NRC-1001"
    httpx.put(f"{partner}/admin/outage", json={"failures": 3})
    with pytest.raises(RegistryUnavailable, match="answered HTTP 503"):
        await dci(partner, retries=2).check(probe)
    assert httpx.get(f"{partner}/admin/stats").json()["refused"] >= 5


async def test_a_refused_key_is_not_retried_and_unavailable(caseload: Path) -> None:
    with registry_sim(caseload, api_key="the-registrys-key") as url:
        # A wrong key is refused (401): not retried, and unavailable rather than "no match".
        registry = dci(url, api_key="wrong", retries=3)
        with pytest.raises(RegistryUnavailable, match="answered HTTP 401"):
            await registry.check(person("José", "García", date(1990, 5, 1)))
        stats = httpx.get(f"{url}/admin/stats").json()
        assert (stats["unauthorized"], stats["messages"]) == (1, 0)
        (match,) = await dci(url, api_key="the-registrys-key").check(person("José", "García", date(1990, 5, 1)))
    assert match.registry_ref == "NRC-1001"


def test_bad_options_are_refused_naming_the_option_not_its_value() -> None:
    with pytest.raises(RegistryConfigError) as refused:
        build_registries(
            {"partner": {"adapter": "dci", "base_url": "ftp://x", "timeout_seconds": 0, "api_kee": "s3cr3t-value"}}
        )
    message = str(refused.value)
    assert "registry 'partner'" in message
    assert "'base_url' must be an absolute http(s) URL" in message
    assert "'timeout_seconds'" in message
    assert "'api_kee'" in message
    assert "s3cr3t-value" not in message
    assert "ftp://x" not in message
    with pytest.raises(RegistryConfigError, match="'base_url' Field required"):
        build_registries({"partner": {"adapter": "dci"}})


@pytest.fixture
def structured_logging() -> None:
    """Logging set up as the service does it (before caplog attaches its handler for the test's call)."""
    configure_logging("console")


@pytest.mark.usefixtures("structured_logging")
async def test_no_personal_data_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    record = build_record(
        given_names="Wilmer", family_names="Zambrano", date_of_birth=date(1979, 11, 23),
        documents=(DocumentKey("national_id", "CO", "99887766"),),
    )  # fmt: skip
    with silent_registry() as url, caplog.at_level(logging.DEBUG):
        registry = dci(url, timeout_seconds=0.2, retries=0)
        with pytest.raises(RegistryUnavailable) as failed:
            await registry.check(probe_of(record))
        checks = await check_registries([registry], record)
    assert checks.unavailable == {"partner"}
    written = " ".join(str(r.msg) + " " + r.getMessage() for r in caplog.records) + str(failed.value)
    written += repr(failed.value.__cause__) + repr(failed.value.__context__)
    for secret in ("wilmer", "zambrano", "99887766", "1979-11-23"):
        assert secret not in written.lower()
    assert any("registry_unavailable" in str(r.msg) for r in caplog.records)


def test_a_records_reference_is_its_member_id_never_one_of_its_documents():
    """References are stored and shown in clear: a list of identifiers holds the person's documents."""
    documents = [{"identifier_type": "NATIONAL_ID", "identifier_value": "1234567890"}]
    assert record_ref({"member_identifier": "MEM-001", "@id": "r-1"}) == "MEM-001"
    assert record_ref({"member_identifier": documents, "@id": "r-1"}) == "r-1"
    assert record_ref({"member_identifier": documents}) is None
