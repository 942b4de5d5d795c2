"""Content loading: the FHIR JSON under plandefinitions/ and fhir_profiles/."""
