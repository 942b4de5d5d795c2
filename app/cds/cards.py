"""Cards made from a pathway `$apply` result. Spec: https://cds-hooks.hl7.org/2.0/#cds-service-response

The mapping of `../shared/standards.md` §4 (after clinical-reasoning's CdsResponseEncoderService,
whose gaps it closes), applied to the rendered CPG Bundle, so a card says exactly what `$r5.apply`
says:
- an action with a code of its own is a card; one without (a plan's course, the triage group) is a
  container whose actions are read in turn, and an action pointing at a nested RequestGroup is read
  through it;
- priority → indicator: routine or none → info, urgent / asap → warning, stat → critical; cards are
  ordered critical, warning, info, so a red flag always comes first;
- title → summary (< 140 characters); description → detail (Markdown), followed by the due date,
  the rule (plan and action id) and its sources; `source` is the plan (label its title, url the
  PlanDefinition on this server, topic the action's coding); `links` are the action's and the plan's
  RelatedArtifacts that have a url;
- suggestions: the request the action generates (`create`), and per child action the request it
  generates (`create`) or, for a `remove` action, a `delete` of the resource it points to; a create
  is left out while an open request of the subject already instantiates the same definition;
  `precheckBehavior` yes or `requiredBehavior` must → isRecommended; `selectionBehavior`
  at-most-one / exactly-one → at-most-one, anything else → any; warnings carry the override reasons;
- uuids of cards and suggestions are derived from hookInstance and the action id, so they are unique
  per call and stable when a call is repeated.
A created request leaves its transient RequestGroup behind: no `basedOn`, and intent `proposal`
instead of `option` (an option only exists inside a RequestGroup).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.pathway.apply import PlanResult
from app.pathway.render import request_bundle
from app.pathway.translation import localized

__all__ = ["LBP_ACTION", "CardSettings", "cds_cards"]

LBP_ACTION = "http://backpath.dev/fhir/CodeSystem/lbp-action"
_NAMESPACE = uuid.UUID("6f1f7c3e-1d9b-4c55-9a53-6b0d8f3b2a10")  # BackPath's namespace for card uuids
_INDICATOR = {"stat": "critical", "urgent": "warning", "asap": "warning"}
_RANK = {"critical": 0, "warning": 1, "info": 2}
_SUMMARY_LIMIT = 139
_OPEN_STATUS = frozenset({"draft", "active", "on-hold", "requested", "received", "accepted", "ready", "in-progress"})

# BackPath's own labels in the card texts (working translations, like the content's).
_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "due": "Due", "rule": "Pathway rule", "sources": "Sources", "requested": "Already requested",
        "t0": "Episode start (T0)", "week": "week", "no-t0": "episode start not recorded", "sbst": "STarT Back",
        "assessment": "Latest assessment", "unknown": "Not known yet (answering could change the advice)",
        "open": "Open pathway requests", "low": "low risk", "medium": "medium risk", "high": "high risk",
    },
    "nl": {
        "due": "Gepland", "rule": "Regel van het zorgpad", "sources": "Bronnen", "requested": "Al aangevraagd",
        "t0": "Start van de episode (T0)", "week": "week", "no-t0": "start van de episode niet vastgelegd",
        "sbst": "STarT Back", "assessment": "Laatste beoordeling",
        "unknown": "Nog niet bekend (een antwoord kan het advies veranderen)", "open": "Open aanvragen van het zorgpad",
        "low": "laag risico", "medium": "gemiddeld risico", "high": "hoog risico",
    },
    "da": {
        "due": "Planlagt", "rule": "Forløbsprogrammets regel", "sources": "Kilder", "requested": "Allerede bestilt",
        "t0": "Episodens start (T0)", "week": "uge", "no-t0": "episodens start er ikke registreret",
        "sbst": "STarT Back", "assessment": "Seneste vurdering",
        "unknown": "Endnu ukendt (et svar kan ændre rådet)", "open": "Åbne henvisninger i forløbet",
        "low": "lav risiko", "medium": "mellem risiko", "high": "høj risiko",
    },
}  # fmt: skip


@dataclass(frozen=True)
class CardSettings:
    """What the cards need besides the result: the call, the language, where the plans can be read,
    the override reasons a warning offers, the subject's open requests, and whether to lead with a
    status card (patient-view)."""

    hook_instance: str
    language: str | None = None
    fhir_base: str | None = None
    override_reasons: tuple[Mapping[str, Any], ...] = ()
    open_requests: tuple[Mapping[str, Any], ...] = ()
    status_card: bool = False
    facts_line: bool = False  # say T0 and the week on every card (when no status card does)


@dataclass
class _Reader:
    """One pass over a rendered result."""

    result: PlanResult
    settings: CardSettings
    resources: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def label(self, key: str) -> str:
        language = (self.settings.language or "en").lower()
        table = _LABELS.get(language) or _LABELS.get(language.split("-")[0]) or _LABELS["en"]
        return table[key]

    def plan(self, canonical: str) -> Mapping[str, Any]:
        root = self.result.group.plan  # already in the user's language
        if canonical == root.get("url"):
            return root
        found = self.result.request.artifacts.find(canonical)
        return localized(found, self.result.request.language) if found is not None else {"url": canonical}

    def target(self, action: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self.resources.get(str((action.get("resource") or {}).get("reference")))


def cds_cards(result: PlanResult, settings: CardSettings) -> list[dict[str, Any]]:
    """The cards of `result`, most urgent first."""
    bundle = request_bundle(result)
    reader = _Reader(result, settings)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        reader.resources[f"{resource['resourceType']}/{resource['id']}"] = resource
    root = bundle["entry"][0]["resource"]
    cards = list(_cards(reader, root.get("action") or [], reader.plan(str(root.get("instantiatesCanonical", [""])[0]))))
    if settings.status_card:
        cards.insert(0, _status_card(reader))
    return sorted(cards, key=lambda card: _RANK[card["indicator"]])


def _cards(reader: _Reader, actions: Sequence[Mapping[str, Any]], plan: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for action in actions:
        target = reader.target(action)
        if target is not None and target.get("resourceType") == "RequestGroup":
            nested = reader.plan(str((target.get("instantiatesCanonical") or [""])[0]))
            yield from _cards(reader, target.get("action") or [], nested)
        elif _coding(action) is not None:
            yield _card(reader, action, target, plan)
        else:
            yield from _cards(reader, action.get("action") or [], plan)


def _card(reader: _Reader, action: Mapping[str, Any], target: Mapping[str, Any] | None, plan: Mapping[str, Any]) -> dict[str, Any]:
    settings = reader.settings
    key = str(action.get("id") or action.get("title"))
    indicator = _INDICATOR.get(str(action.get("priority") or ""), "info")
    card: dict[str, Any] = {"uuid": _uuid(settings.hook_instance, key), "summary": _summary(action.get("title") or key), "indicator": indicator}
    lines = [str(action["description"])] if action.get("description") else []
    lines += _detail(reader, action, plan)
    suggestions, requested = _suggestions(reader, action, target, key)
    if requested:
        lines.append(f"**{reader.label('requested')}:** " + ", ".join(requested))
    episode = _episode_line(reader) if settings.facts_line else None
    if episode:
        lines.append(episode)
    if lines:
        card["detail"] = "\n\n".join(lines)
    card["source"] = _source(reader, plan, action)
    if suggestions:
        card["suggestions"] = suggestions
        behavior = str(action.get("selectionBehavior") or "")
        card["selectionBehavior"] = "at-most-one" if behavior in ("at-most-one", "exactly-one") else "any"
    if indicator == "warning" and settings.override_reasons:
        card["overrideReasons"] = [dict(reason) for reason in settings.override_reasons]
    links = _links(action, plan)
    if links:
        card["links"] = links
    return card


def _detail(reader: _Reader, action: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    lines = []
    due = _due(action)
    if due:
        lines.append(f"**{reader.label('due')}:** {due}")
    lines.append(f"**{reader.label('rule')}:** {plan.get('title') or plan.get('url')} — `{action.get('id')}`")
    sources = [str(d["display"]) for d in action.get("documentation") or [] if d.get("display")]
    if sources:
        lines.append(f"**{reader.label('sources')}:**\n" + "\n".join(f"- {s}" for s in sources))
    return lines


def _suggestions(
    reader: _Reader, action: Mapping[str, Any], target: Mapping[str, Any] | None, key: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The card's suggestions, and the open requests that stand in for ones left out."""
    suggestions: list[dict[str, Any]] = []
    requested: list[str] = []
    for suggested, request in [(action, target), *((child, reader.target(child)) for child in action.get("action") or [])]:
        label = str(suggested.get("title") or suggested.get("description") or key)
        description = str(suggested.get("description") or suggested.get("textEquivalent") or label)
        if request is not None and request.get("resourceType") != "RequestGroup":
            existing = _already_requested(reader.settings.open_requests, request)
            if existing:
                requested.append(existing)
                continue
            change: dict[str, Any] = {"type": "create", "description": description, "resource": _standalone(request)}
        elif _action_type(suggested) == "remove" and (suggested.get("resource") or {}).get("reference"):
            change = {"type": "delete", "description": description, "resourceId": str(suggested["resource"]["reference"])}
        else:
            continue
        suggestion: dict[str, Any] = {"label": label, "uuid": _uuid(reader.settings.hook_instance, f"{key}/{suggested.get('id') or label}")}
        if suggested.get("precheckBehavior") == "yes" or suggested.get("requiredBehavior") == "must":
            suggestion["isRecommended"] = True
        suggestion["actions"] = [change]
        suggestions.append(suggestion)
    if str(action.get("selectionBehavior") or "") in ("at-most-one", "exactly-one"):
        recommended = [s for s in suggestions if s.get("isRecommended")]
        for extra in recommended[1:]:  # at most one may be recommended when at most one may be chosen
            del extra["isRecommended"]
    return suggestions, requested


