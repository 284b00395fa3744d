"""Framework integrations: import the one you use (each needs its extra)."""
