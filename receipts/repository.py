"""Queries for receipts tables. Private to the package: other packages call receipts.service."""
