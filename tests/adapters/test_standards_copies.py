"""The specifications the tests validate against are the published ones: where the project's shared copy is
beside the checkout, the repository's copies equal it file for file."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "standards"
SHARED = next((p / "shared" / "standards" for p in HERE.parents if (p / "shared" / "standards").is_dir()), None)
COPIES = sorted(p.relative_to(HERE) for p in HERE.rglob("*") if p.is_file() and p.name != "README.md")


def test_the_copies_are_all_here():
    assert Path("g2p-connect/disburse_core_api_v1.0.0.yaml") in COPIES
    assert {Path("dci/registry_core_api_v1.0.0.yaml"), Path("dci/social_api_v1.0.0.yaml")} <= set(COPIES)


@pytest.mark.skipif(SHARED is None, reason="the project's shared folder is not beside this checkout")
@pytest.mark.parametrize("name", COPIES, ids=str)
def test_each_copy_equals_the_published_file(name):
    assert SHARED is not None
    assert (HERE / name).read_bytes() == (SHARED / name).read_bytes()
