"""Queries for payments tables. Private to the package: other packages call payments.service."""
