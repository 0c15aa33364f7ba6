"""Jobs of webhooks (dramatiq actors through core.jobs)."""
