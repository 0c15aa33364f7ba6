"""Staff pages under /staff."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
