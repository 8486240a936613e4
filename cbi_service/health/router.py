"""Liveness, readiness (database reachable, migrations at head) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool

from cbi_service.health.service import readiness
from cbi_service.kit.routing import StorableTextRoute

router = APIRouter(tags=["health"], route_class=StorableTextRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(request: Request) -> JSONResponse:
    checks = await readiness(request.app.state.engine)
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    # Rendered off the event loop: the database gauges wait (briefly) for the loop to read them.
    return Response(await run_in_threadpool(generate_latest, REGISTRY), media_type=CONTENT_TYPE_LATEST)
