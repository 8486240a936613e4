"""`cbi-service demo` (the README's first command) runs both cycles to the end against a real database."""

from __future__ import annotations

import re

from cbi_service.demo import run_demo


async def test_the_demo_pays_cards_and_settles_a_paper_voucher_shop(settings):
    lines: list[str] = []
    await run_demo(settings, 6, lines.append)
    said = "\n".join(lines)
    assert "status=completed" in said
    assert re.search(r"offline sync of 4 scans: \{'accepted': 3, 'conflict': 1\}; sent again: \{'replayed': 4\}", said)
    assert re.search(r"settlement [0-9a-f-]{36}: 5 redemptions, 450000\.00 COP", said)
    assert "the shop is owed 0.00 COP" in said
