"""Receipts and statements: tables are added by the receipts issue."""
