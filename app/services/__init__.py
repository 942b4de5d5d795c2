"""Use cases: one function per FHIR interaction or operation; each owns its transaction."""
