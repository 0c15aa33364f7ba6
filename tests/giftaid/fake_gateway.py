"""A local HTTP server that answers like HMRC's Transaction Engine (GovTalk, giftaid.md §3.1), for the submission
client: acknowledgement with a CorrelationID and PollInterval, then on poll either HMRC's IRmark receipt, a
business error whose Location is an XPath to a GAD, or a recoverable error; delete (of a submission it no longer
holds: HMRC's "unknown CorrelationID") and list (of the charity named by the request's CHARID key);
authentication failure (1046).

It checks what a real gateway checks first: the credentials, the message class, and that the IRmark is right.
Every request is kept (`requests`), so tests can see what was sent. `down_for` names functions it answers with a
503 page, doing nothing (a delete that never happened)."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from core.settings import Settings
from giftaid.xml import GOVTALK_NS, irmark_of, submission_reference
from tests.fixtures.app import make_settings

SENDER_ID = "323412300001"
PASSWORD = "testing1"


@dataclass
class Submission:
    correlation_id: str
    document: bytes
    irmark: str
    charity: str = ""  # the CHARID key it was sent under
    polls: int = 0


@dataclass
class FakeGateway:
    # What the next poll of a submission answers: "success", "business_error" or "recoverable_error".
    outcome: str = "success"
    # Polls answered "still working" before the outcome.
    pending_polls: int = 0
    poll_interval: int = 1
    error_gad: int = 1
    error_number: int = 7040
    error_text: str = "Gift Aid donation date cannot be in the future"
    requests: list[bytes] = field(default_factory=list)
    submissions: dict[str, Submission] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    # Rewrites (or delays) the answer to a request: (request, HMRC's answer) -> what is sent back.
    hook: Callable[[bytes, bytes], bytes] | None = None
    # Functions (submit, delete, list) answered with a 503 page while listed: nothing is done.
    down_for: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/submission"

    # --- replies -----------------------------------------------------------------------------------------------------

    def _reply(
        self,
        qualifier: str,
        function: str,
        correlation_id: str = "",
        *,
        poll: bool = False,
        errors: str = "",
        body: str = "",
    ) -> bytes:
        endpoint = (
            f'<ResponseEndPoint PollInterval="{self.poll_interval}">{escape(self.url)}/poll</ResponseEndPoint>'
            if poll
            else ""
        )
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><GovTalkMessage xmlns="{GOVTALK_NS}">'
            "<EnvelopeVersion>2.0</EnvelopeVersion><Header><MessageDetails>"
            f"<Class>HMRC-CHAR-CLM</Class><Qualifier>{qualifier}</Qualifier><Function>{function}</Function>"
            f"<CorrelationID>{correlation_id}</CorrelationID>{endpoint}"
            "<GatewayTimestamp>2025-11-01T10:10:10.000</GatewayTimestamp>"
            "</MessageDetails><SenderDetails/></Header>"
            f"<GovTalkDetails><Keys/>{errors}</GovTalkDetails><Body>{body}</Body></GovTalkMessage>"
        ).encode()

    def _error(self, raised_by: str, number: int, kind: str, text: str, location: str = "") -> str:
        where = f"<Location>{escape(location)}</Location>" if location else ""
        return (
            f"<Error><RaisedBy>{raised_by}</RaisedBy><Number>{number}</Number><Type>{kind}</Type>"
            f"<Text>{escape(text)}</Text>{where}</Error>"
        )

    def answer(self, raw: bytes) -> bytes:
        self.requests.append(raw)
        root = etree.fromstring(raw)

        def value(path: str) -> str:
            return (root.findtext(path, namespaces={"g": GOVTALK_NS}) or "").strip()

        qualifier = value("g:Header/g:MessageDetails/g:Qualifier")
        function = value("g:Header/g:MessageDetails/g:Function")
        correlation_id = value("g:Header/g:MessageDetails/g:CorrelationID")
        charity = value("g:GovTalkDetails/g:Keys/g:Key[@Type='CHARID']")
        sender = value("g:Header/g:SenderDetails/g:IDAuthentication/g:SenderID")
        password = value("g:Header/g:SenderDetails/g:IDAuthentication/g:Authentication/g:Value")
        if (sender, password) != (SENDER_ID, PASSWORD):
            errors = (
                "<GovTalkErrors>" + self._error("Gateway", 1046, "fatal", "Authentication Failure") + "</GovTalkErrors>"
            )
            return self._reply("error", function, correlation_id, errors=errors)
        if value("g:Header/g:MessageDetails/g:Class") != "HMRC-CHAR-CLM":
            errors = "<GovTalkErrors>" + self._error("Gateway", 1002, "fatal", "Unknown class") + "</GovTalkErrors>"
            return self._reply("error", function, correlation_id, errors=errors)
        if qualifier == "request" and function == "submit":
            stated = (root.findtext(".//{*}IRmark") or "").strip()
            if irmark_of(raw) != stated:
                errors = (
                    "<GovTalkErrors>" + self._error("ChRIS", 2021, "fatal", "IRmark incorrect") + "</GovTalkErrors>"
                )
                return self._reply("error", function, errors=errors)
            new_id = uuid.uuid4().hex.upper()
            self.submissions[new_id] = Submission(new_id, raw, stated, charity)
            return self._reply("acknowledgement", function, new_id, poll=True)
        if qualifier == "poll":
            submission = self.submissions.get(correlation_id)
            if submission is None:
                errors = (
                    "<GovTalkErrors>"
                    + self._error("Gateway", 2000, "fatal", "Unknown CorrelationID")
                    + "</GovTalkErrors>"
                )
                return self._reply("error", function, correlation_id, errors=errors)
            submission.polls += 1
            if submission.polls <= self.pending_polls:
                return self._reply("acknowledgement", function, correlation_id, poll=True)
            if self.outcome == "success":
                receipt = (
                    '<SuccessResponse xmlns="http://www.inlandrevenue.gov.uk/SuccessResponse">'
                    '<IRmarkReceipt><Message code="0000">HMRC has received the HMRC-CHAR-CLM document ref: AB12345 '
                    "at 10.10 on 01/11/2025. The associated IRmark was: "
                    f"{submission_reference(submission.irmark)}. We strongly recommend that you keep this "
                    "receipt electronically.</Message></IRmarkReceipt>"
                    '<Message code="077001">Thank you for your submission</Message></SuccessResponse>'
                )
                return self._reply("response", function, correlation_id, poll=True, body=receipt)
            if self.outcome == "recoverable_error":
                errors = (
                    "<GovTalkErrors>"
                    + self._error("Department", 3000, "recoverable", "The service is busy: please try again later")
                    + "</GovTalkErrors>"
                )
                return self._reply("error", function, correlation_id, errors=errors)
            location = (
                "/hd:GovTalkMessage[1]/hd:Body[1]/r68:IRenvelope[1]/r68:R68[1]/r68:Claim[1]/r68:Repayment[1]/"
                f"r68:GAD[{self.error_gad}]/r68:Date[1]"
            )
            errors = (
                "<GovTalkErrors>"
                + self._error("ChRIS", 3001, "business", "Your submission failed due to business validation errors.")
                + "</GovTalkErrors>"
            )
            body = (
                '<ErrorResponse xmlns="http://www.govtalk.gov.uk/CM/errorresponse" SchemaVersion="2.0">'
                '<Application xmlns:ns="urn:x"/>'
                + self._error("ChRIS", self.error_number, "business", self.error_text, location)
                + "</ErrorResponse>"
            )
            return self._reply("error", function, correlation_id, errors=errors, body=body)
        if qualifier == "request" and function == "delete":
            if self.submissions.pop(correlation_id, None) is None:
                errors = (
                    "<GovTalkErrors>"
                    + self._error("Gateway", 2000, "fatal", "Unknown CorrelationID")
                    + "</GovTalkErrors>"
                )
                return self._reply("error", function, correlation_id, errors=errors)
            self.deleted.append(correlation_id)
            return self._reply("response", function, correlation_id)
        if qualifier == "request" and function == "list":
            # A data request lists the submissions of the keys it gives (the charity's CHARID, as submitted).
            if not charity:
                errors = (
                    "<GovTalkErrors>"
                    + self._error("Gateway", 1001, "fatal", "The keys of the data request are missing")
                    + "</GovTalkErrors>"
                )
                return self._reply("error", function, errors=errors)
            records = "".join(
                "<StatusRecord><TimeStamp>01/11/2025 10:10:10</TimeStamp>"
                f"<CorrelationID>{s.correlation_id}</CorrelationID><TransactionID></TransactionID>"
                "<Status>SUBMISSION_ACKNOWLEDGEMENT</Status></StatusRecord>"
                for s in self.submissions.values()
                if s.charity == charity
            )
            body = f'<StatusReport xmlns="http://www.govtalk.gov.uk/CM/statusreport">{records}</StatusReport>'
            return self._reply("response", function, body=body)
        errors = "<GovTalkErrors>" + self._error("Gateway", 1000, "fatal", "Unexpected request") + "</GovTalkErrors>"
        return self._reply("error", function, correlation_id, errors=errors)

    # --- the server --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                function = re.search(rb"<Function>(\w+)</Function>", raw)
                if function is not None and function.group(1).decode() in gateway.down_for:
                    gateway.requests.append(raw)
                    page = b"<html><body>503 Service Unavailable</body></html>"
                    self.send_response(503)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                answer = gateway.answer(raw)
                if gateway.hook is not None:
                    answer = gateway.hook(raw, answer)
                self.send_response(200)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Any, gateway: FakeGateway) -> Settings:
    """The test settings with `[hmrc]` pointing at the fake gateway (import it with `gateway` to use it)."""
    return make_settings(
        database_url,
        tmp_path,
        hmrc={"gateway_url": gateway.url, "sender_id": SENDER_ID, "password": PASSWORD, "vendor_id": "1234"},
    )
