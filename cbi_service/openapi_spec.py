"""The committed OpenAPI document is generated from the app; a test fails when it is stale."""

from __future__ import annotations

import json

from cbi_service.app import create_app
from cbi_service.kit.settings import Settings


def render_openapi() -> str:
    app = create_app(Settings(database_url=None, run_worker=False))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
