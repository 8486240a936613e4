"""The FastAPI application factory: routers, error handlers, middleware, and the in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from adapters.providers.registry import PROVIDER_ADAPTERS
from cbi_service.audit.router import router as audit_router
from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Role
from cbi_service.batches.router import router as batches_router
from cbi_service.beneficiaries.router import router as beneficiaries_router
from cbi_service.console.router import UPLOAD_ROUTES as CONSOLE_UPLOAD_ROUTES
from cbi_service.console.router import router as console_router
from cbi_service.console.web import STATIC as CONSOLE_STATIC
from cbi_service.dedup.registries import registries_for
from cbi_service.dedup.router import router as dedup_router
from cbi_service.entitlements.router import router as entitlements_router
from cbi_service.exports.keys import manifest_keys
from cbi_service.exports.router import router as exports_router
from cbi_service.fx.router import router as fx_router
from cbi_service.health.metrics import GAUGES
from cbi_service.health.router import router as health_router
from cbi_service.issuance.providers import check_provider_names, close_providers
from cbi_service.issuance.router import providers_router
from cbi_service.issuance.router import router as issuance_router
from cbi_service.jobs.worker import Worker, load_handlers
from cbi_service.kit.body_limits import BodyGuardMiddleware, BodyLimits
from cbi_service.kit.crypto import use_master_key
from cbi_service.kit.db import make_engine, make_lookup_engine, make_session_factory
from cbi_service.kit.errors import PROBLEM_RESPONSES, document_problems, install_error_handlers
from cbi_service.kit.heap import settle_after_startup
from cbi_service.kit.logging import configure_logging
from cbi_service.kit.middleware import RequestContextMiddleware
from cbi_service.kit.settings import Settings, get_settings
from cbi_service.kit.telemetry import instrument_app, instrument_engine
from cbi_service.merchants.router import router as merchants_router
from cbi_service.privacy.router import router as privacy_router
from cbi_service.programmes.router import enrolments_router
from cbi_service.programmes.router import router as programmes_router
from cbi_service.reconciliation.router import router as reconciliation_router
from cbi_service.redemptions.router import router as redemptions_router
from cbi_service.redemptions.service import online_redemptions
from cbi_service.reports.router import router as reports_router
from cbi_service.settlements.router import router as settlements_router
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.router import router as vouchers_router
from cbi_service.webhooks import g2p_connect
from cbi_service.webhooks.router import router as webhooks_router
from cbi_service.webhooks.signatures import build_verifiers

log = structlog.get_logger(__name__)

API_DESCRIPTION = (
    "Payments for cash-based interventions: beneficiary registration with deduplication, maker-checker "
    "payment batches, issuance through provider adapters, signed provider webhooks and a double-entry, "
    "tamper-evident ledger. Errors are RFC 9457 problem+json."
)
#: Paths that answer without the database (no 503 when it is down).
PATHS_WITHOUT_DATABASE = frozenset({"/healthz", "/metrics", "/v1/vouchers/keys", "/v1/ledger/export/manifest/keys"})

UPLOAD_ROUTES = ("/v1/beneficiaries/imports", "/v1/reconciliations", *CONSOLE_UPLOAD_ROUTES)
SIGNED_ROUTES = frozenset({"/v1/webhooks/{provider}", *g2p_connect.ROUTES})
#: The console's pages authenticate by their signed session cookie, checked before a form is read.
CONSOLE_ROUTES = frozenset(route.path for route in console_router.routes if isinstance(route, APIRoute))
SYNC_ROUTE = "/v1/voucher-redemptions/sync"


DOCS_STATIC = "/docs/static"
#: ReDoc's footer shows its maker's logo, an image on their CDN: the page's policy keeps the browser from
#: fetching any image but the service's own, so /redoc loads nothing from elsewhere.
REDOC_POLICY = "img-src 'self' data:"


async def redoc_page(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="cbi-service - ReDoc",
        redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = REDOC_POLICY
    return page


def body_limits(settings: Settings) -> BodyLimits:
    """JSON bodies are small, but for a merchant's offline sync; uploads larger; webhooks, signed rather than
    keyed, small again; console forms as JSON bodies, their uploads as uploads."""
    by_route = dict.fromkeys(UPLOAD_ROUTES, settings.max_upload_body_bytes)
    by_route[SYNC_ROUTE] = settings.max_sync_body_bytes
    by_route.update(dict.fromkeys(SIGNED_ROUTES, settings.max_webhook_body_bytes))
    return BodyLimits(
        default=settings.max_json_body_bytes, by_route=by_route, signed_routes=SIGNED_ROUTES | CONSOLE_ROUTES
    )


def check_adapters(settings: Settings) -> None:
    """Every CBI_REGISTRIES entry builds, every CBI_PROVIDERS entry names an installed adapter under a name of
    its own (not a built-in provider's) and has webhook secrets its environment accepts, and the configured
    voucher and ledger signing keys read, or start-up stops with a `RegistryConfigError` /
    `ProviderConfigError` saying what is wrong (a `SigningKeyError` naming the variable), instead of the first
    request that needs one failing.
    (Providers are built, their options checked, when the webhook routes start.)"""
    registries_for(settings.registries)
    check_provider_names(settings)
    for name, config in settings.providers.items():
        PROVIDER_ADAPTERS.check(name, config)
    if settings.voucher_signing_key is not None:
        voucher_keys(settings)
    if settings.ledger_signing_key is not None:
        manifest_keys(settings)
    build_verifiers(settings.providers, production=settings.env == "production")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_adapters(settings)
    configure_logging(settings.effective_log_format, settings.log_level)
    load_handlers()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.async_database_url
        if url is None:
            raise RuntimeError("DATABASE_URL is not set")
        engine = make_engine(url, settings)
        instrument_engine(engine)
        GAUGES.attach(engine)
        app.state.engine = engine
        use_master_key(engine, settings)
        app.state.session_factory = make_session_factory(engine)
        lookups = make_lookup_engine(url, settings)
        instrument_engine(lookups)
        app.state.lookup_sessions = make_session_factory(lookups)
        app.state.online_redemptions = online_redemptions(app.state.session_factory, settings)
        stop = asyncio.Event()
        worker_task = None
        if settings.run_worker:
            worker = Worker(app.state.session_factory, app.state, poll_seconds=settings.worker_poll_seconds)
            worker_task = asyncio.create_task(worker.run(stop), name="cbi-worker")
        settle_after_startup()
        log.info("service_started", env=settings.env)
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            await app.state.online_redemptions.aclose()
            await close_providers()
            GAUGES.detach(engine)
            await lookups.dispose()
            await engine.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from the package's copies, served here: no CDN.
    app = FastAPIOffline(
        static_url=DOCS_STATIC,
        redoc_url=None,
        title="cbi-service",
        version=importlib.metadata.version("cbi-service"),
        description=API_DESCRIPTION,
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
        # An upload is one file and a few short fields; a file past 1 MiB spools to disk: memory stays bounded.
        form_limits={"max_files": 4, "max_fields": 16, "max_part_size": 64 << 10},
    )
    app.add_api_route("/redoc", redoc_page, include_in_schema=False)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodyGuardMiddleware, limits=body_limits(settings))
    app.add_middleware(RequestContextMiddleware)
    # Starlette tries the routes in order: the busiest come first (none of their paths overlaps another's).
    for router in (
        health_router,
        redemptions_router,
        webhooks_router,
        g2p_connect.router,
        programmes_router,
        enrolments_router,
        beneficiaries_router,
        dedup_router,
        batches_router,
        entitlements_router,
        issuance_router,
        providers_router,
        exports_router,
        reconciliation_router,
        reports_router,
        fx_router,
        vouchers_router,
        merchants_router,
        settlements_router,
        privacy_router,
    ):
        app.include_router(router)
    app.include_router(audit_router, dependencies=[Depends(require_roles(Role.auditor, Role.admin))])
    app.include_router(console_router)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC), name="console-static")
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate_openapi(), without_database=PATHS_WITHOUT_DATABASE)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    instrument_app(app)
    return app
