from __future__ import annotations

import pytest

from tests.reconciliation.support import make_books


@pytest.fixture
async def books(client, api_key_factory, session_factory):
    return await make_books(client, api_key_factory, session_factory)
