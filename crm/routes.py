"""HTTP routes of crm, mounted by giving.app."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
