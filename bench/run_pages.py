"""First-render time of the three pages in Chromium. A benchmark, not a test.

    .venv/bin/python bench/run_pages.py                 # 20 loads of each page
    .venv/bin/python bench/run_pages.py --loads 50

Starts `backpath serve` (development mode, SQLite in a temp file), loads one patient with 10 visits
over 20 weeks (10 STarT Back responses, scored by the server, and 10 lbp-assessment responses) and
three referrals whose Tasks went through their steps, then opens each page --loads times in Debian's
Chromium (Playwright, phone width for the form, desktop for the others), one browser profile on
disk per page kind, as a real browser has: the first load is a first visit (empty cache), the next
ones find the static files in the HTTP cache and, from the third on, their compiled code in V8's
code cache. Printed per page, from the Navigation Timing entry of each load: the first visit, and
median and p95 of the other loads, in ms, for the server's part (request sent to first byte), first
contentful paint, DOMContentLoaded and load; for
the form also the moment the questionnaire is drawn (`backpath:rendered`, once LHC-Forms rendered
it). Target: first render < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402
from run_core import _code_version, _sqlite_url, _stop_all, backpath_server, log  # noqa: E402

from tests.e2e.browser import CHROMIUM, DESKTOP, PHONE  # noqa: E402
from tests.factories import assessment_response, non_specific_answers, patient, sbst_response  # noqa: E402

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TARGET_MS = 300.0
VISITS = 10
TIMING = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const drawn = performance.getEntriesByName('backpath:rendered')[0];
  return {server: n.responseStart - n.requestStart, fcp: paint ? paint.startTime : null, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, drawn: drawn ? drawn.startTime : null};
}"""


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body, headers=FHIR)
    response.raise_for_status()
    return dict(response.json())


def _put(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.put(path, json=body, headers=FHIR)
    response.raise_for_status()
    return dict(response.json())


def load_patient(http: httpx.Client) -> tuple[str, str]:
    """A patient with VISITS visits, two weeks apart, and three referrals; returns the patient id and
    a form link for a questionnaire Task."""
    created = _post(http, "/Patient", patient(family="Bench", birthDate="1970-01-01", address=[{"country": "NL"}]))
    subject = f"Patient/{created['id']}"
    t0 = date.today() - timedelta(weeks=2 * (VISITS - 1))
    for visit in range(VISITS):
        day = (t0 + timedelta(weeks=2 * visit)).isoformat()
        agree = [(visit + n) % 3 != 0 for n in range(8)]
        _post(http, "/QuestionnaireResponse", {**sbst_response(agree, "moderately", authored=day), "subject": {"reference": subject}})
        _post(http, "/QuestionnaireResponse", assessment_response(subject, day, **non_specific_answers(t0.isoformat(), course="improving")))
    for n, steps in enumerate((["received", "accepted"], ["received", "accepted", "in-progress", "completed"], ["received"])):
        request = _post(http, "/ServiceRequest", {"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "subject": {"reference": subject},
                                                  "code": {"text": f"Physiotherapy referral {n + 1}"}})
        task = _post(http, "/Task", {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": subject},
                                     "focus": {"reference": f"ServiceRequest/{request['id']}"}, "authoredOn": t0.isoformat()})
        for status in steps:
            task = _put(http, f"/Task/{task['id']}", {**{k: v for k, v in task.items() if k != "meta"}, "status": status})
    questionnaire_task = _post(http, "/Task", {
        "resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": subject}, "focus": {"reference": "Questionnaire/start-back"},
        "input": [{"type": {"text": "questionnaire"}, "valueCanonical": "http://backpath.dev/fhir/Questionnaire/start-back"}]})
    link = _post(http, f"/Task/{questionnaire_task['id']}/$form-link", {"resourceType": "Parameters"})
    return str(created["id"]), next(p["valueUrl"] for p in link["parameter"] if p["name"] == "url")


async def measure(url: str, loads: int, viewport: dict[str, int], drawn: bool, picture: Path | None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The first visit's timings, and those of the `loads` visits after it."""
    first: dict[str, float] = {}
    found: dict[str, list[float]] = {"server": [], "fcp": [], "dcl": [], "load": [], "drawn": []}
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="backpath-bench-profile-"), executable_path=CHROMIUM, args=["--no-sandbox"], viewport=viewport  # type: ignore[arg-type]
        )
        for attempt in range(loads + 1):
            page = await context.new_page()
            await page.goto(url)
            if drawn:
                await page.wait_for_function("performance.getEntriesByName('backpath:rendered').length > 0", timeout=30_000)
            else:
                await page.wait_for_load_state("load")
            await page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0", timeout=30_000)
            timing = await page.evaluate(TIMING)
            if picture is not None and attempt == loads:  # the top of the page, at most 2,200 px: small enough for the README
                height = min(2200, int(await page.evaluate("document.documentElement.scrollHeight")))
                await page.screenshot(path=str(picture), full_page=True, clip={"x": 0, "y": 0, "width": viewport["width"], "height": height})
            await page.close()
            for key, value in timing.items():
                if value is None:
                    continue
                if attempt == 0:
                    first[key] = float(value)
                else:
                    found[key].append(float(value))
        await context.close()
    return first, found


def _row(name: str, metric: str, first: float | None, values: list[float]) -> str:
    if not values or first is None:
        return ""
    ordered = sorted(values)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"| {name} | {metric} | {first:.0f} | {median:.0f} | {p95:.0f} | {'✔' if median < TARGET_MS else '✘'} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--screenshots", type=Path, help="also save a screenshot of each page (with the 10-visit patient) here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="backpath-bench-pages-"))
    server = backpath_server(_sqlite_url(folder / "pages.db"), folder / "server.log")
    server.env["BACKPATH_BASE_URL"] = server.url
    try:
        server.start()
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            patient_id, form_url = load_patient(http)
        log(f"patient {patient_id} loaded with {VISITS} visits; {args.loads} loads per page")
        pages = [
            ("form (phone)", form_url, PHONE, True, "bench-form"),
            ("patient view", f"{server.url}/app/patient/{patient_id}", DESKTOP, False, "bench-patient"),
            ("pathway viewer", f"{server.url}/app/pathway/nl-zel", DESKTOP, False, "bench-pathway"),
        ]
        print(f"commit {_code_version()}; Chromium via Playwright; a first visit, then {args.loads} more per page\n")
        print("| page | measure | first visit ms | median ms | p95 ms | median < 300 ms |")
        print("|---|---|---|---|---|---|")
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
        for name, url, viewport, drawn, picture in pages:
            where = args.screenshots / f"{picture}.png" if args.screenshots else None
            first, found = asyncio.run(measure(url, args.loads, viewport, drawn, where))
            labels = {"server": "server (request sent to first byte)", "fcp": "first contentful paint", "dcl": "DOMContentLoaded", "load": "load", "drawn": "questionnaire drawn"}
            for metric, label in labels.items():
                row = _row(name, label, first.get(metric), found[metric])
                if row:
                    print(row, flush=True)
    finally:
        server.stop()
        _stop_all()


if __name__ == "__main__":
    main()
