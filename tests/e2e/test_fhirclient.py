"""A third-party FHIR client (SMART's `fhirclient`, from PyPI) drives a real `backpath serve` process.

Create, read, update, history and delete go through the client's own models and server object,
over loopback HTTP, exactly as an application using the library would.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhirclient.client import FHIRClient
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException, FHIRServer

from tests.factories import unique


@pytest.fixture
def fhir_server(live_server: str) -> FHIRServer:
    """The client's server object for the live BackPath process (its CapabilityStatement fetched)."""
    smart = FHIRClient(settings={"app_id": "backpath-tests", "api_base": live_server + "/"})
    # prepare() reads /metadata into fhirclient's CapabilityStatement model: a parse check in itself.
    assert smart.prepare() is True
    assert smart.server is not None
    return smart.server


def _new_patient(identifier: str) -> Patient:
    patient = Patient()
    patient.identifier = [Identifier({"system": "urn:backpath:test", "value": identifier})]
    patient.name = [HumanName({"family": "Jansen", "given": ["Anna"]})]
    patient.active = True
    return patient


def test_fhirclient_reads_the_capability_statement(fhir_server: FHIRServer) -> None:
    """The CapabilityStatement parses with the client's R4 model and says FHIR 4.0.1 over JSON."""
    capability = fhir_server.capabilityStatement
    assert capability.fhirVersion == "4.0.1"
    assert "application/fhir+json" in capability.format
    assert capability.rest[0].mode == "server"


def test_fhirclient_create_read_update_history_delete(fhir_server: FHIRServer) -> None:
    """The whole lifecycle of a Patient through fhirclient: ids, versions and the 410 after delete."""
    identifier = unique("fhirclient")

    created: dict[str, Any] | None = _new_patient(identifier).create(fhir_server)
    # fhirclient returns the response body but does not set the id on the instance it posted.
    assert created is not None and created["resourceType"] == "Patient"
    patient_id = created["id"]
    assert created["meta"]["versionId"] == "1"

    patient = Patient.read(patient_id, fhir_server)
    assert patient.id == patient_id
    assert patient.meta.versionId == "1"
    assert patient.identifier[0].value == identifier
    assert patient.name[0].family == "Jansen"
    assert patient.active is True

    patient.name[0].family = "de Vries"
    patient.gender = "female"
    updated = patient.update()  # PUT through the server the instance was read from
    assert updated is not None and updated["meta"]["versionId"] == "2"

    again = Patient.read(patient_id, fhir_server)
    assert again.meta.versionId == "2"
    assert again.name[0].family == "de Vries"
    assert again.gender == "female"
    assert again.identifier[0].value == identifier

    history = fhir_server.request_json(f"Patient/{patient_id}/_history")
    assert history["resourceType"] == "Bundle" and history["type"] == "history"
    assert history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST"]
    assert history["entry"][1]["resource"]["name"][0]["family"] == "Jansen"

    deleted = again.delete()
    # 204 No Content: fhirclient returns None for an empty body.
    assert deleted is None

    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(patient_id, fhir_server)
    response = gone.value.response
    assert response is not None and response.status_code == 410
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "deleted"

    after = fhir_server.request_json(f"Patient/{patient_id}/_history")
    assert after["total"] == 3
    assert after["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in after["entry"][0]


def test_fhirclient_read_of_unknown_patient_raises_not_found(fhir_server: FHIRServer) -> None:
    """An id never created is a 404 OperationOutcome, which fhirclient turns into FHIRNotFoundException."""
    with pytest.raises(FHIRNotFoundException) as missing:
        Patient.read(unique("never"), fhir_server)
    response = missing.value.response
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["issue"][0]["code"] == "not-found"
