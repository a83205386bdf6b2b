"""Names and formats that two processes must agree on, each defined once (docs/layout.md)."""
