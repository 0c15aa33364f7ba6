"""Staff JSON API of payments (payouts, orders, stock), mounted by giving.app."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
