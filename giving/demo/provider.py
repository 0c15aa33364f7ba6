"""A local HTTP server that answers like a payment provider's API, for the real SDKs to call (the demo and tests).

Point the SDK at `server.url` (`[stripe] api_base`, `[gocardless] base_url`), then register answers:

    server.route("POST", r"/v1/checkout/sessions", lambda req: (200, {...}))
    server.route("GET", r"/v1/balance_transactions", {"object": "list", "data": [...], "has_more": False})

Each request is recorded (`server.requests`) with its method, path, query, form or JSON body and headers, so callers
can check what was sent (idempotency keys included). Unmatched requests answer 404 in the provider's error shape.
A rule (`server.rule(...)`) is the provider's own validation, checked before any route: what it refuses is refused
whatever answer a caller registered (GoCardless refusing a subscription on a Bacs billing request, for instance).
It listens on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    json: Any
    headers: dict[str, str]
    match: re.Match[str] | None = None

    def param(self, name: str) -> str | None:
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else None


Answer = Any | Callable[[RecordedRequest], tuple[int, Any]]
# A provider's validation: (status, error body) to refuse the request, None to let the routes answer it.
Rule = Callable[[RecordedRequest], tuple[int, Any] | None]


@dataclass
class FakeProvider:
    host: str = "127.0.0.1"
    routes: list[tuple[str, re.Pattern[str], Answer]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    def route(self, method: str, path_pattern: str, answer: Answer) -> None:
        """Newest registration wins, so a caller can override a default answer."""
        with self._lock:
            self.routes.insert(0, (method.upper(), re.compile(path_pattern + r"$"), answer))

    def rule(self, check: Rule) -> None:
        """A validation the provider applies to every request before any route answers it."""
        with self._lock:
            self.rules.append(check)

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        pattern = re.compile(path_pattern + r"$")
        with self._lock:
            recorded = list(self.requests)
        return [r for r in recorded if r.method == method.upper() and pattern.match(r.path)]

    def start(self) -> FakeProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes: without TCP_NODELAY the body waits ~40 ms for a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                ctype = self.headers.get("content-type", "")
                form: dict[str, list[str]] = {}
                body_json: Any = None
                if raw and "json" in ctype:
                    body_json = json.loads(raw)
                elif raw:
                    form = parse_qs(raw.decode(), keep_blank_values=True)
                request = RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    form=form,
                    json=body_json,
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                with provider._lock:
                    provider.requests.append(request)
                    routes = list(provider.routes)
                    rules = list(provider.rules)
                status, payload = 404, {"error": {"type": "invalid_request_error", "message": f"no route {parts.path}"}}
                refused = next((found for found in (check(request) for check in rules) if found is not None), None)
                if refused is not None:
                    status, payload = refused
                    routes = []
                for method, pattern, answer in routes:
                    match = pattern.match(parts.path)
                    if method == self.command and match:
                        request.match = match
                        status, payload = answer(request) if callable(answer) else (200, answer)
                        break
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", "req_fake")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    # The caller stopped waiting (a test of a provider too slow to answer): nothing to tell it.
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
