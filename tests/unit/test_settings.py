"""Configurations that must not serve, whatever the mode; how many workers serve."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import pytest

from app.cli import _worker_count
from app.config import Settings


@pytest.mark.parametrize("database_url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
def test_an_in_memory_sqlite_database_with_the_audit_trail_on_is_refused(database_url: str) -> None:
    """The audit trail's writer process would open a database of its own, empty and never read."""
    settings = replace(Settings(), dev_mode=True, database_url=database_url, audit=True)
    [problem] = settings.problems()
    assert "in-memory" in problem
    assert replace(settings, audit=False).problems() == []
    assert replace(settings, database_url="sqlite+aiosqlite:///./backpath.db").problems() == []


def test_workers_are_counted_or_one_per_usable_cpu() -> None:
    assert _worker_count("3") == 3
    assert _worker_count("auto") == len(os.sched_getaffinity(0))  # what the Dockerfile runs
    with pytest.raises(argparse.ArgumentTypeError):
        _worker_count("0")
