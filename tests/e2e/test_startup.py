"""Development mode is explicit: production (the Dockerfile's environment) refuses to start without
a token issuer, and development mode serves only on loopback, with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _serve(tmp_path: Path, host: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BACKPATH_")}
    environment.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'start.db'}", **env)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--host", host, "--port", "0"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_an_issuer_refuses_to_start(tmp_path: Path) -> None:
    result = _serve(tmp_path, "0.0.0.0")
    assert result.returncode != 0
    assert "no token issuer" in result.stdout + result.stderr


def test_an_issuer_without_keys_refuses_to_start(tmp_path: Path) -> None:
    result = _serve(tmp_path, "0.0.0.0", BACKPATH_AUTH_ISSUER="https://issuer.example", BACKPATH_BASE_URL="https://fhir.example")
    assert result.returncode != 0
    assert "BACKPATH_AUTH_JWKS_URL" in result.stdout + result.stderr


def test_turning_the_audit_trail_off_is_for_development_only(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    result = _serve(
        tmp_path,
        "0.0.0.0",
        BACKPATH_AUTH_ISSUER="https://issuer.example",
        BACKPATH_AUTH_JWKS_FILE=str(jwks),
        BACKPATH_BASE_URL="https://fhir.example",
        BACKPATH_AUDIT="0",
    )
    assert result.returncode != 0
    assert "BACKPATH_AUDIT=0 is for development mode only" in result.stdout + result.stderr


def test_development_mode_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = _serve(tmp_path, "0.0.0.0", BACKPATH_DEV_MODE="1")
    assert result.returncode == 2
    assert "127.0.0.1 only" in result.stderr


def test_development_mode_on_loopback_warns_at_start_up(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "BACKPATH_DEV_MODE": "1", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "development mode" in line or len(lines) > 200:
                break
        assert any('"level": "WARNING"' in line and "development mode: no authentication" in line for line in lines)
    finally:
        process.terminate()
        process.wait(timeout=10)