def _standalone(request: Mapping[str, Any]) -> dict[str, Any]:
    resource = {k: v for k, v in request.items() if k != "basedOn"}
    if resource.get("intent") == "option":
        resource["intent"] = "proposal"
    return resource


def _already_requested(open_requests: Sequence[Mapping[str, Any]], request: Mapping[str, Any]) -> str | None:
    definitions = _canonicals(request)
    for existing in open_requests:
        if existing.get("resourceType") != request.get("resourceType") or existing.get("status") not in _OPEN_STATUS:
            continue
        if definitions & _canonicals(existing):
            return f"{existing['resourceType']}/{existing.get('id')} ({existing.get('status')})"
    return None


def _canonicals(request: Mapping[str, Any]) -> set[str]:
    """`instantiatesCanonical`: one canonical on a Task, a list on a ServiceRequest."""
    value = request.get("instantiatesCanonical")
    values = value if isinstance(value, list) else [value]
    return {v for v in values if isinstance(v, str)}


def _status_card(reader: _Reader) -> dict[str, Any]:
    """Where the patient is on the pathway: T0 and the week, the STarT Back result, the latest
    assessment, the open pathway requests and the facts still unknown."""
    plan = reader.result.group.plan
    title = str(plan.get("title") or plan.get("url"))
    inputs = reader.result.request.named_inputs
    t0, week = inputs.get("t0"), inputs.get("weeks-since-t0")
    where = f"{reader.label('week')} {week} (T0 {t0})" if t0 else reader.label("no-t0")
    episode = _episode_line(reader)
    lines = [episode] if episode else []
    risk = inputs.get("sbst-risk")
    if risk:
        lines.append(f"**{reader.label('sbst')}:** {reader.label(str(risk))} ({inputs.get('sbst-date')})")
    if inputs.get("assessment-date"):
        lines.append(f"**{reader.label('assessment')}:** {inputs['assessment-date']}")
    pathway_requests = [r for r in reader.settings.open_requests if _lbp_code(r) and r.get("status") in _OPEN_STATUS]
    if pathway_requests:
        lines.append(f"**{reader.label('open')}:**\n" + "\n".join(f"- {_request_line(r)}" for r in pathway_requests))
    if reader.result.unknown:
        lines.append(f"**{reader.label('unknown')}:** " + ", ".join(sorted(reader.result.unknown)))
    card: dict[str, Any] = {
        "uuid": _uuid(reader.settings.hook_instance, "status"),
        "summary": _summary(f"{title}: {where}"),
        "indicator": "info",
        "source": _source(reader, plan, None),
    }
    if lines:
        card["detail"] = "\n\n".join(lines)
    return card


