"""A GovTalk client for HMRC's Transaction Engine (giftaid.md §3.1): submit, poll, delete, list.

The conversation: `submit` (Qualifier request) is answered with an acknowledgement carrying a CorrelationID, a
ResponseEndPoint and a PollInterval; `poll` with that CorrelationID until the answer is a `response` (success, with
HMRC's IRmark receipt) or an `error` (GovTalkErrors, and for business errors Body/ErrorResponse/Error, each with an
XPath `Location` such as `.../r68:GAD[2]/r68:Donor[1]/r68:Sur[1]`); then `delete` to clear HMRC's copy.
`list` (a data request for the submissions of the charity's CHARID key) recovers correlation ids. The endpoint is
`[hmrc] gateway_url`; the credentials are added here, in memory, and never written to a file or kept in the
database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from lxml import etree

from giftaid.xml import GOVTALK_NS, MESSAGE_CLASS, PRODUCT, PRODUCT_VERSION

NS = {"gt": GOVTALK_NS}
_SENDER_DETAILS = b"<SenderDetails></SenderDetails>"
_GAD_INDEX = re.compile(r"GAD\[(\d+)\]")
REDACTED = "********"
# Messages larger than this are streamed from disk (with their Content-Length) rather than read into memory.
STREAM_ABOVE = 20_000_000


class GatewayError(Exception):
    """The gateway could not be reached, or answered with something that is not GovTalk.

    `delivered` is False only when nothing reached the gateway (the connection was never made): otherwise HMRC may
    hold what was sent, and sending it again may make a second claim. `sent` (credentials removed) and `received`
    are the messages, for the claim's record."""

    def __init__(self, detail: str, *, delivered: bool = True, sent: bytes = b"", received: bytes = b"") -> None:
        super().__init__(detail)
        self.delivered = delivered
        self.sent = sent
        self.received = received


@dataclass(frozen=True)
class GovTalkError:
    raised_by: str
    number: int | None
    type: str
    text: str
    location: str = ""

    @property
    def gad_index(self) -> int | None:
        """The 1-based GAD the error is about, from its XPath location."""
        match = _GAD_INDEX.search(self.location)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class StatusRecord:
    timestamp: str
    correlation_id: str
    transaction_id: str
    status: str


@dataclass
class Reply:
    qualifier: str
    function: str
    correlation_id: str
    raw: bytes
    poll_interval: int | None = None
    response_endpoint: str | None = None
    errors: list[GovTalkError] = field(default_factory=list)
    receipt: str = ""
    status_records: list[StatusRecord] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """HMRC's success response (warnings do not fail it)."""
        return self.qualifier == "response" and all(error.type == "warning" for error in self.errors)

    @property
    def rejected(self) -> bool:
        """HMRC judged the document and refused it: a business or fatal error raised by HMRC's systems (ChRIS, the
        department), not by the gateway. A gateway error on a poll (authentication, an unknown correlation id) or a
        recoverable error says nothing about the claim, which HMRC may still accept."""
        return self.qualifier == "error" and any(
            error.type in ("business", "fatal") and error.raised_by != "Gateway" for error in self.errors
        )

    @property
    def pending(self) -> bool:
        return self.qualifier == "acknowledgement"


