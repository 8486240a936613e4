"""`python -m adapters.simulator --port P --webhook-url URL --webhook-secret S [faults...]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adapters.simulator.server import make_options, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provider-sim", description="A payment provider that issues cards and vouchers over HTTP."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--webhook-secret", required=True, help="whsec_<base64>")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer <key>' on the provider API")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of API calls answered 5xx")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every API call")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share of API calls that act, then hang")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a timed-out call hangs")
    parser.add_argument("--duplicate-rate", type=float, default=0.0, help="share of webhooks delivered twice")
    parser.add_argument("--reorder", action="store_true", help="deliver webhooks out of order")
    parser.add_argument("--reorder-window-ms", type=int, default=500, help="max random hold per webhook")
    parser.add_argument(
        "--decline-rate", type=float, default=0.0, help="share of instructions ending entitlement.failed"
    )
    parser.add_argument("--delivery-concurrency", type=int, default=64, help="parallel webhook deliveries")
    parser.add_argument("--seed", type=int, help="seed the fault dice for a reproducible run")
    parser.add_argument("--log-level", default="warning")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    host, port, log_level = args.pop("host"), args.pop("port"), args.pop("log_level")
    try:
        options = make_options(**args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(options, host=host, port=port, log_level=log_level)
    except OSError as exc:
        parser.exit(1, f"provider-sim: cannot listen on {host}:{port}: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
