"""Pure decisions of the operator: no I/O here, everything unit-tested without a cluster."""
