"""B3 quality: precision, recall and F1 of deduplication on labelled data sets, through the HTTP API.

For each data set (`--dataset`, any of febrl1, febrl2, febrl4, spanish, typed; see benchmarks/datasets/) the
script creates a scratch database on the server of `DATABASE_URL`, migrates it, starts `cbi-service serve`
on it as its own process and registers every record ONE AT A TIME with `POST /v1/beneficiaries`, in a
shuffled order (`--seed`), from `--concurrency` parallel clients. Two records of the same person are never in
flight together, so "was this person already registered?" has one answer. The answer decides the outcome:

- 201 `unique`: created; 201 `possible_duplicate`: created `pending_adjudication` with an open adjudication;
  409: an automatic duplicate, nothing created, the existing record in `existing_id`;
- 422: the registration desk drops a refused phone or document and tries once more, as a registrar would;
  a record still refused (no name, no valid date of birth) is unregistrable, counted and left out.

Counted, from the labels and the ids the API returned (labels never reach the API):

- true duplicates: records whose person already had a record stored when they were sent;
- automatic duplicates (409) and their precision: right when `existing_id` is a record of the same person;
- flagged = automatic + possible duplicates, right when one of the matches is the same person: precision,
  recall over true duplicates, F1; possible duplicates split into true and false;
- misses by kind: the labelled corruptions (generated sets) or the field-level differences with the stored
  record (FEBRL, which does not label its corruptions); wrong flags by the role of the record.

`--show-errors N` prints the first N errors as kinds and field levels only (never a name, a document or a
date), with the API's `score`, `matched_on` and, where the API gives them, `match_weight` and `explanation`.
`--json` prints a machine-readable summary on stdout (the readable report goes to stderr).

Acceptance (issue 15): on every set F1 >= 0.99 with precision of automatic duplicates = 1.000.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/dedup_quality.py --dataset febrl1,febrl2,febrl4,spanish,typed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    ROOT,
    free_port,
    libpq,
    machine,
    new_api_key,
    scratch_database,
    start_service,
    stop_processes,
    wait_http,
)
from benchmarks.datasets import Record, differences, febrl, spanish, summary, typed
from cbi_service.auth.roles import Role

DATASETS = ("febrl1", "febrl2", "febrl4", "spanish", "typed")
DOCUMENT_FIELD = re.compile(r"^documents\[(\d+)\]")


def load(name: str, args: argparse.Namespace) -> list[Record]:
    if name in febrl.NAMES:
        return febrl.load(name)
    generate = {"spanish": spanish.dataset, "typed": typed.dataset}[name]
    return generate(args.people, args.duplicates, args.confusers, args.seed)


@dataclass
class Outcome:
    """What the API answered for one record, and who was stored for its person when it was sent."""

    status: int
    dedup: str | None = None
    beneficiary_id: str | None = None
    existing_id: str | None = None
    matches: list[dict[str, Any]] = field(default_factory=list)
    earlier: list[int] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Registration:
    """Registers records through the API and keeps which record each returned id is."""

    def __init__(self, records: list[Record], http: httpx.AsyncClient) -> None:
        self.records = records
        self.http = http
        self.outcomes: dict[int, Outcome] = {}
        self.order: list[int] = []
        self.stored: dict[str, list[int]] = defaultdict(list)
        self.record_of: dict[str, int] = {}
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def post(self, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
        """One registration; a phone or document the API refuses is dropped and the rest sent once more."""
        response = await self.http.post("/v1/beneficiaries", json=body)
        if response.status_code != 422:
            return response, []
        fields = [e.get("field", "") for e in response.json().get("errors", [])]
        refused_documents = {int(m.group(1)) for f in fields if (m := DOCUMENT_FIELD.match(f))}
        if not fields or any(f != "phone" and not DOCUMENT_FIELD.match(f) for f in fields):
            return response, []
        dropped = ["phone"] * ("phone" in fields) + ["document"] * len(refused_documents)
        retry = {k: v for k, v in body.items() if not (k == "phone" and "phone" in fields)}
        retry["documents"] = [d for i, d in enumerate(body["documents"]) if i not in refused_documents]
        return await self.http.post("/v1/beneficiaries", json=retry), dropped

    async def register(self, index: int) -> None:
        record = self.records[index]
        async with self.locks[record.entity]:
            outcome = Outcome(status=0, earlier=list(self.stored[record.entity]))
            started = time.perf_counter()
            response, outcome.dropped = await self.post(record.body)
            outcome.seconds = time.perf_counter() - started
            outcome.status = response.status_code
            if response.status_code == 201:
                body = response.json()
                outcome.beneficiary_id = body["id"]
                outcome.dedup = body["dedup"]["status"]
                outcome.matches = body["dedup"]["matches"]
                self.record_of[body["id"]] = index
                self.stored[record.entity].append(index)
            elif response.status_code == 409:
                body = response.json()
                outcome.dedup = "duplicate"
                outcome.existing_id = body.get("existing_id")
                outcome.matches = body.get("dedup", {}).get("matches", [])
            elif response.status_code != 422:
                title = (
                    response.json().get("title") if response.headers.get("content-type", "").endswith("json") else ""
                )
                raise RuntimeError(f"POST /v1/beneficiaries answered {response.status_code} {title}")
            self.outcomes[index] = outcome
            self.order.append(index)

    async def run(self, order: list[int], concurrency: int) -> None:
        pending: Iterator[int] = iter(order)
        started = time.monotonic()

        async def client() -> None:
            for index in pending:
                await self.register(index)
                if len(self.outcomes) % 2000 == 0:
                    rate = len(self.outcomes) / (time.monotonic() - started)
                    print(f"  {len(self.outcomes)}/{len(order)} records, {rate:.0f}/s", file=sys.stderr)

        await asyncio.gather(*(client() for _ in range(concurrency)))


@dataclass
class Tally:
    records: int = 0
    registered: int = 0
    unregistrable: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    true_duplicates: int = 0
    automatic: int = 0
    automatic_correct: int = 0
    possible_true: int = 0
    possible_false: int = 0
    unique: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    false_automatic: Counter[str] = field(default_factory=Counter)
    false_possible: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        flagged = self.automatic + self.possible_true + self.possible_false
        correct = self.automatic_correct + self.possible_true
        precision = correct / flagged if flagged else 1.0
        recall = correct / self.true_duplicates if self.true_duplicates else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "flagged": flagged,
            "flagged_correct": correct,
            "precision_automatic": self.automatic_correct / self.automatic if self.automatic else 1.0,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }


def pair_kinds(records: list[Record], index: int, earlier: list[int]) -> tuple[tuple[str, ...], dict[str, str]]:
    """How a true duplicate differs from its person's stored record: the generator's labels (those of the
    duplicate of the pair) or, unlabelled, the fields that differ; and the field levels against that record."""
    record = records[index]
    nearest = min(earlier, key=lambda i: len(summary(differences(record.body, records[i].body)).split(", ")))
    levels = differences(record.body, records[nearest].body)
    labels = record.kinds or records[nearest].kinds
    if labels:
        return labels, levels
    return tuple(f"{name}: {level}" for name, level in levels.items() if level not in {"exact", "none"}), levels


def api_view(match: dict[str, Any] | None) -> str:
    """What the API said about a match, without values: score, matched fields, weights and levels."""
    if not match:
        return "no match"
    parts = [f"score {match.get('score')}", f"matched_on {match.get('matched_on')}"]
    if "match_weight" in match:
        parts.append(f"match_weight {match['match_weight']}")
    if explanation := match.get("explanation"):
        parts.append(
            "explanation " + ", ".join(f"{e.get('field')}={e.get('level')}({e.get('weight')})" for e in explanation)
        )
    return "; ".join(parts)


def evaluate(records: list[Record], run: Registration, show_errors: int) -> Tally:
    tally = Tally(records=len(records))

    def same(beneficiary_id: str | None, entity: str) -> bool:
        index = run.record_of.get(beneficiary_id or "")
        return index is not None and records[index].entity == entity

    for index in run.order:
        record, outcome = records[index], run.outcomes[index]
        tally.dropped.update(outcome.dropped)
        if outcome.status == 422:
            tally.unregistrable += 1
            continue
        tally.registered += 1
        true_duplicate = bool(outcome.earlier)
        kinds: tuple[str, ...] = ()
        levels: dict[str, str] = {}
        if true_duplicate:
            tally.true_duplicates += 1
            kinds, levels = pair_kinds(records, index, outcome.earlier)
            tally.kinds.update(kinds)
        if outcome.dedup == "duplicate":
            tally.automatic += 1
            correct = same(outcome.existing_id, record.entity)
            tally.automatic_correct += correct
        elif outcome.dedup == "possible_duplicate":
            correct = any(same(m.get("beneficiary_id"), record.entity) for m in outcome.matches)
            tally.possible_true += correct
            tally.possible_false += not correct
        else:
            tally.unique += 1
            correct = False
        wrong_flag = outcome.dedup != "unique" and not correct
        if true_duplicate and not correct:
            tally.missed.update(kinds)
        if wrong_flag:
            counter = tally.false_automatic if outcome.dedup == "duplicate" else tally.false_possible
            counter[record.role] += 1
        if (wrong_flag or (true_duplicate and not correct)) and len(tally.errors) < show_errors:
            tally.errors.append(describe(records, run, index, kinds, levels))
    return tally


def describe(
    records: list[Record], run: Registration, index: int, kinds: tuple[str, ...], levels: dict[str, str]
) -> str:
    """One error in kinds and levels: what the record was, what the API decided, against whom."""
    record, outcome = records[index], run.outcomes[index]
    top = outcome.matches[0] if outcome.matches else None
    matched_id = outcome.existing_id if outcome.dedup == "duplicate" else (top or {}).get("beneficiary_id")
    lines = [f"{'missed' if outcome.earlier else 'wrongly flagged'} ({outcome.dedup}); record role {record.role}"]
    if outcome.earlier:
        if record.kinds or any(records[i].kinds for i in outcome.earlier):
            lines.append(f"  labels: {', '.join(kinds)}")
        lines.append(f"  against the same person's record: {summary(levels)}")
    matched = run.record_of.get(matched_id or "")
    if matched is not None and records[matched].entity != record.entity:
        other = records[matched]
        lines.append(f"  against the matched record of another person (role {other.role}): "
                     f"{summary(differences(record.body, other.body))}")  # fmt: skip
    lines.append(f"  api: {api_view(top)}")
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def open_adjudications(http: httpx.AsyncClient) -> int:
    count, cursor = 0, None
    while True:
        params: dict[str, Any] = {"status": "open", "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/adjudications", params=params)).raise_for_status().json()
        count += len(page["items"])
        if not (cursor := page.get("next_cursor")):
            return count


async def measure(name: str, args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    records = load(name, args)
    order = list(range(len(records)))
    random.Random(args.seed).shuffle(order)
    database = f"cbi_quality_{name}_{uuid.uuid4().hex[:8]}"
    async with scratch_database(admin_url, database) as db_url:
        _, key = await new_api_key(db_url, "dedup quality registrar", Role.registrar)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": db_url, "CBI_LOG_LEVEL": "WARNING"}
        service = start_service(port, env)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(f"{base}/healthz")
            headers = {"Authorization": f"Bearer {key}"}
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:
                run = Registration(records, http)
                started = time.perf_counter()
                await run.run(order, args.concurrency)
                elapsed = time.perf_counter() - started
                adjudications = await open_adjudications(http)
        finally:
            stop_processes([service], 30)
    tally = evaluate(records, run, args.show_errors)
    figures = tally.figures()
    latencies = [o.seconds * 1000 for o in run.outcomes.values()]
    result = {
        "dataset": name,
        "records": tally.records,
        "registered": tally.registered,
        "unregistrable": tally.unregistrable,
        "dropped_at_desk": dict(tally.dropped),
        "true_duplicates": tally.true_duplicates,
        "unique": tally.unique,
        "automatic": tally.automatic,
        "automatic_correct": tally.automatic_correct,
        "possible_true": tally.possible_true,
        "possible_false": tally.possible_false,
        "open_adjudications": adjudications,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
        "missed_by_kind": dict(tally.missed.most_common()),
        "true_duplicates_by_kind": dict(tally.kinds.most_common()),
        "false_automatic_by_role": dict(tally.false_automatic),
        "false_possible_by_role": dict(tally.false_possible),
        "seconds": round(elapsed, 1),
        "registrations_per_second": round(len(records) / elapsed, 1),
        "latency_ms": {q: round(percentile(latencies, p), 1) for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "passes": figures["f1"] >= 0.99 and figures["precision_automatic"] == 1.0,
    }
    print_result(result, tally, args.out)
    return result


def print_result(r: dict[str, Any], tally: Tally, out: TextIO) -> None:
    def report(line: str) -> None:
        print(line, file=out)

    flagged = r["flagged"]
    share = (r["possible_true"] + r["possible_false"]) / flagged if flagged else 0.0
    report(f"\n== {r['dataset']}: {r['records']} records, {r['registered']} registered one at a time in "
           f"{r['seconds']}s ({r['registrations_per_second']}/s; p50 {r['latency_ms']['p50']} ms, "
           f"p95 {r['latency_ms']['p95']} ms)")  # fmt: skip
    report(f"unregistrable (422, left out): {r['unregistrable']}; dropped at the desk and sent again: "
           f"{r['dropped_at_desk'] or 'none'}")  # fmt: skip
    report(
        f"true duplicates: {r['true_duplicates']}; answered unique {r['unique']}, automatic duplicate (409) "
        f"{r['automatic']}, possible duplicate {r['possible_true'] + r['possible_false']} "
        f"(true {r['possible_true']}, false {r['possible_false']}; open adjudications {r['open_adjudications']})"
    )
    report(f"precision of automatic duplicates: {r['precision_automatic']:.4f} "
           f"({r['automatic_correct']}/{r['automatic']})  target 1.000")  # fmt: skip
    report(f"flagged: {flagged}, correct {r['flagged_correct']}: precision {r['precision']:.4f}, "
           f"recall {r['recall']:.4f}, F1 {r['f1']:.4f}  target F1 >= 0.99; "
           f"{share:.1%} of flagged went to adjudication")  # fmt: skip
    if tally.missed:
        report("missed, by kind (missed/true duplicates of that kind):")
        for kind, count in tally.missed.most_common(12):
            report(f"  {kind}: {count}/{tally.kinds[kind]}")
    for title, counter in (("wrong automatic", tally.false_automatic), ("wrong possible", tally.false_possible)):
        if counter:
            report(f"{title}, by role of the record: {dict(counter.most_common())}")
    report(f"acceptance (F1 >= 0.99, automatic precision 1.000): {'PASS' if r['passes'] else 'FAIL'}")
    for error in tally.errors:
        report(error)


def code_version() -> str:
    """The commit measured, marked when the work tree has changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" with uncommitted changes" if dirty else "")


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    admin_url = libpq(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    return [await measure(name, args, admin_url) for name in args.dataset]


def datasets(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(DATASETS)):
        raise argparse.ArgumentTypeError(f"unknown data set {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", type=datasets, default=list(DATASETS), help="comma-separated: " + ",".join(DATASETS)
    )
    parser.add_argument("--people", type=int, default=5000, help="registered people of a generated set")
    parser.add_argument("--duplicates", type=int, default=2000, help="corrupted copies in a generated set")
    parser.add_argument("--confusers", type=int, default=1000, help="look-alike new people in a generated set")
    parser.add_argument("--seed", type=int, default=2026, help="of the generators and of the shuffled order")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel clients, one record per request")
    parser.add_argument("--show-errors", type=int, default=0, metavar="N", help="describe the first N errors")
    parser.add_argument("--json", action="store_true", help="a JSON summary on stdout, the report on stderr")
    args = parser.parse_args()
    args.out = sys.stderr if args.json else sys.stdout
    dedup_env = {k: v for k, v in os.environ.items() if k.startswith("CBI_DEDUP_")}
    facts = {"machine": machine(), "code": code_version(), "dedup_settings": dedup_env or "the code's defaults",
             "seed": args.seed, "concurrency": args.concurrency}  # fmt: skip
    for name, value in facts.items():
        print(f"{name}: {value}", file=args.out)
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps({**facts, "datasets": results}, indent=2))


if __name__ == "__main__":
    main()
