"""HTTP routes of payments, mounted by giving.app."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
