"""Access control and the audit trail as pure domain code: SMART scopes, the Patient compartment per token, bearer-token and backend-client checks, BALP AuditEvents."""
