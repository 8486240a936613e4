"""Train the match model the service ships with (`cbi_service/dedup/default_model.json`).

A new deployment has no registry to learn from, so it starts from a model Splink learned, without labels,
on two synthetic registries written with different corruption models (benchmarks/datasets: Spanish
households, and hand-typed records with their look-alikes), seeds apart from those the quality benchmark
measures on. Once the registry holds real records, `cbi-service dedup train` learns one from them.

Every registration body goes through the API's own validation and canonicalisation; a body the API would
refuse is sent again without its phone, then without its documents, as a registrar would, or dropped.

    .venv/bin/python benchmarks/dedup_default_model.py --people 10000 --duplicates 3000
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.datasets import Record, spanish, typed
from cbi_service.beneficiaries.schemas import BeneficiaryCreate
from cbi_service.beneficiaries.service import prepare
from cbi_service.dedup.comparisons import COMPARISONS
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.dedup.training import train
from cbi_service.kit.errors import UnprocessableEntity

DESTINATION = Path(__file__).resolve().parents[1] / "cbi_service" / "dedup" / "default_model.json"
SEEDS = {"spanish": 101, "typed": 102}  # the quality benchmark defaults to 2026


def match_records(records: list[Record]) -> Iterator[MatchRecord]:
    for record in records:
        body = dict(record.body)
        for strip in ("phone", "documents", None):
            try:
                yield prepare(BeneficiaryCreate.model_validate(body)).record
                break
            except UnprocessableEntity:
                if strip == "phone":
                    body.pop("phone", None)
                elif strip == "documents":
                    body["documents"] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=10_000, help="registered people per synthetic registry")
    parser.add_argument("--duplicates", type=int, default=3_000, help="corrupted copies per registry")
    parser.add_argument("--output", type=Path, default=DESTINATION)
    parser.add_argument("--version", default="default-1")
    args = parser.parse_args()

    started = time.perf_counter()
    records: list[MatchRecord] = []
    for name, module in (("spanish", spanish), ("typed", typed)):
        records += match_records(module.dataset(args.people, args.duplicates, args.people // 5, SEEDS[name]))
    generated = time.perf_counter()
    model = train(((str(i), record) for i, record in enumerate(records)), version=args.version)
    trained = time.perf_counter()
    model.trained["data"] = "synthetic: benchmarks/datasets spanish + typed, seeds " + ", ".join(
        f"{k}={v}" for k, v in SEEDS.items()
    )
    args.output.write_text(json.dumps(model.to_json(), indent=1, sort_keys=True) + "\n", "utf-8")
    print(f"{len(records)} records generated in {generated - started:.1f}s, trained in {trained - generated:.1f}s")
    print(f"prior (two records picked at random are one person): {model.prior:.3g}")
    for index, comparison in enumerate(COMPARISONS):
        weights = ", ".join(
            f"{label} {model.weights[index][level]:+.2f}" for level, label in enumerate(comparison.levels) if level
        )
        print(f"{comparison.name}: {weights}")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
