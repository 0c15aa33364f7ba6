"""The web application: `create_app(settings)` composes every package's routes over one runtime."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

import crm.routes
import giftaid.routes
import payments.api
import payments.routes
import receipts.routes
import webhooks.routes
from core import jobs
from core.auth import ApiCredentialsMiddleware, StaffSessionMiddleware
from core.db import make_async_database
from core.errors import AppError
from core.http import (
    JSON,
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    ErrorMiddleware,
    SecurityHeadersMiddleware,
    app_error_handler,
    https_site,
    in_thread,
    rendered,
)
from core.logging import configure_logging
from core.runtime import InlineWorker, Runtime, build_runtime
from core.settings import Settings, feature_warnings, get_settings
from giving import merge, openapi, ops
from giving import worker as worker_root
from giving.crm_wiring import wire_crm
from receipts.render import startup_warnings as render_warnings

log = logging.getLogger("giving.app")

# A request body (webhook, form, JSON) must have fully arrived this long after the headers, or the answer is 408.
BODY_TIMEOUT_SECONDS = 10.0


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime

    def check() -> tuple[dict[str, Any], int]:
        body: dict[str, Any] = {"database": "ok", "broker": "ok", "pending_events": 0, "pending_jobs": 0}
        status = 200
        try:
            with runtime.read_session() as session:
                from webhooks.service import pending_event_count

                ops.bound_probe(session)  # a lock or a slow database: 503 after a few seconds, not a held thread

                body["pending_events"] = pending_event_count(session)
                body["pending_jobs"] = jobs.pending_count(session)
        except sa.exc.SQLAlchemyError:
            body["database"] = "unavailable"
            status = 503
        if not worker_root.broker_reachable(runtime):
            body["broker"] = "unavailable"
        return body, status

    body, status = await in_thread(check)
    return JSON(body, status_code=status)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """The last resort (Starlette's outermost handler), for an error in the middleware outside `ErrorMiddleware`:
    answered like it, in the `{"error", "detail"}` shape. Starlette logs the exception after this answer."""
    return await app_error_handler(request, rendered(exc))


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start_inline_worker: bool = True
) -> Starlette:
    settings = settings or (runtime.settings if runtime else get_settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_logging()
        for warning in [*feature_warnings(settings), *render_warnings()]:
            log.warning(warning)
        worker_root.import_tasks()
        rt = runtime or build_runtime(settings)
        app.state.runtime = rt
        async_database = make_async_database(rt.settings.database)
        if async_database is not None:
            await async_database.open()
        app.state.async_database = async_database
        inline: InlineWorker | None = None
        try:
            # Inside the `try`: a start that fails after the pool opened still closes it (left open, its task kept
            # the server's loop alive after "Application startup failed", serving nothing).
            if rt.inline and start_inline_worker:
                inline = InlineWorker(rt, settings.broker.inline_threads)
                inline.send_pending()  # what the last process's queue held was lost with it
                inline.start()
                app.state.inline_worker = inline
            yield
        finally:
            if inline is not None:
                inline.stop()
            jobs.flush_background_sends()
            if async_database is not None:
                await async_database.close()
            if runtime is None:
                rt.engine.dispose()

    from giving.staff import routes as staff_routes

    wire_crm()

    routes = [
        # First: deliveries are the busiest requests, and Starlette tries routes in order.
        Mount("/webhooks", routes=webhooks.routes.routes),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", ops.metrics_endpoint, methods=["GET"]),
        Route("/api/openapi.json", openapi.openapi_endpoint, methods=["GET"]),
        *payments.routes.routes,
        *payments.api.routes,
        *crm.routes.routes,
        *merge.routes,
        *giftaid.routes.routes,
        *receipts.routes.routes,
        Mount("/staff", routes=staff_routes.routes),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(ops.MetricsMiddleware),
            Middleware(SecurityHeadersMiddleware, hsts=https_site(settings.web)),
            # Errors the middleware below raises (a database lost while reading credentials, a bug), rendered as in
            # an endpoint, with the headers above and counted by their status.
            Middleware(ErrorMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=settings.web.max_body_bytes),
            Middleware(BodyTimeoutMiddleware, seconds=BODY_TIMEOUT_SECONDS),
            Middleware(StaffSessionMiddleware, paths=("/staff",), secure_cookies=https_site(settings.web)),
            Middleware(ApiCredentialsMiddleware, prefix="/api/", open_paths=("/api/openapi.json",)),
        ],
        exception_handlers={
            AppError: app_error_handler,
            StarletteHTTPException: app_error_handler,
            sa.exc.OperationalError: app_error_handler,
            sa.exc.InterfaceError: app_error_handler,
            # The outermost handler (Starlette's ServerErrorMiddleware): errors raised in the middleware above.
            Exception: server_error_handler,
        },
        lifespan=lifespan,
    )


def asgi() -> Starlette:
    """Factory for `uvicorn --factory giving.app:asgi` (one per web process)."""
    app = create_app()
    # Modules and settings live as long as the process: out of the collector's way, a full collection scans only
    # what requests allocate (without this, collections paused the webhook ingest for ~100 ms: bench/webhooks p99).
    gc.collect()
    gc.freeze()
    return app
