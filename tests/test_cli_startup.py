"""Processes that cannot work as configured refuse to start, with a clear message and no traceback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import asyncpg
import httpx
import pytest

from adapters.providers.base import ProviderConfigError
from adapters.registries.base import RegistryConfigError
from cbi_service.app import create_app
from tests.cli.support import cli
from tests.conftest import TEST_WEBHOOK_SECRET, _admin, libpq_url, with_database
from tests.support import free_port, running_serve

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN_ADAPTER = '{"elsewhere": {"adapter": "no_such_adapter"}}'
SHORT_SECRET = "whsec_c2VjcmV0"
# Signing keys, so that production refuses for the reason tested.
VOUCHER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
LEDGER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CBI_PROVIDERS", "CBI_REGISTRIES"}}
    return env | {"CBI_DATA_DIR": str(tmp_path / "data"), "CBI_LOG_FORMAT": "json", **extra}


def _refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_a_worker_without_database_url_refuses_when_no_embedded_database_runs(tmp_path):
    result = cli("worker", env=_env(tmp_path))
    _refused(result, "no embedded database is running", "cbi-service serve", "DATABASE_URL")
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists(), "no database was started"


async def test_a_worker_refuses_a_database_that_is_not_migrated(tmp_path, server_url):
    name = f"cbi_empty_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        result = cli("worker", env=_env(tmp_path, DATABASE_URL=libpq_url(with_database(server_url, name))))
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _refused(result, "not at the current migration", "cbi-service migrate")


async def _wait_for_a_job_run_by(worker: subprocess.Popen[str], pgdata: Path) -> None:
    """Until the worker has run a job in the embedded database (its periodic jobs come due every second)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import PostmasterInfo
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None
    conn = await asyncpg.connect(info.get_uri())
    try:
        deadline = time.monotonic() + 90
        while not await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'done' AND locked_by LIKE $1", f"%:{worker.pid}:%"
        ):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker ran no job"
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def test_a_worker_joins_the_embedded_database_serve_runs(tmp_path):
    env = _env(tmp_path)
    with running_serve(env) as (server, port, ready):
        assert ready.status_code == 200
        worker = subprocess.Popen(
            [sys.executable, "-m", "cbi_service", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        await _wait_for_a_job_run_by(worker, tmp_path / "data" / "pgdata")
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "Traceback" not in out + err
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200, "serve's database is up"
    assert server.returncode == 0


def test_an_unknown_registry_adapter_stops_the_app_from_being_built(settings):
    with pytest.raises(RegistryConfigError, match="available: dci, hashed_list"):
        create_app(settings.model_copy(update={"registries": {"elsewhere": {"adapter": "no_such_adapter"}}}))


@pytest.mark.parametrize("config", [{"adapter": "no_such_adapter"}, {"base_url": "http://127.0.0.1:9"}])
def test_an_unknown_provider_adapter_stops_the_app_from_being_built(settings, config):
    with pytest.raises(ProviderConfigError, match="available: g2p_connect, prepaid_card, voucher"):
        create_app(settings.model_copy(update={"providers": {**settings.providers, "elsewhere": config}}))


@pytest.mark.parametrize(
    ("variable", "available"),
    [("CBI_REGISTRIES", "dci, hashed_list"), ("CBI_PROVIDERS", "g2p_connect, prepaid_card, voucher")],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_an_unknown_adapter(tmp_path, database_url, command, variable, available):
    env = _env(tmp_path, DATABASE_URL=database_url, **{variable: UNKNOWN_ADAPTER})
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    _refused(cli(*args, env=env, timeout=60), "no_such_adapter", f"available: {available}")


@pytest.mark.parametrize("command", [["migrate"], ["apikey", "create", "--name", "ops", "--role", "admin"]])
def test_every_command_refuses_an_unknown_registry_adapter_before_it_starts(tmp_path, command):
    result = cli(*command, env=_env(tmp_path, CBI_REGISTRIES='{"partner": {"adapter": "dcii", "base_url": "x"}}'))
    _refused(result, "CBI_REGISTRIES: unknown registry adapter 'dcii'; available: dci, hashed_list")
    assert not (tmp_path / "data" / "pgdata").exists(), "nothing was started"


def test_serve_refuses_a_dci_registry_it_could_not_ask(tmp_path, database_url):
    registries = '{"partner": {"adapter": "dci", "timeout_seconds": -1}}'
    env = _env(tmp_path, DATABASE_URL=database_url, CBI_REGISTRIES=registries)
    result = cli("serve", "--port", str(free_port()), env=env, timeout=60)
    _refused(result, "CBI_REGISTRIES: registry 'partner':", "'base_url' Field required", "'timeout_seconds'")


def _unconfigured(**extra: str) -> dict[str, str]:
    """No DATABASE_URL and no CBI_* variable, as on a fresh machine; this checkout's code from any folder."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("CBI_")}
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env | {"PYTHONPATH": python_path, **extra}


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        (["serve", "--port", "0"], "set DATABASE_URL"),
        (["worker"], "set DATABASE_URL"),
        (["migrate"], "set DATABASE_URL"),
        (["apikey", "create", "--name", "ops", "--role", "admin"], "set DATABASE_URL"),
        (["demo"], "CBI_ENV"),
    ],
    ids=["serve", "worker", "migrate", "apikey", "demo"],
)
def test_production_without_a_database_refuses_at_once_and_leaves_nothing_behind(tmp_path, command, phrase):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cbi_service", *command],
        cwd=tmp_path,
        env=_unconfigured(
            CBI_ENV="production",
            CBI_VOUCHER_SIGNING_KEY=VOUCHER_KEY,
            CBI_MASTER_KEY=VOUCHER_KEY,
            CBI_LEDGER_SIGNING_KEY=LEDGER_KEY,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started

    _refused(result, phrase)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s to refuse"
    assert list(tmp_path.iterdir()) == [], "no data folder, no embedded database"


@pytest.mark.parametrize(
    ("provider", "phrase"),
    [
        ({"adapter": "prepaid_card", "base_url": "https://cards.example"}, "needs a webhook_secret"),
        ({"adapter": "prepaid_card", "base_url": "https://cards.example", "webhook_secret": ""}, "webhook_secret"),
        ({"adapter": "prepaid_card", "base_url": "https://cards.example", "webhook_secret": SHORT_SECRET}, "at least"),
        (
            {"adapter": "prepaid_card", "base_url": "https://cards.example", "webhook_secret": TEST_WEBHOOK_SECRET},
            "published example",
        ),
    ],
    ids=["no_secret", "empty", "short", "published"],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_production_refuses_default_secrets_naming_the_variable(tmp_path, command, provider, phrase):
    env = _unconfigured(
        CBI_ENV="production",
        CBI_VOUCHER_SIGNING_KEY=VOUCHER_KEY,
        CBI_MASTER_KEY=VOUCHER_KEY,
        CBI_LEDGER_SIGNING_KEY=LEDGER_KEY,
        DATABASE_URL="postgresql://cbi@127.0.0.1:9/never-reached",
        CBI_PROVIDERS=json.dumps({"cards": provider}),
    )
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    result = subprocess.run(
        [sys.executable, "-m", "cbi_service", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    _refused(result, "CBI_PROVIDERS", "'cards'", phrase)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if provider.get("webhook_secret"):
        assert provider["webhook_secret"] not in result.stderr, "a secret is never echoed"


@pytest.mark.parametrize(
    "command", [["jobs", "list"], ["import", "{people}", "--api-key", "k"]], ids=["jobs", "import"]
)
def test_the_domains_commands_refuse_production_without_a_database_in_one_line(tmp_path, command):
    people = tmp_path / "people.csv"
    people.write_text("given_names,family_names\n")
    folder = tmp_path / "work"
    folder.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cbi_service", *(arg.format(people=people) for arg in command)],
        cwd=folder,
        env=_unconfigured(
            CBI_ENV="production",
            CBI_VOUCHER_SIGNING_KEY=VOUCHER_KEY,
            CBI_MASTER_KEY=VOUCHER_KEY,
            CBI_LEDGER_SIGNING_KEY=LEDGER_KEY,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    _refused(result, "set DATABASE_URL")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(folder.iterdir()) == []
