"""Sub-commands of `giving`, one file per area."""
