"""PlanDefinition and ActivityDefinition `$apply`: pure domain code working on plain resources.

The service layer gathers the subject's data and the knowledge artifacts; this package never
touches storage, so it runs the same in the FHIR operations, in CDS Hooks and in tests.
"""