def _episode_line(reader: _Reader) -> str | None:
    """T0 and the week of the episode, when T0 is known."""
    inputs = reader.result.request.named_inputs
    if not inputs.get("t0"):
        return None
    return f"**{reader.label('t0')}:** {inputs['t0']}, {reader.label('week')} {inputs.get('weeks-since-t0')}"


def _request_line(request: Mapping[str, Any]) -> str:
    coding = _lbp_code(request) or {}
    when = request.get("occurrenceDateTime") or ((request.get("restriction") or {}).get("period") or {}).get("end")
    text = f"{coding.get('display') or coding.get('code')}: {request['resourceType']}/{request.get('id')} ({request.get('status')})"
    return f"{text}, {when}" if when else text


def _source(reader: _Reader, plan: Mapping[str, Any], action: Mapping[str, Any] | None) -> dict[str, Any]:
    source: dict[str, Any] = {"label": str(plan.get("title") or plan.get("name") or "BackPath")}
    if reader.settings.fhir_base and plan.get("id"):
        source["url"] = f"{reader.settings.fhir_base}/PlanDefinition/{plan['id']}"
    coding = _coding(action) if action is not None else None
    if coding is not None:
        source["topic"] = {k: coding[k] for k in ("system", "code", "display") if k in coding}
    return source


