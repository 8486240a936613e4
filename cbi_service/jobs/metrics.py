"""Prometheus counters of the jobs this process runs, labelled by job kind (a registered handler's name).

Each worker process counts its own work, and serves it: `serve` on `/metrics`, `cbi-service worker` on its
metrics port. The queue as a whole (jobs waiting, running, failed) is read from the database instead.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

OUTCOMES = ("done", "retry", "failed", "handed_back")

RUNS = Counter(
    "cbi_jobs_total",
    "Job runs by this process, by outcome: done, retry (failed, runs again later), failed (out of attempts), "
    "handed_back (the worker stopped it at a safe point)",
    ["kind", "outcome"],
)
DURATION = Histogram(
    "cbi_job_duration_seconds",
    "How long one run of a job's handler took in this process",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
