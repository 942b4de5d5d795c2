"""Applying the real pathway content (plandefinitions/) in-process, and reading a result back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from app.content.loader import read_content
from app.pathway.apply import Artifacts, apply_plan_definition
from app.pathway.facts import pathway_input
from app.pathway.render import request_bundle

ROOT = Path(__file__).resolve().parents[1]
LBP_ACTION = "http://backpath.dev/fhir/CodeSystem/lbp-action"
CONTENT = read_content([ROOT / "plandefinitions"])
ARTIFACTS = Artifacts(tuple(r for r in CONTENT if r["resourceType"] in ("PlanDefinition", "ActivityDefinition", "Questionnaire")))
REGIONS = ("nl-zel", "dk-hovedstaden", "dk-midtjylland", "dk-sjaelland", "dk-syddanmark")


def region_plan(region: str) -> dict[str, Any]:
    found = ARTIFACTS.find(f"http://backpath.dev/fhir/PlanDefinition/{region}")
    assert found is not None, region
    return dict(found)


def lbp_codes(concept: Any) -> set[str]:
    concepts = concept if isinstance(concept, list) else [concept]
    return {c["code"] for cc in concepts if isinstance(cc, dict) for c in cc.get("coding") or [] if c.get("system") == LBP_ACTION}


@dataclass(frozen=True)
class Applied:
    """A `$r5.apply` Bundle, read the way a clinician would: which actions, how urgent, when."""

    bundle: dict[str, Any]

    def resources(self, resource_type: str | None = None) -> list[dict[str, Any]]:
        found = [e["resource"] for e in self.bundle["entry"]]
        return [r for r in found if resource_type is None or r["resourceType"] == resource_type]

    def actions(self) -> Iterator[dict[str, Any]]:
        def walk(actions: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for action in actions:
                yield action
                yield from walk(action.get("action") or [])

        for group in self.resources("RequestGroup"):
            yield from walk(group.get("action") or [])

    def codes(self) -> set[str]:
        """Every lbp-action code of the actions and of the requests they generated."""
        codes = {code for action in self.actions() for code in lbp_codes(action.get("code") or [])}
        for request in self.requests():
            codes |= lbp_codes(request.get("code") or request.get("category") or [])
        return codes

    def requests(self, code: str | None = None) -> list[dict[str, Any]]:
        found = [r for r in self.resources() if r["resourceType"] not in ("RequestGroup", "Goal", "OperationOutcome")]
        return [r for r in found if code is None or code in lbp_codes(r.get("code") or r.get("category") or [])]

    def action(self, code: str) -> dict[str, Any]:
        return next(a for a in self.actions() if code in lbp_codes(a.get("code") or []))

    def request(self, code: str) -> dict[str, Any]:
        found = self.requests(code)
        assert len(found) == 1, f"{len(found)} requests with code {code}"
        return found[0]

    def priority(self, code: str) -> str:
        found = self.requests(code)
        return str(found[0]["priority"] if found else self.action(code).get("priority"))

    def due(self, code: str) -> str | dict[str, str]:
        """The request's date: Task restriction.period (its end alone when that is all), else occurrence[x]."""
        request = self.request(code)
        if request["resourceType"] == "Task":
            period = request["restriction"]["period"]
            return period if "start" in period else str(period["end"])
        return request.get("occurrenceDateTime") or request["occurrencePeriod"]

    def unknown(self) -> set[str]:
        """The facts the root RequestGroup names as unknown."""
        notes = self.resources("RequestGroup")[0].get("note") or []
        text = notes[0]["text"] if notes else ""
        return {name.strip() for name in text.partition(":")[2].split(",") if name.strip()}

    def issues(self) -> list[dict[str, Any]]:
        return [i for o in self.resources("OperationOutcome") for i in o["issue"]]


def apply_region(region: str, patient: dict[str, Any], *resources: dict[str, Any], today: date, **options: Any) -> Applied:
    """`$r5.apply` of a regional plan for `patient`, the data being `resources`, on `today`."""
    subject = f"Patient/{patient['id']}"
    request = pathway_input(subject, {subject: patient}, resources, datetime.combine(today, time(9), UTC), ARTIFACTS, **options)
    return Applied(request_bundle(apply_plan_definition(region_plan(region), request)))
