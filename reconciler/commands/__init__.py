"""CLI verbs, one module per group; each module exposes `register(app)`."""
