"""The generic $apply engine on small hand-made definitions: applicability, nesting, definitions,
dynamic values, timing, related actions, translation, ids, error handling, rendering."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from app.fhir.models import validate_resource
from app.pathway.apply import (
    ApplyInput,
    Artifacts,
    apply_activity,
    apply_plan_definition,
    referenced_definitions,
)
from app.pathway.render import care_plan, request_bundle

TODAY = date(2026, 3, 16)
VAR = "http://hl7.org/fhir/StructureDefinition/variable"
ANY = {"url": "http://hl7.org/fhir/StructureDefinition/cqf-applicabilityBehavior", "valueCode": "any"}
PATIENT = {"resourceType": "Patient", "id": "p", "name": [{"given": ["Alice"]}], "birthDate": "1980-01-01"}


def when(expression: str) -> list[dict[str, Any]]:
    return [{"kind": "applicability", "expression": {"language": "text/fhirpath", "expression": expression}}]


def dynamic(path: str, expression: str) -> dict[str, Any]:
    return {"path": path, "expression": {"language": "text/fhirpath", "expression": expression}}


def activity(id: str, kind: str = "ServiceRequest", **fields: Any) -> dict[str, Any]:
    return {"resourceType": "ActivityDefinition", "id": id, "url": f"http://test/ActivityDefinition/{id}", "status": "active", "kind": kind, **fields}


def plan(*actions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"resourceType": "PlanDefinition", "id": fields.pop("id", "plan"), "url": fields.pop("url", "http://test/PlanDefinition/plan"),
            "status": "active", "action": list(actions), **fields}


def request(inputs: dict[str, Any] | None = None, *artifacts: dict[str, Any], **options: Any) -> ApplyInput:
    return ApplyInput(
        subject="Patient/p",
        today=TODAY,
        now=datetime(2026, 3, 16, 9, tzinfo=UTC),
        artifacts=Artifacts(artifacts),
        resources={"Patient/p": PATIENT, **options.pop("resources", {})},
        named_inputs=inputs or {},
        **options,
    )


def bundle_of(definition: dict[str, Any], req: ApplyInput) -> dict[str, Any]:
    return request_bundle(apply_plan_definition(definition, req))


def action_ids(bundle: dict[str, Any]) -> list[str]:
    def walk(actions: list[dict[str, Any]]) -> list[str]:
        return [i for a in actions for i in [a.get("id", "?"), *walk(a.get("action") or [])]]

    return [i for e in bundle["entry"] if e["resource"]["resourceType"] == "RequestGroup" for i in walk(e["resource"].get("action") or [])]


def resources_of(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def issues_of(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for o in resources_of(bundle, "OperationOutcome") for i in o["issue"]]


# --- applicability -------------------------------------------------------------------------------


def test_only_a_true_condition_applies_and_false_empty_or_non_boolean_do_not() -> None:
    definition = plan(
        {"id": "yes", "condition": when("%x = 1")},
        {"id": "no", "condition": when("%x = 2")},
        {"id": "unknown", "condition": when("%missing = 1")},
        {"id": "string", "condition": when("'yes'")},
        {"id": "always"},
    )
    bundle = bundle_of(definition, request({"x": 1, "missing": []}))
    assert action_ids(bundle) == ["yes", "always"]
    issues = issues_of(bundle)
    assert any(i["code"] == "incomplete" and "unknown missing" in i["diagnostics"] for i in issues)
    assert any(i["severity"] == "error" and "not a single Boolean" in i["diagnostics"] for i in issues)


def test_all_conditions_must_hold_and_a_false_one_decides_over_an_unknown_one() -> None:
    definition = plan({"id": "a", "condition": when("%missing = 1") + when("%x = 2")})
    bundle = bundle_of(definition, request({"x": 1, "missing": []}))
    assert action_ids(bundle) == []
    assert issues_of(bundle) == []  # decided: not applicable, nothing unknown mattered


def test_unknown_facts_name_only_what_blocks_the_rule() -> None:
    definition = plan(
        {"id": "or", "condition": when("%known = true or %a = true or (%b = 1 and %c = 2)")},
        {"id": "and", "condition": when("%d = 1 and %known = true")},
        extension=[{"url": VAR, "valueExpression": {"name": "derived", "language": "text/fhirpath", "expression": "%e > 3"}}],
    )
    definition["action"].append({"id": "via-variable", "condition": when("%derived")})
    bundle = bundle_of(definition, request({"known": False, "a": [], "b": [], "c": 5, "d": [], "e": []}))
    assert action_ids(bundle) == []
    group = resources_of(bundle, "RequestGroup")[0]
    # %c = 2 is false, so the (b and c) term is false and b is not to blame; %known = true decides the `and`.
    assert group["note"][0]["text"].endswith(": a, e")


def test_any_behaviour_takes_the_first_applicable_child_and_stops_at_an_undecided_one() -> None:
    first_wins = plan({"id": "one", "condition": when("%x = 0")}, {"id": "two"}, {"id": "three"}, extension=[ANY])
    assert action_ids(bundle_of(first_wins, request({"x": 1}))) == ["two"]
    blocked = plan({"id": "one", "condition": when("%unknown = 1")}, {"id": "two"}, extension=[ANY])
    bundle = bundle_of(blocked, request({"unknown": []}))
    assert action_ids(bundle) == []
    assert "unknown" in resources_of(bundle, "RequestGroup")[0]["note"][0]["text"]


def test_a_group_whose_children_all_fall_away_is_left_out() -> None:
    definition = plan({"id": "group", "action": [{"id": "child", "condition": when("false")}]}, {"id": "sibling"})
    assert action_ids(bundle_of(definition, request())) == ["sibling"]


def test_variables_are_scoped_to_the_element_that_defines_them() -> None:
    inner = {"id": "inner", "condition": when("%local = 7")}
    group = {"id": "group", "extension": [{"url": VAR, "valueExpression": {"name": "local", "expression": "3 + 4"}}], "action": [inner]}
    elsewhere = {"id": "elsewhere", "condition": when("%local = 7")}
    bundle = bundle_of(plan(group, elsewhere), request())
    assert action_ids(bundle) == ["group", "inner"]
    assert any("undefined environment variable" in i["diagnostics"] for i in issues_of(bundle))


def test_today_comes_from_the_injected_clock() -> None:
    bundle = bundle_of(plan({"id": "a", "condition": when("today() = @2026-03-16")}), request())
    assert action_ids(bundle) == ["a"]


# --- definitions and dynamic values -----------------------------------------------------------------


def test_activity_definition_becomes_an_option_request_with_the_action_dynamic_values_last() -> None:
    ad = activity(
        "mr",
        code={"coding": [{"system": "http://test", "code": "mr"}]},
        priority="routine",
        participant=[{"type": "practitioner", "role": {"text": "Radiology"}}],
        dynamicValue=[dynamic("priority", "'urgent'"), dynamic("note[0].text", "'from the definition ' + %context.id")],
    )
    action = {"id": "order-mr", "definitionCanonical": ad["url"], "reason": [{"text": "the rule"}], "dynamicValue": [dynamic("priority", "'stat'")]}
    bundle = bundle_of(plan(action), request({}, ad, practitioner="Practitioner/dr", resources={"Practitioner/dr": {"resourceType": "Practitioner", "id": "dr"}}))
    service = resources_of(bundle, "ServiceRequest")[0]
    assert service["intent"] == "option" and service["status"] == "draft"
    assert service["priority"] == "stat"  # the action's value wins over the definition's
    assert service["note"] == [{"text": "from the definition mr"}]
    assert service["performerType"] == {"text": "Radiology"}
    assert service["requester"] == {"reference": "Practitioner/dr"}
    assert service["reasonCode"] == [{"text": "the rule"}]
    assert service["instantiatesCanonical"] == [ad["url"]]
    assert service["subject"] == {"reference": "Patient/p"}
    assert service["basedOn"] == [{"reference": f"RequestGroup/{resources_of(bundle, 'RequestGroup')[0]['id']}"}]
    validate_resource(service)


def test_task_fields_follow_the_task_model() -> None:
    ad = activity("ask", "Task", description="Fill it in", participant=[{"type": "patient"}], dynamicValue=[dynamic("focus.reference", "'Questionnaire/q'")])
    bundle = bundle_of(plan({"id": "a", "definitionCanonical": ad["url"], "reason": [{"text": "one"}, {"text": "two"}]}), request({}, ad))
    task = resources_of(bundle, "Task")[0]
    assert task["for"] == {"reference": "Patient/p"} and task["owner"] == {"reference": "Patient/p"}
    assert task["focus"] == {"reference": "Questionnaire/q"}
    assert task["instantiatesCanonical"] == ad["url"]  # 0..1 on Task
    assert task["reasonCode"] == {"text": "one"}  # Task.reasonCode is 0..1
    validate_resource(task)


def test_a_reused_activity_definition_gives_distinct_ids_and_references() -> None:
    ad = activity("shared")
    bundle = bundle_of(plan({"id": "x", "definitionCanonical": ad["url"]}, {"definitionCanonical": ad["url"]}, {"definitionCanonical": ad["url"]}), request({}, ad))
    ids = [r["id"] for r in resources_of(bundle, "ServiceRequest")]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [a["resource"]["reference"] for a in resources_of(bundle, "RequestGroup")[0]["action"]] == [f"ServiceRequest/{i}" for i in ids]


def test_nested_plan_is_applied_recursively_and_an_empty_one_is_left_out() -> None:
    nested = plan({"id": "inner", "condition": when("%x = 1")}, id="nested", url="http://test/PlanDefinition/nested")
    outer = plan({"id": "use-nested", "definitionCanonical": nested["url"]})
    bundle = bundle_of(outer, request({"x": 1}, nested))
    groups = resources_of(bundle, "RequestGroup")
    assert groups[1]["instantiatesCanonical"] == [nested["url"]]
    assert groups[0]["action"][0]["resource"]["reference"] == f"RequestGroup/{groups[1]['id']}"
    assert action_ids(bundle_of(outer, request({"x": 2}, nested))) == []


def test_a_plan_that_includes_itself_is_not_applied_again() -> None:
    looping = plan({"id": "again", "definitionCanonical": "http://test/PlanDefinition/plan"})
    bundle = bundle_of(looping, request({}, looping))
    assert any("includes itself" in i["diagnostics"] for i in issues_of(bundle))


def test_questionnaire_and_uri_definitions_are_referenced() -> None:
    questionnaire = {"resourceType": "Questionnaire", "id": "q1", "url": "http://test/Questionnaire/q1", "status": "active"}
    definition = plan({"id": "q", "definitionCanonical": questionnaire["url"]}, {"id": "u", "definitionUri": "http://elsewhere/thing"})
    actions = resources_of(bundle_of(definition, request({}, questionnaire)), "RequestGroup")[0]["action"]
    assert [a["resource"]["reference"] for a in actions] == ["Questionnaire/q1", "http://elsewhere/thing"]


def test_contained_activity_definition_is_found_by_fragment() -> None:
    definition = plan({"id": "a", "definitionCanonical": "#local"}, contained=[activity("local", "Task")])
    assert len(resources_of(bundle_of(definition, request()), "Task")) == 1


def test_content_problems_are_reported_and_only_the_affected_action_is_left_out() -> None:
    broken = activity("broken", dynamicValue=[dynamic("priority", "%nonsense.")])
    bad_path = activity("bad-path", dynamicValue=[dynamic("subject[0].foo", "'x'")])
    definition = plan(
        {"id": "unknown-definition", "definitionCanonical": "http://test/ActivityDefinition/nowhere"},
        {"id": "broken", "definitionCanonical": broken["url"]},
        {"id": "bad-path", "definitionCanonical": bad_path["url"]},
        {"id": "fine"},
    )
    bundle = bundle_of(definition, request({}, broken, bad_path))
    assert action_ids(bundle) == ["fine"]
    assert [i["severity"] for i in issues_of(bundle)].count("error") >= 3
    assert resources_of(bundle, "ServiceRequest") == []


def test_action_dynamic_value_writes_the_request_group_action() -> None:
    definition = plan({"id": "a", "dynamicValue": [dynamic("action.description", "'Hello ' + %subject.name.given.first()")]})
    action = resources_of(bundle_of(definition, request()), "RequestGroup")[0]["action"][0]
    assert action["description"] == "Hello Alice"


# --- timing, related actions, behaviours ------------------------------------------------------------------


def test_duration_and_range_timing_become_dates_from_the_anchor_on_action_and_request() -> None:
    task = activity("review", "Task")
    service = activity("refer")
    definition = plan(
        {"id": "t2", "definitionCanonical": task["url"], "timingDuration": {"value": 2, "unit": "weeks", "code": "wk"}},
        {"id": "window", "definitionCanonical": service["url"], "timingRange": {"low": {"value": 4, "code": "wk"}, "high": {"value": 8, "code": "wk"}}},
        {"id": "in-a-month", "timingDuration": {"value": 1, "code": "mo"}},
    )
    bundle = bundle_of(definition, request({}, task, service, anchor=date(2026, 1, 31)))
    actions = resources_of(bundle, "RequestGroup")[0]["action"]
    assert actions[0]["timingDateTime"] == "2026-02-14"
    assert actions[1]["timingPeriod"] == {"start": "2026-02-28", "end": "2026-03-28"}
    assert actions[2]["timingDateTime"] == "2026-02-28"  # month arithmetic clamps to the month's end
    assert resources_of(bundle, "Task")[0]["restriction"] == {"period": {"end": "2026-02-14"}}
    assert resources_of(bundle, "ServiceRequest")[0]["occurrencePeriod"] == {"start": "2026-02-28", "end": "2026-03-28"}


def test_without_an_anchor_offsets_count_from_today() -> None:
    definition = plan({"id": "a", "timingDuration": {"value": 3, "code": "d"}})
    assert resources_of(bundle_of(definition, request()), "RequestGroup")[0]["action"][0]["timingDateTime"] == "2026-03-19"


def test_related_action_gives_a_time_and_links_to_missing_actions_are_dropped() -> None:
    report = activity("report", "Task")
    definition = plan(
        {"id": "consult", "timingDuration": {"value": 1, "code": "wk"}},
        {"id": "report", "definitionCanonical": report["url"], "relatedAction": [{"actionId": "consult", "relationship": "after-end", "offsetDuration": {"value": 3, "code": "d"}}]},
        {"id": "orphan", "relatedAction": [{"actionId": "never-applied", "relationship": "after"}]},
        {"id": "never-applied", "condition": when("false")},
    )
    bundle = bundle_of(definition, request({}, report))
    actions = {a["id"]: a for a in resources_of(bundle, "RequestGroup")[0]["action"]}
    assert actions["report"]["timingDateTime"] == "2026-03-26"
    assert actions["report"]["relatedAction"][0]["actionId"] == "consult"
    assert "relatedAction" not in actions["orphan"]
    assert resources_of(bundle, "Task")[0]["restriction"] == {"period": {"end": "2026-03-26"}}


def test_behaviours_priority_and_texts_are_copied_but_prefix_and_trigger_are_not() -> None:
    definition = plan(
        {
            "id": "g", "title": "T", "description": "D", "textEquivalent": "E", "prefix": "1", "priority": "urgent",
            "selectionBehavior": "exactly-one", "requiredBehavior": "must", "groupingBehavior": "logical-group",
            "trigger": [{"type": "named-event", "name": "x"}],
            "action": [{"id": "one"}, {"id": "two"}],
        }
    )  # fmt: skip
    action = resources_of(bundle_of(definition, request()), "RequestGroup")[0]["action"][0]
    assert {k: action[k] for k in ("title", "description", "textEquivalent", "priority", "selectionBehavior", "requiredBehavior", "groupingBehavior")} == {
        "title": "T", "description": "D", "textEquivalent": "E", "priority": "urgent", "selectionBehavior": "exactly-one", "requiredBehavior": "must", "groupingBehavior": "logical-group",
    }  # fmt: skip
    assert "prefix" not in action and "trigger" not in action
    assert [a["id"] for a in action["action"]] == ["one", "two"]


def test_user_language_picks_translations_of_plan_and_definition() -> None:
    translation = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/translation",
                                  "extension": [{"url": "lang", "valueCode": "da"}, {"url": "content", "valueString": "Hej"}]}]}  # fmt: skip
    ad = activity("say", "CommunicationRequest", description="Hello", _description=translation, dynamicValue=[dynamic("payload[0].contentString", "%context.description")])
    definition = plan({"id": "a", "title": "Hello", "_title": translation, "definitionCanonical": ad["url"]})
    danish = bundle_of(definition, request({}, ad, language="da-DK"))
    assert resources_of(danish, "RequestGroup")[0]["action"][0]["title"] == "Hej"
    assert resources_of(danish, "CommunicationRequest")[0]["payload"][0]["contentString"] == "Hej"
    english = bundle_of(definition, request({}, ad, language="en"))
    assert resources_of(english, "RequestGroup")[0]["action"][0]["title"] == "Hello"


# --- rendering --------------------------------------------------------------------------------------------


def test_care_plan_contains_everything_and_bundle_lists_request_group_first() -> None:
    ad = activity("a")
    definition = plan({"id": "x", "definitionCanonical": ad["url"], "condition": when("%nope = 1")}, {"id": "y", "definitionCanonical": ad["url"]},
                      goal=[{"description": {"text": "Back to work"}, "target": [{"due": {"value": 8, "code": "wk"}}]}])
    result = apply_plan_definition(definition, request({"nope": []}, ad, anchor=date(2026, 3, 2)))
    plan_json = care_plan(result)
    validate_resource(plan_json)
    contained = {r["resourceType"] for r in plan_json["contained"]}
    assert contained == {"RequestGroup", "Goal", "ServiceRequest", "OperationOutcome"}
    assert plan_json["activity"] == [{"reference": {"reference": f"#{plan_json['contained'][0]['id']}"}}]
    assert plan_json["extension"][0]["valueReference"]["reference"].startswith("#")
    goal = next(r for r in plan_json["contained"] if r["resourceType"] == "Goal")
    assert goal["target"][0]["dueDate"] == "2026-04-27"
    service = next(r for r in plan_json["contained"] if r["resourceType"] == "ServiceRequest")
    assert service["basedOn"][0]["reference"].startswith("#")
    bundle = request_bundle(result)
    validate_resource(bundle)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["RequestGroup", "Goal", "ServiceRequest", "OperationOutcome"]


def test_activity_definition_apply_alone_returns_a_proposal() -> None:
    resource, issues = apply_activity(activity("solo", intent="order"), request())
    assert issues == [] and resource is not None
    assert resource["intent"] == "order" and resource["id"] == "solo"
    resource, issues = apply_activity(activity("no-kind", kind="Nonsense"), request())
    assert resource is None and issues


def test_referenced_definitions_walks_nested_and_contained_actions() -> None:
    definition = plan(
        {"definitionCanonical": "http://a", "action": [{"definitionCanonical": "http://b"}]},
        {"definitionCanonical": "#local"},
        contained=[plan({"definitionCanonical": "http://c"}, id="c")],
    )
    assert referenced_definitions(definition) == {"http://a", "http://b", "http://c"}
