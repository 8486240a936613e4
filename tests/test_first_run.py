"""A new user's first run: `serve` in an empty folder with nothing configured, keys from the CLI, and then
people paid through the API alone, on the providers `serve` sets up for itself."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbi_service.first_run import PROVIDERS_FILE, SimulatorsGone, joined_providers, simulated_providers
from cbi_service.kit.settings import Settings, hidden_secrets
from tests.conftest import TEST_PROVIDERS
from tests.support import running_serve

ROOT = Path(__file__).resolve().parents[1]
#: Where serve leaves the providers it set up, for workers, in a folder with nothing configured.
SERVE_PROVIDERS = Path(".cbi") / PROVIDERS_FILE

#: Distinct people, three per provider paid below (a provider added to PAID takes the next three).
PEOPLE = [
    ("María José", "Pérez Rojas", "1988-03-14", "V-14887321"),
    ("Luis Alberto", "Chacón Parra", "1975-11-02", "V-10022871"),
    ("Yelitza", "Quintero Salazar", "1993-06-25", "V-21456870"),
    ("Wilmer", "Briceño Torres", "1969-01-30", "V-8123674"),
    ("Andreína", "Zambrano Díaz", "2001-09-09", "V-27998123"),
    ("Johan", "Mendoza Vargas", "1984-12-18", "V-16330457"),
    ("Carmen Teresa", "Gutiérrez Morales", "1958-04-21", "V-5098812"),
    ("Francisco Javier", "Castillo Ramírez", "1979-08-05", "V-12674390"),
    ("Gabriela", "Hernández López", "1997-02-11", "V-25331046"),
    ("Rosa Elena", "Marcano Suárez", "1972-07-19", "V-9455108"),
    ("Daniel Eduardo", "Peña Rivas", "1990-10-27", "V-19876032"),
    ("Yusmary", "Carrillo Ortega", "1986-05-03", "V-17220964"),
]
#: provider → the delivery mechanism of the programme paid through it.
PAID = {
    "sim-card": "prepaid_card",
    "sim-voucher": "voucher",
    "sim-g2p": "prepaid_card",
    "paper_voucher": "paper_voucher",
}


@dataclass
class FirstRun:
    folder: Path
    http: httpx.Client
    keys: dict[str, dict[str, str]]


def _env() -> dict[str, str]:
    """Nothing configured: no DATABASE_URL and no CBI_* variable; this checkout's code wherever it runs."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("CBI_")}
    return env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _create_keys(folder: Path, env: dict[str, str]) -> dict[str, dict[str, str]]:
    """The README's keys, made with `cbi-service apikey create` side by side (each joins serve's database)."""
    roles = {
        "ops": ["admin", "registrar", "programme_officer"],
        "approver-1": ["approver"],
        "approver-2": ["approver"],
        "finance": ["finance"],
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "cbi_service", "apikey", "create", "--name", name]
            + [arg for role in held for arg in ("--role", role)],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, held in roles.items()
    }
    keys = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        keys[name] = {"Authorization": f"Bearer {out.strip().splitlines()[-1]}"}
    return keys


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    folder = tmp_path_factory.mktemp("first-run")
    env = _env()
    with running_serve(env, cwd=folder) as (server, port, ready):
        assert ready.status_code == 200, ready.text
        simulators = _provider_urls(folder)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield FirstRun(folder, http, _create_keys(folder, env))
    assert server.returncode == 0
    assert not (folder / SERVE_PROVIDERS).exists(), "serve left its providers file behind"
    for url in simulators:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=2)


def _provider_urls(folder: Path) -> list[str]:
    return [
        provider["base_url"] for provider in json.loads((folder / SERVE_PROVIDERS).read_text())["providers"].values()
    ]


def test_serve_lists_the_providers_it_set_up_and_none_of_their_secrets(first_run: FirstRun) -> None:
    response = first_run.http.get("/v1/providers", headers=first_run.keys["approver-1"])

    assert response.status_code == 200, response.text
    assert response.json()["items"] == [
        {"name": "paper_voucher", "adapter": "paper_voucher", "delivery_mechanisms": ["paper_voucher"]},
        {"name": "sim-card", "adapter": "prepaid_card", "delivery_mechanisms": ["prepaid_card"]},
        {"name": "sim-g2p", "adapter": "g2p_connect", "delivery_mechanisms": ["prepaid_card"]},
        {"name": "sim-voucher", "adapter": "voucher", "delivery_mechanisms": ["voucher"]},
    ]
    assert "whsec_" not in response.text
    assert "signing_key" not in response.text
    assert "127.0.0.1" not in response.text


def test_a_joining_worker_finds_the_providers_in_a_file_only_its_owner_reads(first_run: FirstRun) -> None:
    path = first_run.folder / SERVE_PROVIDERS

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    providers = json.loads(path.read_text())["providers"]
    assert set(providers) == {"sim-card", "sim-voucher", "sim-g2p"}
    assert len({provider["base_url"] for provider in providers.values()}) == 3, "a simulator per provider"


