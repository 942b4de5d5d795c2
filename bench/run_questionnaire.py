"""Validating and scoring one STarT Back response. A benchmark, not a test.

    .venv/bin/python bench/run_questionnaire.py
    .venv/bin/python bench/run_questionnaire.py --samples 2000 --seed 7

Times `process_submission` (the domain work the QuestionnaireResponse write hook does: calculated
items from their calculatedExpressions, enablement, validation) on random complete SBST responses,
in this process, after a warm-up. Two kinds of response are timed: "bare" (the client sent only
items 1-9, so all three scores are calculated and inserted) and "scored" (the client's renderer
already sent matching scores, so they are checked). Prints median and p95 against the target
(median <= 3 ms). A further line times the whole HTTP write (`POST /QuestionnaireResponse` on the
in-process ASGI app with a SQLite file), for context.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.questionnaire.submission import process_submission  # noqa: E402
from tests.factories import FHIR_JSON, sbst_response  # noqa: E402

BOTHERSOME = ("not-at-all", "slightly", "moderately", "very-much", "extremely")
TARGET_MS = 3.0


def responses(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [sbst_response([rng.random() < 0.5 for _ in range(8)], rng.choice(BOTHERSOME)) for _ in range(count)]


def timed(questionnaire: dict[str, Any], batch: list[dict[str, Any]]) -> list[float]:
    times = []
    for response in batch:
        start = time.perf_counter()
        submission = process_submission(questionnaire, response)
        times.append((time.perf_counter() - start) * 1000)
        assert not submission.errors, submission.errors
    return times


def report(label: str, times: list[float], target: float | None) -> None:
    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20)[18]
    verdict = "" if target is None else f"   target median <= {target} ms: {'met' if median <= target else 'NOT met'}"
    print(f"{label:<28} median {median:6.2f} ms   p95 {p95:6.2f} ms   (n={len(times)}){verdict}")


async def http_write(samples: int, seed: int) -> list[float]:
    import httpx

    from app.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{folder}/bench.db", log_level="WARNING"))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                times = []
                for response in responses(samples + 20, seed):
                    start = time.perf_counter()
                    created = await client.post("/QuestionnaireResponse", json=response, headers={**FHIR_JSON, "Prefer": "return=minimal"})
                    times.append((time.perf_counter() - start) * 1000)
                    assert created.status_code == 201, created.text
                return times[20:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--http-samples", type=int, default=200)
    args = parser.parse_args()
    questionnaire = json.loads((ROOT / "plandefinitions/Questionnaire-start-back.json").read_text())
    print(f"python {platform.python_version()} on {platform.machine()}, seed {args.seed}")
    bare = responses(args.samples, args.seed)
    timed(questionnaire, bare[:50])  # warm-up: parse caches
    report("validate+score (bare)", timed(questionnaire, bare), TARGET_MS)
    scored = [process_submission(questionnaire, r).response for r in bare]
    report("validate+score (scored)", timed(questionnaire, scored), TARGET_MS)
    if args.http_samples:
        report("POST /QuestionnaireResponse", asyncio.run(http_write(args.http_samples, args.seed)), None)


if __name__ == "__main__":
    main()
