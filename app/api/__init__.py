"""HTTP only: routes, request parsing, headers, status codes."""
