"""HTTP only: routes, dependencies, problem+json, request ids, access logging."""
