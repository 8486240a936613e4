"""The CLI on a fresh machine: embedded PostgreSQL, migrations applied for the user, keys printed once."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import httpx
import pytest

from tests.cli.support import ANSI, cli, cli_env
from tests.support import running_serve


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return env | {"CBI_DATA_DIR": str(tmp_path / "data"), "CBI_LOG_FORMAT": "json"}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cbi_service", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_serve_on_embedded_database_is_ready_and_keys_work(tmp_path):
    env = _env(tmp_path)
    with running_serve(env) as (server, port, ready):
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": True, "migrations": True}

        created = _cli("apikey", "create", "--name", "ops", "--role", "admin", "--role", "finance", env=env)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("cbi_")
        assert " " not in key
        listing = httpx.get(
            f"http://127.0.0.1:{port}/v1/programmes", headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
        assert listing.status_code == 200

        listed = _cli("apikey", "list", env=env)
        assert "ops" in listed.stdout
        assert key not in listed.stdout
        key_id = listed.stdout.split()[0]
        assert _cli("apikey", "revoke", key_id, env=env).returncode == 0
        revoked = httpx.get(
            f"http://127.0.0.1:{port}/v1/programmes", headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
        assert revoked.status_code == 401
    assert server.returncode == 0
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists(), "embedded database left running"


def test_apikey_create_refuses_unknown_roles(tmp_path):
    result = _cli("apikey", "create", "--name", "x", "--role", "superuser", env=_env(tmp_path))
    assert result.returncode != 0


def test_version_is_the_installed_distributions():
    result = cli("--version", env=cli_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cbi-service {importlib.metadata.version('cbi-service')}\n"


@pytest.mark.parametrize(
    ("args", "status"),
    [(["--help"], 0), (["jobs", "retry", "--help"], 0), (["no-such-command"], 2), (["import", "absent.csv"], 2)],
)
def test_no_colour_codes_when_the_output_is_not_a_terminal(args, status):
    result = cli(*args, env=cli_env())
    assert result.returncode == status, result.stderr
    assert ANSI not in result.stdout + result.stderr
    assert "Usage: cbi-service" in result.stdout + result.stderr
