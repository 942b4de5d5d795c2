"""Pure FHIR domain code: models, outcomes, bundles, search parameters. No I/O."""
