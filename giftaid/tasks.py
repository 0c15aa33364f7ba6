"""Jobs of giftaid (dramatiq actors through core.jobs)."""
