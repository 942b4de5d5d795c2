"""QuestionnaireResponse answers: which `value[x]` an item type takes, reading one, making one.

Spec: https://hl7.org/fhir/R4/questionnaireresponse.html (answer.value[x]) and
https://hl7.org/fhir/R4/valueset-item-type.html.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.fhir.fhirpath import json_value
from app.questionnaire.extensions import UNIT, extension_value

__all__ = ["ANSWER_TYPES", "answer_value", "answers_from_values", "same_answers", "values_equal"]

# item.type → the answer value[x] types it accepts (choice also takes its answerOption types)
ANSWER_TYPES: dict[str, frozenset[str]] = {
    "group": frozenset(),
    "display": frozenset(),
    "boolean": frozenset({"Boolean"}),
    "decimal": frozenset({"Decimal"}),
    "integer": frozenset({"Integer"}),
    "date": frozenset({"Date"}),
    "dateTime": frozenset({"DateTime"}),
    "time": frozenset({"Time"}),
    "string": frozenset({"String"}),
    "text": frozenset({"String"}),
    "url": frozenset({"Uri"}),
    "choice": frozenset({"Coding"}),
    "open-choice": frozenset({"Coding", "String"}),
    "attachment": frozenset({"Attachment"}),
    "reference": frozenset({"Reference"}),
    "quantity": frozenset({"Quantity"}),
}


def answer_value(element: Any) -> tuple[str, Any] | None:
    """(type, value) of the `value[x]` of an answer, answerOption, initial or enableWhen
    (`answer[x]` there); None when it has none."""
    if not isinstance(element, dict):
        return None
    for key, value in element.items():
        for prefix in ("value", "answer"):
            if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                return key[len(prefix) :], value
    return None


def values_equal(kind: str, left: Any, right: Any) -> bool:
    """FHIR-sense equality of two values of type `kind`: Codings by system and code (a missing
    system on either side matches any), Quantities by value and unit, References by target."""
    if kind == "Coding":
        if not (isinstance(left, dict) and isinstance(right, dict)) or left.get("code") != right.get("code"):
            return False
        return left.get("system") is None or right.get("system") is None or left.get("system") == right.get("system")
    if kind == "Quantity":
        return (
            isinstance(left, dict)
            and isinstance(right, dict)
            and _number(left.get("value")) == _number(right.get("value"))
            and (left.get("code") or left.get("unit")) == (right.get("code") or right.get("unit"))
        )
    if kind == "Reference":
        return isinstance(left, dict) and isinstance(right, dict) and left.get("reference") == right.get("reference")
    if kind in ("Decimal", "Integer"):
        return _number(left) == _number(right)
    return bool(left == right)


def same_answers(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    """Whether two answer lists carry the same values in the same order."""
    if len(left) != len(right):
        return False
    for a, b in zip(left, right, strict=True):
        va, vb = answer_value(a), answer_value(b)
        if va is None or vb is None or va[0] != vb[0] or not values_equal(va[0], va[1], vb[1]):
            return False
    return True


def answers_from_values(item: dict[str, Any], values: list[Any]) -> list[dict[str, Any]]:
    """Answers for `item` holding `values` (the result of an expression), typed as the item's
    type asks (an integral decimal becomes an integer, a number a Quantity in the item's unit).

    Raises ValueError for a value the item cannot hold.
    """
    kind = item.get("type", "")
    answers = []
    for value in map(json_value, values):
        value_type, typed_value = _value_type(kind, item, value)
        answers.append({f"value{value_type}": typed_value})
    return answers


def _value_type(kind: str, item: dict[str, Any], value: Any) -> tuple[str, Any]:
    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if kind == "boolean" and isinstance(value, bool):
        return "Boolean", value
    if kind == "integer" and number and Decimal(str(value)) == Decimal(str(value)).to_integral_value():
        return "Integer", int(value)
    if kind == "decimal" and number:
        return "Decimal", _json_number(value)
    if kind == "quantity" and number:
        quantity: dict[str, Any] = {"value": _json_number(value)}
        unit = extension_value(item, UNIT)
        if isinstance(unit, dict):
            quantity.update({k: unit[k] for k in ("system", "code") if k in unit})
            if "display" in unit:
                quantity["unit"] = unit["display"]
        return "Quantity", quantity
    if kind == "quantity" and isinstance(value, dict) and "value" in value:
        return "Quantity", {**value, "value": _json_number(value["value"])}
    if kind in ("date", "dateTime", "time") and isinstance(value, str):
        return {"date": "Date", "dateTime": "DateTime", "time": "Time"}[kind], value
    if kind in ("string", "text", "open-choice") and isinstance(value, str):
        return "String", value
    if kind == "url" and isinstance(value, str):
        return "Uri", value
    if kind in ("choice", "open-choice") and isinstance(value, dict) and "code" in value:
        return "Coding", value
    if kind == "reference" and isinstance(value, dict) and "reference" in value:
        return "Reference", value
    if kind == "choice":  # answerOptions of another type (R4 allows integer, date, time, string, Reference)
        for option in item.get("answerOption") or ():
            found = answer_value(option)
            if found and values_equal(found[0], found[1], value):
                return found
    raise ValueError(f"a {kind} item cannot hold the value {value!r}")


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _json_number(value: Any) -> int | float:
    """A number JSON can carry (orjson writes no Decimal)."""
    return value if isinstance(value, int) else float(Decimal(str(value)))
