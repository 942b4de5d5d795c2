"""SDC for Questionnaires, pure: scoring, enablement, validation, $extract and $populate.

Every rule lives in the Questionnaire JSON (calculatedExpression, variable, enableWhen, itemWeight,
observationExtract, ...); this package only interprets the SDC and core extensions, evaluating
every expression through `app.fhir.fhirpath`. No I/O: the services hand in what they fetched.
"""