@pytest.mark.parametrize(("provider", "mechanism"), PAID.items())
def test_three_people_are_paid_through_the_api_alone(first_run: FirstRun, provider: str, mechanism: str) -> None:
    http, keys = first_run.http, first_run.keys
    ops, finance = keys["ops"], keys["finance"]

    programme = _ok(
        http.post(
            "/v1/programmes",
            headers=ops,
            json={
                "name": f"Multipurpose cash on {provider}",
                "country": "CO",
                "currency": "COP",
                "sector": "multipurpose_cash",
                "delivery_mechanism": mechanism,
                "provider": provider,
                "approvals_required": 2,
                "voucher_validity_days": 90,
            },
        ),
        201,
    )
    pid = programme["id"]
    funding = {"amount": {"amount": "1000000.00", "currency": "COP"}, "source": "Donor", "reference": "GRANT-1"}
    _ok(http.post(f"/v1/programmes/{pid}/funds", headers=finance | _once(), json=funding), 201)
    index = list(PAID).index(provider)
    people = [_ok(http.post("/v1/beneficiaries", headers=ops, json=_person(*p)), 201) for p in PEOPLE[index * 3 :][:3]]
    assert [person["status"] for person in people] == ["active"] * 3
    _ok(http.post(f"/v1/programmes/{pid}/enrolments", headers=ops, json={"beneficiary_ids": [p["id"] for p in people]}))
    batch = {"programme_id": pid, "name": "First payment", "cycle": "2026-12", "amount": _cop("150000.00")}
    bid = _ok(http.post("/v1/payment-batches", headers=ops, json=batch), 201)["id"]
    _ok(http.post(f"/v1/payment-batches/{bid}/submit", headers=ops))
    for approver in ("approver-1", "approver-2"):
        _ok(http.post(f"/v1/payment-batches/{bid}/approvals", headers=keys[approver], json={"decision": "approve"}))
    _ok(http.post(f"/v1/payment-batches/{bid}/release", headers=finance | _once()))

    deadline = time.monotonic() + 60
    while True:
        entitlements = _ok(http.get("/v1/entitlements", headers=ops, params={"batch_id": bid}))["items"]
        statuses = sorted(e["status"] for e in entitlements)
        if statuses == ["issued"] * 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert statuses == ["issued"] * 3
    assert {e["beneficiary_id"] for e in entitlements} == {p["id"] for p in people}
    if mechanism == "paper_voucher":  # the agency's own vouchers, each with its code and signed token
        assert all(e["voucher_code"] and e["voucher_token"] for e in entitlements)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url.path, response.text)
    return response.json()


def _once() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _cop(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "COP"}


def _person(given: str, family: str, born: str, passport: str) -> dict[str, Any]:
    return {
        "given_names": given,
        "family_names": family,
        "date_of_birth": born,
        "sex": "female" if given[-1] == "a" else "male",
        "nationality": "VE",
        "documents": [{"type": "passport", "number": passport, "issuing_country": "VE"}],
        "location": {"country": "CO", "admin1": "Norte de Santander", "admin2": "Cúcuta"},
        "household_size": 3,
        "consent": {"given": True, "date": "2026-12-01", "purpose": "cash assistance"},
    }


def _settings(folder: Path, **values: Any) -> Settings:
    """Settings as read with CBI_PROVIDERS unset, unless `values` name providers."""
    return Settings(data_dir=folder, **{"env": "development", **values})


def _write(folder: Path, serve_pid: int) -> None:
    (folder / PROVIDERS_FILE).write_text(json.dumps({"serve_pid": serve_pid, "providers": TEST_PROVIDERS}))


def test_a_worker_takes_the_providers_of_the_serve_running_in_its_data_folder(tmp_path: Path) -> None:
    assert joined_providers(_settings(tmp_path)).providers == {}, "no serve wrote any: none"
    _write(tmp_path, os.getpid())

    assert joined_providers(_settings(tmp_path)).providers == hidden_secrets(TEST_PROVIDERS), "secrets held hidden"
    mine = {"cards": TEST_PROVIDERS["cards"]}
    assert joined_providers(_settings(tmp_path, providers=mine)).providers == hidden_secrets(mine), "its own win"
    assert joined_providers(_settings(tmp_path, providers={})).providers == {}, "CBI_PROVIDERS={} too"


def test_a_worker_refuses_the_providers_of_a_serve_that_is_gone(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    _write(tmp_path, int(gone.stdout))

    with pytest.raises(SimulatorsGone, match="no longer running"):
        joined_providers(_settings(tmp_path))


@pytest.mark.parametrize(
    "values",
    [
        {"providers": {"cards": TEST_PROVIDERS["cards"]}},
        {"providers": {}},
        {
            "env": "production",
            "voucher_signing_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "ledger_signing_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        },
    ],
    ids=["configured", "configured_none", "production"],
)
def test_nothing_is_simulated_when_providers_are_configured_or_in_production(tmp_path: Path, values) -> None:
    settings = _settings(tmp_path, **values)

    with simulated_providers(settings, host="127.0.0.1", port=9) as served:
        assert served.providers == settings.providers
    assert list(tmp_path.iterdir()) == []
