"""The pages in a real browser against a real server process (production mode: bearer tokens, the
audit trail): a patient answers the STarT Back form from the link on the Task, in Dutch; the Task is
completed; the clinician view shows the risk group and the pathway's proposal; a cauda equina
assessment puts the red-flag banner first; the pathway viewer draws a plan from its JSON; spent,
expired and forged links get plain pages. axe-core checks every page; screenshots of each page,
phone and desktop width, go to test-output/screenshots/."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from app.security.backend import load_signing_key
from app.security.form_link import form_link_issuer, issue_form_link
from tests.e2e.browser import DESKTOP, PHONE, chromium, screenshot, serious_violations
from tests.factories import FHIR_JSON, assessment_response, non_specific_answers, patient, unique
from tests.servers import ROOT, Server
from tests.tokens import AUDIENCE, Issuer, KeyPair

SBST = "http://backpath.dev/fhir/CodeSystem/sbst-answer"
CLINICIAN_SCOPES = "user/*.cruds"
TODAY = date.today()
# A high-risk answer set (Keele: distress subscale, items 5-9, of 4 or more): everything agreed, "very much" bothered.
HIGH_RISK = {**{str(n): "agree" for n in range(1, 9)}, "9": "very-much"}

# Playwright's driver process and its pipes live on an event loop of this module's own, closed with
# the module: nothing of the browser stays on the session's loop that the in-process apps share.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("pages-issuer") / "jwks.json")


@pytest.fixture(scope="module")
def form_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pages-key") / "server-key.pem"
    path.write_bytes(KeyPair("EC").pem())
    return path


@pytest.fixture(scope="module")
def server(scratch_database: Callable[[str], str], issuer: Issuer, form_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "BACKPATH_DEV_MODE": "0",
        "BACKPATH_AUTH_ISSUER": issuer.name,
        "BACKPATH_AUTH_JWKS_FILE": str(issuer.jwks_file),
        "BACKPATH_AUTH_AUDIENCE": AUDIENCE,
        "BACKPATH_TOKEN_SIGNING_KEY_FILE": str(form_key),
        "BACKPATH_CDS_PATHWAY": "nl-zel",
    }
    started = Server("pages", scratch_database("pages"), tmp_path_factory.mktemp("pages-log"), env)
    try:
        started.start()
    except RuntimeError as failure:
        pytest.fail(str(failure))
    yield started
    started.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async for launched in chromium():
        yield launched


@pytest.fixture(scope="module")
def api(server: Server, issuer: Issuer) -> Iterator[httpx.Client]:
    """The clinician's FHIR client (a user token)."""
    with httpx.Client(base_url=server.url, timeout=30, headers=issuer.headers(CLINICIAN_SCOPES)) as client:
        yield client


def _post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, json=body, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _patient_with_episode(api: httpx.Client, **assessment: Any) -> str:
    """A Dutch patient of the ZEL region, first seen today (T0) and assessed."""
    created = _post(
        api,
        "/Patient",
        patient(
            family=unique("Vos"),
            name=[{"family": "de Vries", "given": ["Sanne"]}],
            birthDate="1978-04-12",
            communication=[{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "nl-NL"}]}, "preferred": True}],
            address=[{"city": "Maastricht", "country": "NL"}],
        ),
    )
    subject = f"Patient/{created['id']}"
    _post(api, "/QuestionnaireResponse", assessment_response(subject, TODAY.isoformat(), **non_specific_answers(TODAY.isoformat(), **assessment)))
    return str(created["id"])


def _sbst_task(api: httpx.Client, patient_id: str) -> str:
    task = _post(
        api,
        "/Task",
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": "http://backpath.dev/fhir/CodeSystem/lbp-action", "code": "sbst-request"}]},
            "focus": {"reference": "Questionnaire/start-back"},
            "for": {"reference": f"Patient/{patient_id}"},
            "input": [{"type": {"text": "questionnaire"}, "valueCanonical": "http://backpath.dev/fhir/Questionnaire/start-back"}],
        },
    )
    return str(task["id"])


def _form_link(api: httpx.Client, task_id: str) -> str:
    answer = _post(api, f"/Task/{task_id}/$form-link", {"resourceType": "Parameters"})
    return next(p["valueUrl"] for p in answer["parameter"] if p["name"] == "url")


async def _clinician_page(browser: Browser, issuer: Issuer, viewport: dict[str, int]) -> Page:
    context = await browser.new_context(viewport=viewport, extra_http_headers={"Authorization": f"Bearer {issuer.token(CLINICIAN_SCOPES)}"})
    return await context.new_page()


async def _new_page(browser: Browser, viewport: dict[str, int]) -> Page:
    return await (await browser.new_context(viewport=viewport)).new_page()


async def _open_form(browser: Browser, url: str) -> Page:
    page = await _new_page(browser, PHONE)
    await page.goto(url)
    await page.wait_for_function("performance.getEntriesByName('backpath:rendered').length > 0", timeout=30_000)
    return page


async def _answer(page: Page, answers: dict[str, str]) -> None:
    for link_id, code in answers.items():
        await page.locator(f'[id="{link_id}/1|{SBST}|{code}"]').click()


