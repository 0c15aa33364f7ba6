"""The only module that imports weasyprint."""
