"""Queries for crm tables. Private to the package: other packages call crm.service."""