async def _no_serious_violations(page: Page) -> None:
    assert await serious_violations(page) == []


async def test_patient_answers_the_sbst_in_dutch_and_the_clinician_sees_high_risk_and_the_meekijkconsult(
    server: Server, api: httpx.Client, browser: Browser, issuer: Issuer
) -> None:
    patient_id = _patient_with_episode(api)
    task_id = _sbst_task(api, patient_id)
    created = api.get(f"/Task/{task_id}").json()
    assert [i["type"]["text"] for i in created["input"]] == ["questionnaire", "form-link"]  # linked when created
    assert created["status"] == "requested"
    url = _form_link(api, task_id)  # issued again: this link replaces the first
    stored_link = api.get(f"/Task/{task_id}").json()["input"]
    assert stored_link[-1] == {"type": {"text": "form-link"}, "valueUrl": url} and len(stored_link) == 2

    form = await _open_form(browser, url)
    assert await form.locator("html").get_attribute("lang") == "nl"
    await expect(form.locator("#form-title")).to_have_text("Vragenlijst voor uw afspraak")
    await expect(form.locator("#items-language")).to_be_visible()  # no validated Dutch SBST: English items, Dutch page
    await expect(form.get_by_text("My back pain has spread down my leg(s) at some time in the last 2 weeks")).to_be_visible()
    assert "Disagree - 0" not in await form.inner_text("body")  # answer weights (the scoring) are not shown
    await expect(form.get_by_text("Total score")).to_have_count(0)
    await _no_serious_violations(form)
    await screenshot(form, "form-phone")

    # Keyboard: the first answer is given with the keyboard alone (Tab to the question's choices, an
    # arrow key to "Agree"), the rest by tapping; the scores below show the keyboard's answer arrived.
    await form.locator(f'[id="1/1|{SBST}|disagree"] input').focus()
    await form.keyboard.press("ArrowRight")
    await expect(form.locator(f'[id="1/1|{SBST}|agree"]')).to_have_class(re.compile(r"\bant-radio-wrapper-checked\b"))
    await _answer(form, {link_id: code for link_id, code in HIGH_RISK.items() if link_id != "1"})
    await form.get_by_role("button", name="Antwoorden versturen").click()
    await expect(form.get_by_role("heading", name="Dank u wel")).to_be_visible()
    body = await form.inner_text("body")
    assert "hoog" not in body.lower() and "high" not in body.lower() and "risico" not in body.lower()
    await _no_serious_violations(form)
    await screenshot(form, "form-thanks-phone")

    task = api.get(f"/Task/{task_id}").json()
    assert task["status"] == "completed"
    steps = [e["resource"]["status"] for e in api.get(f"/Task/{task_id}/_history").json()["entry"]]
    assert steps[:4] == ["completed", "in-progress", "accepted", "requested"]  # the state machine, newest first
    response_reference = task["output"][0]["valueReference"]["reference"]
    response = api.get(f"/{response_reference}").json()
    assert response["subject"] == {"reference": f"Patient/{patient_id}"}
    scores = {item["linkId"]: item["answer"][0] for item in response["item"]}
    assert scores["total-score"] == {"valueInteger": 9} and scores["distress-subscale"] == {"valueInteger": 5}
    assert scores["risk-level"]["valueCoding"]["code"] == "LA9193-9"

    again = await _new_page(browser, PHONE)
    reopened = await again.goto(url)
    assert reopened is not None and reopened.status == 410
    await expect(again.get_by_role("heading", level=1)).to_have_text("Deze vragenlijst is al ingevuld")
    await screenshot(again, "form-used-phone")
    token = parse_qs(urlsplit(url).query)["token"][0]
    reused = httpx.get(f"{server.url}/Task/{task_id}", headers={"Authorization": f"Bearer {token}"})
    assert reused.status_code == 401 and reused.json()["resourceType"] == "OperationOutcome"

    for name, viewport in (("patient-desktop", DESKTOP), ("patient-phone", PHONE)):
        page = await _clinician_page(browser, issuer, viewport)
        await page.goto(f"{server.url}/app/patient/{patient_id}")
        await expect(page.locator("#risk-group")).to_have_text("high")
        await expect(page.locator('#actions tr[data-action="meekijkconsult"]')).to_have_count(1)
        await expect(page.locator('[data-point="T0"]')).to_have_attribute("data-state", "done")
        await expect(page.locator("#red-flags")).to_have_count(0)
        await expect(page.locator("#sbst-table tbody tr")).to_have_count(1)
        await _no_serious_violations(page)
        await screenshot(page, name)

    await page.select_option("#region", "dk-sjaelland")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#actions")).to_be_visible()
    assert "region=dk-sjaelland" in page.url
    await expect(page.get_by_role("heading", name="Due now: Forløbsprogram for patienter med rygproblemer (Region Sjælland)")).to_be_visible()
    await expect(page.locator('#actions tr[data-action="meekijkconsult"]')).to_have_count(0)