def _links(action: Mapping[str, Any], plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = [*(action.get("documentation") or []), *(plan.get("relatedArtifact") or [])]
    links, seen = [], set()
    for artifact in found:
        url = artifact.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")) and url not in seen:
            seen.add(url)
            links.append({"label": str(artifact.get("display") or artifact.get("label") or url), "url": url, "type": "absolute"})
    return links


def _due(action: Mapping[str, Any]) -> str | None:
    if action.get("timingDateTime"):
        return str(action["timingDateTime"])[:10]
    period = action.get("timingPeriod") or {}
    if period:
        return " to ".join(str(period[k])[:10] for k in ("start", "end") if period.get(k))
    return None


def _coding(action: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The action's first coding (its lbp-action one when it has one), or None for a container."""
    codings = [c for concept in (action or {}).get("code") or [] for c in concept.get("coding") or []]
    return next((c for c in codings if c.get("system") == LBP_ACTION), codings[0] if codings else None)


def _lbp_code(request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    concepts = [request.get("code"), *(request.get("category") or [])]
    codings = [c for concept in concepts if isinstance(concept, dict) for c in concept.get("coding") or []]
    return next((c for c in codings if c.get("system") == LBP_ACTION), None)


def _action_type(action: Mapping[str, Any]) -> str | None:
    codings = (action.get("type") or {}).get("coding") or []
    return str(codings[0].get("code")) if codings else None


def _summary(text: Any) -> str:
    summary = " ".join(str(text).split())
    return summary if len(summary) <= _SUMMARY_LIMIT else summary[: _SUMMARY_LIMIT - 1].rstrip() + "…"


def _uuid(hook_instance: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{hook_instance}/{key}"))
