"""`backpath serve | export-openapi | outbound-jwks`: the command line of the service."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="backpath")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the FHIR server with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=_worker_count, default=1, help="worker processes, or 'auto': one per CPU this process may run on (default 1)"
    )
    export = commands.add_parser("export-openapi", help="write the OpenAPI document")
    export.add_argument("--output", default="openapi/openapi.json")
    jwks = commands.add_parser(
        "outbound-jwks", help="print the public JWKS of our backend-client key, for partners to register (BACKPATH_OUTBOUND_CLIENT_KEY_FILE)"
    )
    jwks.add_argument("--key", help="the PEM private key (default: BACKPATH_OUTBOUND_CLIENT_KEY_FILE)")
    args = parser.parse_args(argv)

    if args.command == "serve":
        import uvicorn

        from app.config import Settings

        if Settings().dev_mode and args.host not in _LOOPBACK:
            parser.exit(2, f"backpath: development mode serves without authentication; it listens on 127.0.0.1 only, not {args.host}\n")

        # Our middleware logs requests, without query strings.
        options: dict[str, Any] = {"app": "app.main:create_app", "factory": True, "access_log": False, "log_config": None}
        if args.workers > 1:
            from app import workers

            sys.exit(workers.serve(args.host, args.port, args.workers, options))
        uvicorn.run(host=args.host, port=args.port, **options)
    elif args.command == "export-openapi":
        Path(args.output).write_text(openapi_document() + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    elif args.command == "outbound-jwks":
        from app.config import Settings
        from app.security.backend import load_signing_key

        key_file = Path(args.key) if args.key else Settings().outbound_client_key_file
        if key_file is None:
            parser.exit(2, "backpath: set BACKPATH_OUTBOUND_CLIENT_KEY_FILE or pass --key\n")
        print(json.dumps({"keys": [load_signing_key(key_file.read_bytes()).public_jwk]}, indent=2))


def _worker_count(value: str) -> int:
    # Under 50 saturating clients two workers on two cores met the p99 goal where one did not
    # (README, "Under load"): a production server runs as many as it has cores.
    if value == "auto":
        return len(os.sched_getaffinity(0))
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1, or 'auto'")
    return count


def openapi_document() -> str:
    """The OpenAPI document of the app, deterministic (sorted keys) so a stale copy is detectable."""
    from app.main import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
