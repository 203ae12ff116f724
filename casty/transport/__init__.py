"""Transport layer: local routing, the envelope wire format, TCP and remote routing."""
