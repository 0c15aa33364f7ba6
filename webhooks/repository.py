"""Queries for webhooks tables. Private to the package: other packages call webhooks.service."""
