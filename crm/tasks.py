"""Jobs of crm (dramatiq actors through core.jobs)."""