def parse_reply(raw: bytes) -> Reply:
    try:
        root = etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise GatewayError(f"the gateway answered with something that is not XML: {exc}") from exc
    if etree.QName(root).localname != "GovTalkMessage":
        raise GatewayError("the gateway's answer is not a GovTalk message")

    def first(path: str) -> str:
        found = root.find(path, NS)
        return (found.text or "").strip() if found is not None else ""

    details = "gt:Header/gt:MessageDetails/"
    endpoint = root.find(details + "gt:ResponseEndPoint", NS)
    reply = Reply(
        qualifier=first(details + "gt:Qualifier"),
        function=first(details + "gt:Function"),
        correlation_id=first(details + "gt:CorrelationID"),
        raw=raw,
        response_endpoint=(endpoint.text or "").strip() or None if endpoint is not None else None,
        poll_interval=_poll_interval(endpoint),
    )
    # GovTalkErrors, and a business error's details in the Body (any namespace).
    for error in root.findall("gt:GovTalkDetails/gt:GovTalkErrors/gt:Error", NS) + root.findall(
        "gt:Body//{*}ErrorResponse/{*}Error", NS
    ):
        reply.errors.append(_error(error))
    receipt = root.find("gt:Body//{*}IRmarkReceipt", NS)
    if receipt is not None:
        reply.receipt = " ".join(" ".join(receipt.itertext()).split())
    for record in root.findall("gt:Body//{*}StatusRecord", NS):
        values = {etree.QName(child).localname: (child.text or "").strip() for child in record}
        reply.status_records.append(
            StatusRecord(
                values.get("TimeStamp", ""),
                values.get("CorrelationID", ""),
                values.get("TransactionID", ""),
                values.get("Status", ""),
            )
        )
    return reply


def _poll_interval(endpoint: etree._Element | None) -> int | None:
    """HMRC's PollInterval in seconds; None when absent or unreadable. An acknowledgement with an odd interval is
    still HMRC's receipt of the claim: refusing it would leave the claim to be sent again."""
    if endpoint is None:
        return None
    raw = (endpoint.get("PollInterval") or "").strip()
    return int(raw) if raw.isdigit() and len(raw) <= 6 else None


def _error(node: etree._Element) -> GovTalkError:
    def child(name: str) -> str:
        found = node.find(f"{{*}}{name}")
        return (found.text or "").strip() if found is not None else ""

    number = child("Number")
    return GovTalkError(
        raised_by=child("RaisedBy"),
        number=int(number) if number.isdigit() else None,
        type=child("Type"),
        text=" ".join((t.text or "").strip() for t in node.findall("{*}Text") if t.text),
        location=child("Location"),
    )


_AUTHENTICATION_VALUE = re.compile(rb"(<Authentication>.*?<Value>).*?(</Value>)", re.DOTALL)


def redact(message: bytes, password: str) -> bytes:
    """A message fit to keep: the password replaced, whatever it is and however it was escaped in the XML (the
    first `Authentication` element's `Value`, in the header)."""
    if not password:
        return message
    return _AUTHENTICATION_VALUE.sub(rb"\g<1>" + REDACTED.encode() + rb"\g<2>", message, count=1)


