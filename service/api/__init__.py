"""HTTP routes, thin: validate, hand off, answer."""
