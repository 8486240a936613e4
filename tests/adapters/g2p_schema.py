"""The published G2P Connect Disburse OpenAPI document, as validators of the bodies the service sends and
accepts.

The document is the unchanged copy in `tests/standards/` (see its README). One defect of the published
v1.0.0 schema is corrected in memory, and only while it is there: `DisburseRequest.required` lists
`disburemsents`, a misspelling of the `disbursements` property it defines, so that no disburse message could
ever be valid.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

STANDARDS = Path(__file__).resolve().parents[1] / "standards"
SPEC_NAME = Path("g2p-connect/disburse_core_api_v1.0.0.yaml")


def spec_path() -> Path:
    return STANDARDS / SPEC_NAME


@functools.cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(spec_path().read_text())
    required = document["components"]["schemas"]["DisburseRequest"]["required"]
    assert "disburemsents" in required, "the published typo is fixed: drop the correction"
    required[required.index("disburemsents")] = "disbursements"
    return document


def _validator(schema: dict[str, Any]) -> jsonschema_rs.Draft4Validator:
    # OpenAPI 3.0 schemas are JSON Schema draft 4 with extensions; the `$ref`s point into `components`.
    return jsonschema_rs.Draft4Validator({"components": spec()["components"], **schema})


@functools.cache
def request_validator(path: str) -> jsonschema_rs.Draft4Validator:
    """The JSON request body of `POST {path}`."""
    return _validator(spec()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])


@functools.cache
def response_validator(path: str) -> jsonschema_rs.Draft4Validator:
    """The JSON body of the `default` answer of `POST {path}` (the `Response` acknowledgement, or for the sync
    routes the answer itself)."""
    answer = spec()["paths"][path]["post"]["responses"]["default"]
    if "$ref" in answer:
        answer = spec()["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
    return _validator(answer["content"]["application/json"]["schema"])


def errors(validator: jsonschema_rs.Draft4Validator, body: Any) -> list[str]:
    """Every violation, as `path: message`; empty when `body` conforms."""
    return [
        f"{'/'.join(map(str, error.instance_path))}: {error.message[:300]}" for error in validator.iter_errors(body)
    ]
