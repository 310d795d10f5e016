"""Edge agents: one per location, following the location's desired state from the
controller over HTTP (long poll) and applying it to its own kernel (docs/network.md,
"The control plane and the edges")."""
