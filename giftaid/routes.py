"""HTTP routes of giftaid, mounted by giving.app."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
