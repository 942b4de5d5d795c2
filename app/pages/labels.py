"""The pages' own words (headings, buttons, states) in Dutch, Danish and English, and the FHIR
translation extension for content texts. Clinical texts never come from here: SBST items, pathway
actions and assessment questions are the content's own, in the languages the content has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LANGUAGES", "labels_for", "translated"]

LANGUAGES = ("nl", "da", "en")
_TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"

_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "form_title": "Questionnaire before your appointment",
        "form_intro": "Please answer the questions below. Your answers go to your care provider.",
        "form_items_language": "The questions are shown in English: this questionnaire has no validated translation here.",
        "submit": "Send my answers",
        "sending": "Sending…",
        "send_failed": "Your answers could not be sent. Please try again.",
        "incomplete": "Please answer every question before sending.",
        "thanks_title": "Thank you",
        "thanks_text": "Your answers have been sent to your care provider. You can close this page.",
        "link_expired_title": "This link has expired",
        "link_expired_text": "The link to this questionnaire is no longer valid. Please ask your practice for a new link.",
        "link_used_title": "This questionnaire has already been answered",
        "link_used_text": "The answers to this questionnaire were already sent. There is nothing more to do.",
        "link_invalid_title": "This link does not work",
        "link_invalid_text": "The link is incomplete or not valid. Please use the link exactly as you received it, or ask your practice for a new one.",
        "loading": "Loading the questionnaire…",
    },
    "nl": {
        "form_title": "Vragenlijst voor uw afspraak",
        "form_intro": "Beantwoord de vragen hieronder. Uw antwoorden gaan naar uw zorgverlener.",
        "form_items_language": "De vragen staan in het Engels: van deze vragenlijst is hier geen gevalideerde vertaling beschikbaar.",
        "submit": "Antwoorden versturen",
        "sending": "Bezig met versturen…",
        "send_failed": "Uw antwoorden konden niet worden verstuurd. Probeer het opnieuw.",
        "incomplete": "Beantwoord alle vragen voordat u verstuurt.",
        "thanks_title": "Dank u wel",
        "thanks_text": "Uw antwoorden zijn naar uw zorgverlener gestuurd. U kunt deze pagina sluiten.",
        "link_expired_title": "Deze link is verlopen",
        "link_expired_text": "De link naar deze vragenlijst is niet meer geldig. Vraag uw praktijk om een nieuwe link.",
        "link_used_title": "Deze vragenlijst is al ingevuld",
        "link_used_text": "De antwoorden op deze vragenlijst zijn al verstuurd. U hoeft niets meer te doen.",
        "link_invalid_title": "Deze link werkt niet",
        "link_invalid_text": "De link is onvolledig of niet geldig. Gebruik de link precies zoals u die ontving, of vraag uw praktijk om een nieuwe.",
        "loading": "De vragenlijst wordt geladen…",
    },
    "da": {
        "form_title": "Spørgeskema før din aftale",
        "form_intro": "Besvar venligst spørgsmålene nedenfor. Dine svar sendes til din behandler.",
        "form_items_language": "Spørgsmålene vises på engelsk: dette spørgeskema har ingen valideret oversættelse her.",
        "submit": "Send mine svar",
        "sending": "Sender…",
        "send_failed": "Dine svar kunne ikke sendes. Prøv venligst igen.",
        "incomplete": "Besvar venligst alle spørgsmål, før du sender.",
        "thanks_title": "Tak",
        "thanks_text": "Dine svar er sendt til din behandler. Du kan lukke denne side.",
        "link_expired_title": "Dette link er udløbet",
        "link_expired_text": "Linket til dette spørgeskema er ikke længere gyldigt. Bed din praksis om et nyt link.",
        "link_used_title": "Dette spørgeskema er allerede besvaret",
        "link_used_text": "Svarene på dette spørgeskema er allerede sendt. Du skal ikke gøre mere.",
        "link_invalid_title": "Dette link virker ikke",
        "link_invalid_text": "Linket er ufuldstændigt eller ugyldigt. Brug linket præcis som du modtog det, eller bed din praksis om et nyt.",
        "loading": "Spørgeskemaet indlæses…",
    },
}


def labels_for(language: str) -> Mapping[str, str]:
    return _LABELS.get(language, _LABELS["en"])


def translated(element: Mapping[str, Any], name: str, language: str) -> str:
    """`element[name]` in `language` from its translation extension, else the text as written."""
    text = str(element.get(name) or "")
    for extension in (element.get(f"_{name}") or {}).get("extension") or []:
        if extension.get("url") != _TRANSLATION:
            continue
        parts = {part.get("url"): part for part in extension.get("extension") or []}
        if (parts.get("lang") or {}).get("valueCode") == language and (parts.get("content") or {}).get("valueString"):
            return str(parts["content"]["valueString"])
    return text
