"""HTTP routes of receipts, mounted by giving.app."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
