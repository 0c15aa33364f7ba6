"""HTTP routes of webhooks, mounted by giving.app."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
