"""Queries for giftaid tables. Private to the package: other packages call giftaid.service."""