@dataclass
class GovTalkClient:
    gateway_url: str
    sender_id: str
    password: str
    vendor_id: str = "0000"
    test_mode: bool = True
    timeout: float = 60.0
    transport: httpx.BaseTransport | None = None
    # The charity's HMRC reference (`[charity] hmrc_reference`): the CHARID key a `list` asks about.
    charity_reference: str = ""

    def _credentials(self) -> bytes:
        from giftaid.xml import text

        return (
            "<SenderDetails><IDAuthentication>"
            f"<SenderID>{text(self.sender_id)}</SenderID>"
            "<Authentication><Method>clear</Method><Role>principal</Role>"
            f"<Value>{text(self.password)}</Value></Authentication>"
            "</IDAuthentication></SenderDetails>"
        ).encode()

    def _post(self, url: str, body: bytes | Iterator[bytes], length: int | None = None) -> bytes:
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if length is not None:
            # A streamed body with its length given, rather than chunked.
            headers["Content-Length"] = str(length)
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as http:
                response = http.post(url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise GatewayError(f"could not reach the HMRC gateway at {url}: {exc}", delivered=False) from exc
        except httpx.HTTPError as exc:
            # Sent, or partly sent, and no answer (a read timeout, a dropped connection): HMRC may have it.
            raise GatewayError(f"no answer from the HMRC gateway at {url}: {exc}") from exc
        if response.status_code >= 500:
            raise GatewayError(f"the HMRC gateway answered {response.status_code}", received=response.content)
        return response.content

    def _exchange(
        self, url: str, body: bytes | Iterator[bytes], kept: bytes, length: int | None = None
    ) -> tuple[bytes, Reply]:
        """Post and parse; a GatewayError carries what was sent (as kept) and anything that came back."""
        raw = b""
        try:
            raw = self._post(url, body, length)
            return kept, parse_reply(raw)
        except GatewayError as exc:
            exc.sent, exc.received = kept, exc.received or raw
            raise

    def _request(self, qualifier: str, function: str, correlation_id: str = "", keys: str = "") -> bytes:
        from giftaid.xml import text

        test = "<GatewayTest>1</GatewayTest>" if self.test_mode else ""
        return (
            "<?xml version='1.0' encoding='UTF-8'?>"
            f'<GovTalkMessage xmlns="{GOVTALK_NS}"><EnvelopeVersion>2.0</EnvelopeVersion>'
            f"<Header><MessageDetails><Class>{MESSAGE_CLASS}</Class><Qualifier>{qualifier}</Qualifier>"
            f"<Function>{function}</Function><CorrelationID>{text(correlation_id)}</CorrelationID>"
            f"<Transformation>XML</Transformation>{test}</MessageDetails>"
            f"{self._credentials().decode()}</Header>"
            f"<GovTalkDetails>{keys}</GovTalkDetails><Body></Body></GovTalkMessage>"
        ).encode()

    def prepare(self, message: Path) -> Iterator[bytes]:
        """The claim message as sent: our file with the credentials put in its empty SenderDetails (outside the
        Body, so the IRmark is unchanged), streamed from disk."""
        with message.open("rb") as source:
            head = source.read(8192)
            while _SENDER_DETAILS not in head and len(head) < 65536:
                more = source.read(8192)
                if not more:
                    break
                head += more
            if _SENDER_DETAILS not in head:
                raise ValueError(f"{message} has no empty SenderDetails for the credentials")
            yield head.replace(_SENDER_DETAILS, self._credentials(), 1)
            while chunk := source.read(1 << 20):
                yield chunk

    def submit(self, message: Path) -> tuple[bytes, Reply]:
        """Send a claim message; returns (what was sent, credentials removed) and the acknowledgement."""
        size = message.stat().st_size
        if size < STREAM_ABOVE:
            sent = b"".join(self.prepare(message))
            return self._exchange(self.gateway_url, sent, redact(sent, self.password))
        # A large claim is streamed from disk; what we keep is our file (it has no credentials).
        length = size - len(_SENDER_DETAILS) + len(self._credentials())
        return self._exchange(self.gateway_url, self.prepare(message), message.read_bytes(), length)

    def poll(self, correlation_id: str, response_endpoint: str | None = None) -> tuple[bytes, Reply]:
        request = self._request("poll", "submit", correlation_id)
        return self._exchange(response_endpoint or self.gateway_url, request, redact(request, self.password))

    def delete(self, correlation_id: str, response_endpoint: str | None = None) -> tuple[bytes, Reply]:
        request = self._request("request", "delete", correlation_id)
        return self._exchange(response_endpoint or self.gateway_url, request, redact(request, self.password))

    def list(self, response_endpoint: str | None = None) -> tuple[bytes, Reply]:
        """HMRC's status records of our submissions. A data request names them by the keys they were submitted
        with (the CHARID, as in the claim's GovTalkDetails), with the same target and channel."""
        from giftaid.xml import text

        keys = (
            f'<Keys><Key Type="CHARID">{text(self.charity_reference)}</Key></Keys>'
            "<TargetDetails><Organisation>IR</Organisation></TargetDetails>"
            f"<ChannelRouting><Channel><URI>{text(self.vendor_id)}</URI><Product>{PRODUCT}</Product>"
            f"<Version>{PRODUCT_VERSION}</Version></Channel></ChannelRouting>"
        )
        request = self._request("request", "list", keys=keys)
        return self._exchange(response_endpoint or self.gateway_url, request, redact(request, self.password))
