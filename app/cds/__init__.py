"""CDS Hooks 2.0.1 (https://cds-hooks.hl7.org/2.0/): service definitions, prefetch templates, the
hook request and feedback, the cards made from a pathway `$apply` result, and the checks of the CDS
client's JWT. Pure code: the service layer (`app.services.cds`) fetches the data and applies the plan.
"""
