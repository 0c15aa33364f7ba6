"""Jobs of payments (dramatiq actors through core.jobs)."""
