"""`/docs` and `/redoc` work offline: the pages and everything they load come from the service itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

#: The spec each page loads from its inline script (`url: '…'`) or its ReDoc element (`spec-url="…"`).
SPEC_REFERENCE = re.compile(r"""(?:\burl:\s*|spec-url=)["']([^"']+)["']""")


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "spec-url"} and value:
                self.found.append(value)


def references(html: str) -> set[str]:
    parser = _References()
    parser.feed(html)
    return {*parser.found, *SPEC_REFERENCE.findall(html)}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_a_docs_page_loads_nothing_from_elsewhere(client, page):
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://", html), re.findall(r"https?://\S+", html)
    assert not re.search(r"""["'(]//""", html), "no protocol-relative URL either"

    assets = references(html)
    assert any(ref.endswith(".js") for ref in assets), assets
    assert "/openapi.json" in assets
    for ref in assets:
        assert ref.startswith("/"), ref
        assert not ref.startswith("//"), ref
        asset = await client.get(ref)  # no API key: the docs are public, as the spec is
        assert asset.status_code == 200, (ref, asset.status_code)
        assert len(asset.content) > 100, ref


async def test_the_bundled_scripts_are_the_real_swagger_ui_and_redoc(client):
    swagger = await client.get("/docs/static/swagger-ui-bundle.js")
    assert swagger.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "SwaggerUIBundle" in swagger.text
    redoc = await client.get("/docs/static/redoc.standalone.js")
    assert "Redoc" in redoc.text
    assert len(redoc.content) > 500_000