async def test_a_cauda_equina_assessment_puts_the_red_flag_banner_above_everything(api: httpx.Client, browser: Browser, issuer: Issuer, server: Server) -> None:
    patient_id = _patient_with_episode(api, red_flag_cauda_equina=True)
    page = await _clinician_page(browser, issuer, DESKTOP)
    await page.goto(f"{server.url}/app/patient/{patient_id}")
    banner = page.locator("main > *").first
    await expect(banner).to_have_attribute("id", "red-flags")
    await expect(banner).to_have_attribute("role", "alert")
    await expect(banner.locator('[data-red-flag="red-flag-cauda-equina"]')).to_contain_text("cauda equina")
    first_action = page.locator("#actions tbody tr").first
    await expect(first_action).to_have_attribute("data-action", "acute-referral")
    await expect(first_action).to_contain_text("stat")
    await _no_serious_violations(page)
    await screenshot(page, "patient-red-flag-desktop")


def _action_ids(plan: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for action in plan.get("action") or []:
        found.add(action["id"])
        found |= _action_ids(action)
    return found


async def test_the_pathway_viewer_draws_every_action_of_the_plan_and_its_sub_plan(api: httpx.Client, browser: Browser, issuer: Issuer, server: Server) -> None:
    plan = json.loads((ROOT / "plandefinitions" / "PlanDefinition-nl-zel.json").read_text())
    triage = json.loads((ROOT / "plandefinitions" / "PlanDefinition-lbp-triage.json").read_text())
    for name, viewport in (("pathway-desktop", DESKTOP), ("pathway-phone", PHONE)):
        page = await _clinician_page(browser, issuer, viewport)
        await page.goto(f"{server.url}/app/pathway/nl-zel?lang=nl")
        drawn = set(await page.locator("[data-step]").evaluate_all("nodes => nodes.map(n => n.dataset.step)"))
        assert drawn == _action_ids(plan) | _action_ids(triage)
        meekijk = page.locator('[data-step="meekijkconsult-request"]')
        await expect(meekijk).to_contain_text("Fysiotherapeut van een aangesloten praktijk (via ZorgDomein)")  # referral target, in Dutch
        await expect(page.locator('[data-step="nl-zel-meekijkconsult"] .if')).to_contain_text("If sbst-high")
        await _no_serious_violations(page)
        await screenshot(page, name)


async def test_spent_replaced_expired_and_forged_links_get_plain_pages(server: Server, api: httpx.Client, browser: Browser, form_key: Path) -> None:
    patient_id = _patient_with_episode(api)
    task_id = _sbst_task(api, patient_id)
    first = _form_link(api, task_id)
    second = _form_link(api, task_id)
    page = await _new_page(browser, PHONE)

    replaced = await page.goto(first)
    assert replaced is not None and replaced.status == 410
    await expect(page.get_by_role("heading", level=1)).to_have_text("Deze link is verlopen")

    key = load_signing_key(form_key.read_bytes())
    expired, _ = issue_form_link(
        key, issuer=form_link_issuer(server.url), task_id=task_id, patient_id=patient_id, language="nl", lifetime=60, now=time.time() - 3600
    )
    answer = await page.goto(f"{server.url}/app/form/{task_id}?token={expired}")
    assert answer is not None and answer.status == 410
    await expect(page.get_by_role("heading", level=1)).to_have_text("Deze link is verlopen")
    await screenshot(page, "form-expired-phone")

    forged, _ = issue_form_link(
        load_signing_key(KeyPair("EC").pem()), issuer=form_link_issuer(server.url), task_id=task_id, patient_id=patient_id, language="nl", lifetime=600
    )
    for token, heading in ((forged, "Deze link werkt niet"), ("", "This link does not work"), ("not-a-token", "This link does not work")):
        answer = await page.goto(f"{server.url}/app/form/{task_id}?token={token}")
        assert answer is not None and answer.status == 401
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        assert "Traceback" not in await page.content()
    await _no_serious_violations(page)

    # The live link reaches its Task and nothing else: not the patient's other records, not search.
    token = parse_qs(urlsplit(second).query)["token"][0]
    link = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    assert httpx.get(f"{server.url}/Task/{task_id}", headers=link).status_code == 200
    assert httpx.get(f"{server.url}/Questionnaire/start-back", headers=link).status_code == 200
    other_task = _sbst_task(api, patient_id)
    for path in (f"/Task/{other_task}", f"/Patient/{patient_id}", "/Task", f"/QuestionnaireResponse?subject=Patient/{patient_id}", "/PlanDefinition/nl-zel"):
        assert httpx.get(f"{server.url}{path}", headers=link).status_code == 403, path
    changed = api.get(f"/Task/{task_id}").json() | {"status": "completed", "owner": {"reference": "Practitioner/someone"}}
    assert httpx.put(f"{server.url}/Task/{task_id}", json=changed, headers={**link, **FHIR_JSON}).status_code == 403

    clinician_page_without_token = await _new_page(browser, DESKTOP)
    refused = await clinician_page_without_token.goto(f"{server.url}/app/patient/{patient_id}")
    assert refused is not None and refused.status == 401
    await expect(clinician_page_without_token.get_by_role("heading", level=1)).to_have_text("Please sign in")
