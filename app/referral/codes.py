"""Code systems, codes and identifier systems of the referral flows, in one place.

Every value comes from `../shared/referral-standards.md` (MedCom, Nictiz ELZ, ZorgDomein, the
Dutch naming systems) or `../shared/clinical-codes.md`; the `LOCAL_*` systems are BackPath's own
(their CodeSystem resources in `fhir_profiles/` say so in their description).
"""

from __future__ import annotations

__all__ = [
    "ACK_EVENT",
    "ACTIVITY",
    "AGB",
    "BSN",
    "CHANNEL",
    "CPR",
    "DECISION",
    "DESTINATION_USE",
    "DESTINATION_USE_EXTENSION",
    "DISCHARGE_SUMMARY",
    "DOCUMENT_TYPE",
    "GLN",
    "GLN_OLD",
    "HASP_SECTION",
    "LBP_ACTION",
    "LOINC",
    "MEDCOM_EVENT",
    "MESSAGE_DEFINITION",
    "MESSAGE_EVENT",
    "NHG_TABLE_69",
    "NL_SECTION",
    "PATIENT_REFERRAL",
    "REFERRAL_ID",
    "REFERRAL_NOTE",
    "SBST_QUESTIONNAIRE",
    "SBST_SCORES",
    "SNOMED",
    "SOR",
    "STATUS",
    "URA",
    "UZI",
    "ZORGDOMEIN_DOCUMENT_TYPE",
]

# --- identifier systems
CPR = "urn:oid:1.2.208.176.1.2"
SOR = "urn:oid:1.2.208.176.1.1"
GLN = "https://www.gs1.org/gln"
GLN_OLD = "urn:oid:1.3.88"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
UZI = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
# The sender's referral id, shared by both sides' ServiceRequest and Task (local).
REFERRAL_ID = "http://backpath.dev/fhir/sid/referral"

# --- MedCom messaging (https://medcomfhir.dk/ig/messaging)
MEDCOM_EVENT = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes"
ACK_EVENT = "acknowledgement-message"
DESTINATION_USE_EXTENSION = "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-destinationUseExtension"
DESTINATION_USE = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-destinationUse"
ACTIVITY = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-activityCodes"

# --- BackPath's local systems
MESSAGE_EVENT = "http://backpath.dev/fhir/CodeSystem/message-event"  # mirrors the EHMI referral draft
MESSAGE_DEFINITION = "http://backpath.dev/fhir/MessageDefinition/"
CHANNEL = "http://backpath.dev/fhir/CodeSystem/referral-channel"
DECISION = "http://backpath.dev/fhir/CodeSystem/referral-decision"
STATUS = "http://backpath.dev/fhir/CodeSystem/referral-business-status"
DOCUMENT_TYPE = "http://backpath.dev/fhir/CodeSystem/document-type"
HASP_SECTION = "http://backpath.dev/fhir/CodeSystem/hasp-section"
LBP_ACTION = "http://backpath.dev/fhir/CodeSystem/lbp-action"

# --- terminology
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
PATIENT_REFERRAL = "3457005"  # SNOMED CT patient referral (Nictiz ELZ Task.code)
REFERRAL_NOTE = "57133-1"  # LOINC Referral note (ELZ Composition.type)
DISCHARGE_SUMMARY = "18842-5"  # LOINC Discharge summary (the DK report back)
NHG_TABLE_69 = "urn:oid:2.16.840.1.113883.2.4.4.30.69"  # code 1: referral letter
ZORGDOMEIN_DOCUMENT_TYPE = "http://zorgdomein.nl/terminology/code-system/document-type"
# Nictiz ELZ section codes (SNOMED CT)
NL_SECTION = {
    "core": "406550009",
    "reason": "440378000",
    "treatment": "108631000146107",
    "question": "240471000146100",
    "further": "159121000146100",
    "answer": "240481000146103",
}

# --- the STarT Back questionnaire and its scores (contract between branches)
SBST_QUESTIONNAIRE = "http://backpath.dev/fhir/Questionnaire/start-back"
SBST_SCORES = frozenset({"91350-9", "91351-7", "91352-5"})
