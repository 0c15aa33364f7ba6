"""Jobs of receipts (dramatiq actors through core.jobs)."""
