"""`cbi-service`: serve the API, run workers, migrate, manage API keys, and the operator tools."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.simulator.cli import provider_sim
from cbi_service.auth.roles import Role
from cbi_service.beneficiaries.cli import import_file
from cbi_service.dedup.cli import dedup_app, registry_app, registry_sim
from cbi_service.exports.cli import ledger_app
from cbi_service.jobs.cli import jobs_app
from cbi_service.keys.cli import keys_app
from cbi_service.kit.settings import DatabaseUrl, Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# Plain tracebacks: what log collectors and bug reports need, and never the locals (personal data) beside them.
app = typer.Typer(
    help="cbi-service: payments for cash-based interventions.", no_args_is_help=True, pretty_exceptions_enable=False
)
apikey_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
app.add_typer(registry_app, name="registry")
app.add_typer(dedup_app, name="dedup")
app.add_typer(ledger_app, name="ledger")
app.add_typer(keys_app, name="keys")


@dataclass(frozen=True)
class Runtime:
    """What the root hands the commands defined in the domains (as typer's `ctx.obj`): how to open the
    database, which they cannot import from here without depending on the composition root."""

    database: Callable[..., contextlib.AbstractContextManager[Settings]]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cbi-service {importlib.metadata.version('cbi-service')}")
        raise typer.Exit


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """The options of every command; the domains' commands find the database in `ctx.obj`."""
    ctx.obj = Runtime(database=_refusing_database)


class StartupRefused(Exception):
    """A command that cannot run as configured; its message says what to do instead."""


@contextlib.contextmanager
def refusing_to_start() -> Iterator[None]:
    """A configuration that cannot work ends the command with one line saying what to set and exit status 2,
    no traceback."""
    from adapters.providers.base import ProviderConfigError
    from adapters.registries.base import RegistryConfigError
    from cbi_service.embedded import EmbeddedNotRunning
    from cbi_service.first_run import SimulatorsGone
    from cbi_service.kit.signing import SigningKeyError

    try:
        yield
    except ProviderConfigError as exc:
        typer.echo(f"cbi-service: CBI_PROVIDERS: {exc}", err=True)
        raise typer.Exit(2) from None
    except RegistryConfigError as exc:
        typer.echo(f"cbi-service: CBI_REGISTRIES: {exc}", err=True)
        raise typer.Exit(2) from None
    except (StartupRefused, EmbeddedNotRunning, SimulatorsGone, SigningKeyError) as exc:
        typer.echo(f"cbi-service: {exc}", err=True)
        raise typer.Exit(2) from None


def load_settings() -> Settings:
    """The configuration, or `StartupRefused` naming each variable that is wrong (never echoing a value)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        raise StartupRefused("; ".join(_setting_problem(error) for error in exc.errors(include_input=False))) from None


def _setting_problem(error: Any) -> str:
    context = error.get("ctx") or {}
    message = str(context["error"]) if error["type"] == "value_error" and "error" in context else error["msg"]
    if not error["loc"]:  # a rule across settings: its message names the variables
        return message
    field = str(error["loc"][0])
    return f"{'DATABASE_URL' if field == 'database_url' else 'CBI_' + field.upper()}: {message}"


@contextlib.contextmanager
def database(settings: Settings | None = None, *, migrate: bool = True, attach: bool = False) -> Iterator[Settings]:
    """`settings` (by default read now) bound to a database: DATABASE_URL if set, else the embedded server in
    CBI_DATA_DIR, which production refuses before anything is written there.

    The embedded database is always migrated to head, so a new user never runs a migration by hand.
    With `attach`, only an embedded server already running (the one `serve` started) is used.
    """
    from cbi_service.embedded import embedded_postgres, running_embedded_postgres
    from cbi_service.migrate import upgrade

    settings = settings if settings is not None else load_settings()
    if settings.database_url:
        yield settings
        return
    if settings.env == "production":
        raise StartupRefused(
            "CBI_ENV=production needs a PostgreSQL server of its own: set DATABASE_URL"
            " (the embedded database is for development)"
        )
    with (running_embedded_postgres if attach else embedded_postgres)(settings.data_dir) as url:
        os.environ["DATABASE_URL"] = url
        settings = settings.model_copy(update={"database_url": DatabaseUrl(url)})
        if migrate:
            upgrade(url)
        yield settings


@contextlib.contextmanager
def _refusing_database(*args: Any, **kwargs: Any) -> Iterator[Settings]:
    """`database()` for the domains' commands: a configuration that cannot work is one line, as for the rest."""
    with refusing_to_start(), database(*args, **kwargs) as settings:
        yield settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API with an in-process worker.

    In development with CBI_PROVIDERS unset it starts the provider simulator beside itself and configures
    `sim-card` and `sim-voucher` on it (see `cbi_service.first_run`).
    """
    import structlog
    import uvicorn

    from cbi_service.app import create_app
    from cbi_service.first_run import SIMULATED_PROVIDERS, simulated_providers, simulates_providers
    from cbi_service.kit.telemetry import start_tracing, stop_tracing

    # uvicorn re-raises SIGTERM after a graceful shutdown; turning it into SystemExit lets the embedded
    # database and the simulators stop cleanly instead of the process dying with them still running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with refusing_to_start():
        configured = load_settings()
        with simulated_providers(configured, host=host, port=port) as settings, database(settings) as settings:
            start_tracing("cbi-service")
            try:
                app = create_app(settings)
                if simulates_providers(configured):
                    structlog.get_logger(__name__).info(
                        "provider_simulator_started",
                        **{name: settings.providers[name]["base_url"] for name in SIMULATED_PROVIDERS},
                    )
                uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=True)
            finally:
                stop_tracing()


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it exists (Linux, macOS), as uvicorn does for the API: the worker spends its time
    in asyncpg round trips, which uvloop makes cheaper; elsewhere on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 4,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port (default: CBI_METRICS_PORT)."),
    ] = None,
) -> None:
    """Run an extra worker process (several may run against one database).

    With no DATABASE_URL it joins the embedded database `serve` runs in CBI_DATA_DIR, and it refuses to
    start on a database whose schema is not at the current migration. With a metrics port (the option, or
    CBI_METRICS_PORT) it serves what it does, and the database gauges, to Prometheus on CBI_METRICS_HOST. In
    development with CBI_PROVIDERS unset it sends to the simulated providers of the `serve` running in
    CBI_DATA_DIR.
    """
    import structlog

    from cbi_service.app import check_adapters
    from cbi_service.first_run import joined_providers
    from cbi_service.health.metrics import GAUGES, metrics_server
    from cbi_service.issuance.providers import close_providers, get_provider
    from cbi_service.jobs.worker import Worker, load_handlers
    from cbi_service.kit.db import make_engine, make_session_factory
    from cbi_service.kit.heap import settle_after_startup
    from cbi_service.kit.logging import configure_logging
    from cbi_service.kit.telemetry import instrument_engine, start_tracing, stop_tracing

    with refusing_to_start(), database(migrate=False, attach=True) as attached:
        settings = joined_providers(attached)
        check_adapters(settings)
        configure_logging(settings.effective_log_format, settings.log_level)
        load_handlers()
        port = metrics_port if metrics_port is not None else settings.metrics_port

        async def work(stop: asyncio.Event) -> None:
            assert settings.async_database_url
            engine = make_engine(settings.async_database_url, settings)
            try:
                await _require_migrated(engine)
            except BaseException:
                await engine.dispose()
                raise
            instrument_engine(engine)
            GAUGES.attach(engine)
            for name in settings.providers:
                get_provider(settings, name)  # built once for this loop, options checked before any job
            state = SimpleNamespace(settings=settings, engine=engine)
            settle_after_startup()
            try:
                await Worker(make_session_factory(engine), state, concurrency=concurrency).run(stop)
            finally:
                await close_providers()
                GAUGES.detach(engine)
                await engine.dispose()

        async def main() -> None:
            # From the start: a stop asked while starting up (metrics already served) is a clean stop too.
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            with contextlib.ExitStack() as serving:
                if port is not None:
                    try:
                        bound = serving.enter_context(metrics_server(settings.metrics_host, port))
                    except OSError as exc:
                        raise StartupRefused(
                            f"cannot serve metrics on {settings.metrics_host}:{port} ({exc.strerror or exc}):"
                            " choose another --metrics-port or CBI_METRICS_PORT"
                        ) from None
                    structlog.get_logger(__name__).info("metrics_serving", host=settings.metrics_host, port=bound)
                await work(stop)

        start_tracing("cbi-service-worker")
        try:
            _run_fast(main())
        finally:
            stop_tracing()


async def _require_migrated(engine: AsyncEngine) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from cbi_service.health.repository import applied_revisions
    from cbi_service.migrate import head_revisions

    try:
        applied = await applied_revisions(engine)
    except (OSError, SQLAlchemyError) as exc:
        raise StartupRefused(f"cannot reach the database ({type(exc).__name__})") from None
    if applied != head_revisions():
        raise StartupRefused(
            "the database schema is not at the current migration: run `cbi-service migrate` first"
            " (`cbi-service serve` migrates the embedded database itself)"
        )


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations."""
    from cbi_service.migrate import upgrade

    with refusing_to_start(), database(migrate=False) as settings:
        assert settings.database_url
        upgrade(settings.database_url.get_secret_value(), revision)
        typer.echo(f"migrated to {revision}")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    role: Annotated[list[Role], typer.Option(help="A role; repeat for several.")],
    merchant: Annotated[
        str | None, typer.Option(help="The merchant a `--role merchant` key acts for (its id); that role alone.")
    ] = None,
) -> None:
    """Create a key; it is printed once, alone on the last line, and stored only as a hash."""
    import uuid

    from cbi_service.auth.service import check_key_roles, create_api_key
    from cbi_service.merchants.service import exists

    try:
        merchant_id = uuid.UUID(merchant) if merchant is not None else None
        check_key_roles(role, merchant_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def run(settings: Settings) -> str:
        async with _session(settings) as session:
            if merchant_id is not None and not await exists(session, merchant_id):
                raise typer.BadParameter(f"no merchant {merchant_id}", param_hint="--merchant")
            key, raw = await create_api_key(session, name, role, merchant_id=merchant_id)
            typer.echo(f"created key {key.id} ({', '.join(key.roles)}); store it now, it is not shown again:")
            return raw

    with refusing_to_start(), database() as settings:
        typer.echo(asyncio.run(run(settings)))


@apikey_app.command("list")
def apikey_list() -> None:
    """List keys (never the keys themselves)."""
    from cbi_service.auth.repository import ApiKeyRepository

    async def run(settings: Settings) -> None:
        async with _session(settings) as session:
            for key in await ApiKeyRepository(session).list_all():
                state = "revoked" if key.revoked_at else "active"
                typer.echo(f"{key.id}  {key.prefix}…  {state:8}  {','.join(key.roles):40}  {key.name}")

    with refusing_to_start(), database() as settings:
        asyncio.run(run(settings))


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key at once."""
    import uuid

    from cbi_service.auth.service import revoke_api_key

    async def run(settings: Settings) -> bool:
        async with _session(settings) as session:
            return await revoke_api_key(session, uuid.UUID(key_id))

    with refusing_to_start(), database() as settings:
        if not asyncio.run(run(settings)):
            typer.echo("no active key with that id", err=True)
            raise typer.Exit(1)
        typer.echo("revoked")


@app.command()
def demo(people: Annotated[int, typer.Option(min=8, max=500, help="Synthetic people to register.")] = 36) -> None:
    """Run a card cycle against the provider simulator and a paper-voucher cycle to a paid merchant settlement,
    end to end (migrates the database first)."""
    from cbi_service.demo import run_demo
    from cbi_service.migrate import upgrade

    with refusing_to_start():
        settings = load_settings()
        if settings.env == "production":
            raise StartupRefused("the demo pays synthetic people through the simulator: unset CBI_ENV=production")
        with database(settings) as settings:
            assert settings.database_url
            upgrade(settings.database_url.get_secret_value())
            asyncio.run(run_demo(settings, people, typer.echo))


# Commands defined beside the code they drive.
app.command("import")(import_file)
app.add_typer(jobs_app, name="jobs")
app.command("provider-sim")(provider_sim)
app.command("registry-sim")(registry_sim)


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the spec.")] = Path("openapi/openapi.json"),
) -> None:
    """Write the OpenAPI spec generated from the app (committed under openapi/)."""
    from cbi_service.openapi_spec import render_openapi

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_openapi())
    typer.echo(f"wrote {output}")


@contextlib.asynccontextmanager
async def _session(settings: Settings):  # type: ignore[no-untyped-def]
    """A one-off unit of work for CLI commands."""
    from cbi_service.kit.db import make_engine, make_session_factory

    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    try:
        async with make_session_factory(engine).begin() as session:
            yield session
    finally:
        await engine.dispose()
