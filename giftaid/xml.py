"""The Charities Online claim message (GovTalk `HMRC-CHAR-CLM` carrying an R68 v2 `IRenvelope`) and its IRmark.

`write_message` streams the message: the Body is written in W3C canonical form (inclusive C14N 1.0) as it goes, and
the same bytes, less the IRmark element and with the Body's inherited namespace declared, feed a SHA-1. The IRmark is
written as a placeholder and patched in at the end, so a claim of 500,000 lines never sits in memory.
HMRC's recipe (giftaid.md §3.4): canonicalise Body without IRmark, SHA-1, base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, NamedTuple

from anyascii import anyascii
from lxml import etree

from core.clock import UK, utc_now
from core.settings import Settings
from crm.validation import UK_POSTCODE
from giftaid.sendable import blank, sendable

GOVTALK_NS = "http://www.govtalk.gov.uk/CM/envelope"
R68_NS = "http://www.govtalk.gov.uk/taxation/charities/r68/2"
MESSAGE_CLASS = "HMRC-CHAR-CLM"
MAX_GAD_PER_MESSAGE = 500_000  # HMRC rule 7036
IRMARK_PLACEHOLDER = "=" * 28  # a SHA-1 in base64 is 28 characters
PRODUCT = "Giving"
PRODUCT_VERSION = "0.1.0"
CHUNK_LINES = 2_000


class Line(NamedTuple):
    """One GAD: a donor's gift, or several small gifts aggregated (`aggregated` holds the description)."""

    title: str | None
    first_name: str
    last_name: str
    house: str
    postcode: str
    overseas: bool
    aggregated: str | None
    date: dt.date
    total: int  # pence


@dataclass(frozen=True)
class Charity:
    """The claimant, from `[charity]` and `[hmrc]` settings."""

    name: str
    hmrc_reference: str
    regulator: str  # CCEW | CCNI | OSCR | none | other
    registration_number: str
    official_first_name: str
    official_last_name: str
    official_postcode: str
    official_phone: str
    vendor_id: str
    test_mode: bool
    other_regulator: str = ""  # the regulator's name when `regulator` is "other"

    @classmethod
    def from_settings(cls, settings: Settings) -> Charity:
        charity, hmrc = settings.charity, settings.hmrc
        return cls(
            name=charity.name,
            hmrc_reference=charity.hmrc_reference,
            regulator=charity.regulator,
            registration_number=charity.registration_number,
            official_first_name=charity.authorised_official_first_name,
            official_last_name=charity.authorised_official_last_name,
            official_postcode=charity.postcode,
            official_phone=charity.authorised_official_phone,
            vendor_id=hmrc.vendor_id,
            test_mode=hmrc.test_mode,
            other_regulator=charity.other_regulator,
        )


@dataclass
class MessageResult:
    irmark: str
    lines: int
    total: int
    # 1-based GAD index → the line's position in the claim (to map HMRC's errors back).
    first_line: int = 1
    earliest: dt.date | None = None
    bytes_written: int = 0
    submission_reference: str = field(default="")


# --- canonical text ---------------------------------------------------------------------------------------------------

_NEEDS_ESCAPE = re.compile(r"[&<>\r]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def text(value: str) -> str:
    """Character data as C14N writes it (& < > and CR escaped); characters XML forbids are dropped."""
    if _CONTROL.search(value):
        value = _CONTROL.sub("", value)
    if not _NEEDS_ESCAPE.search(value):
        return value
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")


def money(pence: int) -> str:
    """`1234.50`: HMRC's r68_IRmonetaryType, never a thousands separator or a £."""
    sign = "-" if pence < 0 else ""
    pence = abs(pence)
    return f"{sign}{pence // 100}.{pence % 100:02d}"


def element(name: str, value: str) -> str:
    return f"<{name}>{text(value)}</{name}>"


# The authorised official comes from `[charity]` settings, written as people write them; HMRC's schema takes them
# only in its own form (`r68_NameStructure`, `r68_PostCodeType`, `r68_TelephoneNumberType`), and one that does not
# fit fails the whole message at HMRC, past our own checks. Each is put into that form, meaning unchanged.
_FORE_MAX, _SUR_MAX, _PHONE_MAX = 35, 35, 30


def official_forenames(value: str) -> list[str]:
    """At most two `Fore` (the schema's limit), each `[A-Za-z][A-Za-z'-]*` of at most 35: a name of two words is
    two forenames ("Mary Ann"), not one run together; another script is transliterated ("Иван" is "Ivan")."""
    words = (re.sub(r"[^A-Za-z'\-]", "", word).lstrip("'-") for word in anyascii(value).split())
    return [word[:_FORE_MAX] for word in words if word][:2]


def official_surname(value: str) -> str:
    """`Sur`: `[A-Za-z0-9 ,.()/&'-]`, at most 35, spaces kept ("de la Cruz")."""
    kept = re.sub(r"[^A-Za-z0-9 ,.()/&'\-]", "", " ".join(anyascii(value).split()))
    return " ".join(kept.split())[:_SUR_MAX].rstrip()


def official_postcode(value: str) -> str:
    """A UK postcode in upper case with one space, as HMRC's pattern wants ("ct161aa" is "CT16 1AA"); any other
    value as given (upper case, trimmed)."""
    compact = "".join(value.split()).upper()
    spaced = f"{compact[:-3]} {compact[-3:]}"
    return spaced if UK_POSTCODE.fullmatch(spaced) else " ".join(value.split()).upper()


def official_phone(value: str) -> str:
    """Digits, spaces, brackets and hyphens, at most 30: +44 (0)1304 ... is 01304 ..., another + is 00 (the same
    number dialled from the UK); any other character (".", "ext") is dropped."""
    text = re.sub(r"^\s*\+\s*44\s*(?:\(\s*0\s*\)\s*)?", "0", value)
    text = re.sub(r"^\s*\+", "00", text)
    return " ".join(re.sub(r"[^0-9()\- ]", " ", text).split())[:_PHONE_MAX].rstrip()


# --- the message ----------------------------------------------------------------------------------------------------


def _header(charity: Charity, timestamp: dt.datetime) -> str:
    test = "<GatewayTest>1</GatewayTest>" if charity.test_mode else ""
    stamp = timestamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f'<GovTalkMessage xmlns="{GOVTALK_NS}">'
        "<EnvelopeVersion>2.0</EnvelopeVersion>"
        "<Header><MessageDetails>"
        f"<Class>{MESSAGE_CLASS}</Class><Qualifier>request</Qualifier><Function>submit</Function>"
        "<CorrelationID></CorrelationID><Transformation>XML</Transformation>"
        f"{test}<GatewayTimestamp>{stamp}</GatewayTimestamp>"
        "</MessageDetails>"
        # Credentials are added by the submission client, never written to a file.
        "<SenderDetails></SenderDetails></Header>"
        "<GovTalkDetails>"
        f'<Keys><Key Type="CHARID">{text(charity.hmrc_reference)}</Key></Keys>'
        "<TargetDetails><Organisation>IR</Organisation></TargetDetails>"
        f"<ChannelRouting><Channel><URI>{text(charity.vendor_id)}</URI><Product>{PRODUCT}</Product>"
        f"<Version>{PRODUCT_VERSION}</Version></Channel></ChannelRouting>"
        "</GovTalkDetails>"
    )


def _regulator(charity: Charity) -> str:
    # Rules 7029/7033: a CH/CF reference has no regulator (NoReg); otherwise a regulator is required.
    if charity.hmrc_reference.startswith(("CH", "CF")) or charity.regulator == "none":
        return "<Regulator><NoReg>yes</NoReg></Regulator>"
    if charity.regulator == "other":
        name = f"<OtherReg>{text(charity.other_regulator)}</OtherReg>"
    else:
        name = f"<RegName>{charity.regulator}</RegName>"
    number = element("RegNo", charity.registration_number) if charity.registration_number else ""
    return f"<Regulator>{name}{number}</Regulator>"


def _irenvelope_start(charity: Charity, period_end: dt.date) -> tuple[str, str]:
    """The IRenvelope up to the IRmark's value, and from after it to the first GAD."""
    before = (
        f'<IRenvelope xmlns="{R68_NS}"><IRheader>'
        f'<Keys><Key Type="CHARID">{text(charity.hmrc_reference)}</Key></Keys>'
        f"<PeriodEnd>{period_end.isoformat()}</PeriodEnd><DefaultCurrency>GBP</DefaultCurrency>"
    )
    forenames = official_forenames(charity.official_first_name) or ["Official"]
    official = (
        "<OffName>"
        + "".join(element("Fore", name) for name in forenames)
        + element("Sur", official_surname(charity.official_last_name) or "Official")
        + "</OffName>"
    )
    after = (
        "<Sender>Individual</Sender></IRheader><R68>"
        f"<AuthOfficial>{official}<OffID>{element('Postcode', official_postcode(charity.official_postcode))}</OffID>"
        f"{element('Phone', official_phone(charity.official_phone))}</AuthOfficial>"
        "<Declaration>yes</Declaration>"
        f"<Claim>{element('OrgName', charity.name)}{element('HMRCref', charity.hmrc_reference)}"
        f"{_regulator(charity)}<Repayment>"
    )
    return before, after


def gad(line: Line) -> str:
    if line.aggregated is not None:
        who = element("AggDonation", line.aggregated)
    else:
        # The donor's details as HMRC can take them (giftaid.sendable), as the database renders them.
        title = "" if blank(line.title) else element("Ttl", sendable(line.title or ""))
        where = "<Overseas>yes</Overseas>" if line.overseas else element("Postcode", sendable(line.postcode))
        who = (
            f"<Donor>{title}{element('Fore', sendable(line.first_name))}{element('Sur', sendable(line.last_name))}"
            f"{element('House', sendable(line.house))}{where}</Donor>"
        )
    return f"<GAD>{who}<Date>{line.date.isoformat()}</Date><Total>{money(line.total)}</Total></GAD>"


def write_message(
    out: IO[bytes],
    charity: Charity,
    lines: Iterable[Line] = (),
    *,
    earliest: dt.date,
    period_end: dt.date,
    adjustment: int = 0,
    other_info: str = "",
    timestamp: dt.datetime | None = None,
    gad_chunks: Iterable[tuple[bytes, int]] | None = None,
) -> MessageResult:
    """Write one GovTalk message to a seekable binary stream; returns its IRmark (base64 SHA-1).

    The donation lines come as `Line`s, or already rendered (`gad_chunks`: runs of canonical `<GAD>` elements,
    UTF-8 encoded, e.g. by the database, each with how many lines it holds)."""
    if adjustment and not other_info:
        raise ValueError("an Adjustment needs OtherInfo explaining it (HMRC rule 7059)")
    digest = hashlib.sha1(usedforsecurity=False)
    start = out.tell()

    def emit(chunk: str, *, hashed: bool = True) -> None:
        data = chunk.encode("utf-8")
        out.write(data)
        if hashed:
            digest.update(data)

    out.write(_header(charity, timestamp or utc_now()).encode("utf-8"))
    # As sent the Body inherits the GovTalk namespace; on its own (canonical form) it declares it.
    out.write(b"<Body>")
    digest.update(f'<Body xmlns="{GOVTALK_NS}">'.encode())
    before, after = _irenvelope_start(charity, period_end)
    emit(before)
    out.write(b'<IRmark Type="generic">')
    irmark_at = out.tell()
    out.write(IRMARK_PLACEHOLDER.encode() + b"</IRmark>")
    emit(after)

    count = 0
    total = 0
    buffer: list[str] = []
    if gad_chunks is None:
        for line in lines:
            buffer.append(gad(line))
            count += 1
            total += line.total
            if len(buffer) >= CHUNK_LINES:
                emit("".join(buffer))
                buffer.clear()
    else:
        for data, n in gad_chunks:
            out.write(data)
            digest.update(data)
            count += n
    if buffer:
        emit("".join(buffer))
    if count > MAX_GAD_PER_MESSAGE:
        raise ValueError(f"{count} GAD lines in one message; HMRC takes at most {MAX_GAD_PER_MESSAGE}")
    tail = f"<EarliestGAdate>{earliest.isoformat()}</EarliestGAdate>"
    if adjustment:
        tail += f"<Adjustment>{money(adjustment)}</Adjustment>"
    tail += "</Repayment>"
    if other_info:
        tail += element("OtherInfo", other_info[:350])
    tail += "</Claim></R68></IRenvelope></Body>"
    emit(tail)
    out.write(b"</GovTalkMessage>")
    end = out.tell()

    irmark = base64.b64encode(digest.digest()).decode()
    out.seek(irmark_at)
    out.write(irmark.encode())
    out.seek(end)
    return MessageResult(
        irmark=irmark,
        lines=count,
        total=total,
        earliest=earliest,
        bytes_written=end - start,
        submission_reference=base64.b32encode(digest.digest()).decode().rstrip("="),
    )


# --- checking messages (ours and HMRC's samples) --------------------------------------------------------------------


def irmark_of(document: bytes) -> str:
    """The IRmark of a whole GovTalk message, recomputed the reference way (lxml): Body, less IRmark, inclusive C14N,
    SHA-1, base64. For checking, not for writing (it holds the document in memory)."""
    root = etree.fromstring(document, parser=etree.XMLParser(resolve_entities=False, huge_tree=True))
    body = root.find(f"{{{GOVTALK_NS}}}Body") if root.tag != f"{{{GOVTALK_NS}}}Body" else root
    if body is None:
        raise ValueError("no GovTalk Body")
    for mark in body.iter("{*}IRmark"):
        parent = mark.getparent()
        assert parent is not None
        # Removing an element in lxml drops its tail: keep the text around it unchanged.
        if mark.tail:
            previous = mark.getprevious()
            if previous is not None:
                previous.tail = (previous.tail or "") + mark.tail
            else:
                parent.text = (parent.text or "") + mark.tail
        parent.remove(mark)
        break
    canonical = etree.tostring(body, method="c14n", exclusive=False, with_comments=False)
    return base64.b64encode(hashlib.sha1(canonical, usedforsecurity=False).digest()).decode()


def submission_reference(irmark: str) -> str:
    """The base32 form of an IRmark that HMRC prints on its receipts."""
    return base64.b32encode(base64.b64decode(irmark)).decode().rstrip("=")


@dataclass(frozen=True)
class BusinessError:
    code: int
    message: str
    location: str = ""


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


_RULE_TAGS = tuple(
    f"{{*}}{name}"
    for name in (
        "Key", "GatewayTimestamp", "AuthOfficial", "AgtOrNom", "CollAgent", "HMRCref", "RegName", "NoReg",
        "OtherReg", "RegNo", "GAD", "EarliestGAdate", "OtherInc", "Adjustment", "Repayment", "GASDS", "OtherInfo",
        "Claim",
    )
)  # fmt: skip


def check_business_rules(source: Any, *, today: dt.date | None = None) -> list[BusinessError]:
    """HMRC's business ("Schematron") rules of giftaid.md §3.3 that a Gift Aid claim can break, checked while
    streaming the message (`source`: a path or a binary file); only the elements the rules look at are visited."""
    errors: list[BusinessError] = []
    govtalk_keys: list[str] = []
    header_keys: list[str] = []
    refs: list[str] = []
    gad_count = 0
    other_inc = 0
    limit: str | None = today.isoformat() if today else None
    claim: dict[str, Any] = {"gads": 0, "other_inc": 0}
    for _event, node in etree.iterparse(source, events=("end",), tag=_RULE_TAGS, huge_tree=True):
        name = _local(node.tag)
        if name == "GAD":
            gad_count += 1
            claim["gads"] += 1
            where = f"GAD[{gad_count}]"
            aggregated = sponsored = False
            gad_date = total = ""
            for child in node:
                child_name = _local(child.tag)
                if child_name == "AggDonation":
                    aggregated = True
                elif child_name == "Sponsored":
                    sponsored = True
                elif child_name == "Date":
                    gad_date = (child.text or "").strip()
                elif child_name == "Total":
                    total = (child.text or "").strip()
            if aggregated and sponsored:
                errors.append(BusinessError(7039, "an aggregated donation cannot be a sponsored event", where))
            if aggregated and total and Decimal(total) > 1000:
                errors.append(BusinessError(7038, "an aggregated donation line may total at most 1000.00", where))
            if limit and gad_date > limit:
                errors.append(BusinessError(7040, "Gift Aid donation date cannot be in the future", where))
            # Keep memory flat on big messages: drop what has been read.
            node.clear()
            parent = node.getparent()
            while node.getprevious() is not None and parent is not None:
                del parent[0]
            continue
        value = (node.text or "").strip()
        parent = node.getparent()
        parent_name = _local(parent.tag) if parent is not None else ""
        if name == "Key" and node.get("Type") == "CHARID":
            grandparent = parent.getparent() if parent is not None else None
            in_govtalk = grandparent is not None and _local(grandparent.tag) == "GovTalkDetails"
            (govtalk_keys if in_govtalk else header_keys).append(value)
        elif name == "GatewayTimestamp" and value:
            try:
                stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                # Written in UTC; donation dates are UK dates, so "the future" starts at UK midnight (rule 7040).
                stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
                limit = stamp.astimezone(UK).date().isoformat()
            except ValueError:
                errors.append(BusinessError(7063, "GatewayTimestamp is not a date and time"))
        elif name == "AgtOrNom" and node.find("{*}OrgName") is None:
            errors.append(BusinessError(7027, "AgtOrNom needs OrgName"))
        elif name == "AuthOfficial" and node.find("{*}OffName") is None and node.find("{*}Trustee") is None:
            errors.append(BusinessError(7026, "the authorised official's name (or a corporate trustee) is needed"))
        elif name == "HMRCref" and parent_name == "Claim":
            claim["ref"] = value
            refs.append(value)
        elif name in ("RegName", "NoReg", "OtherReg"):
            claim["regulator"] = name
        elif name == "RegNo":
            claim["regno"] = True
        elif name == "EarliestGAdate":
            claim["earliest"] = True
        elif name == "OtherInc":
            other_inc += 1
            claim["other_inc"] += 1
        elif name == "Adjustment":
            claim["adjustment"] = True
        elif name == "Repayment":
            claim["repayment"] = True
            if not claim["gads"] and not claim["other_inc"]:
                errors.append(BusinessError(7035, "Repayment must contain GAD or OtherInc"))
        elif name == "GASDS":
            claim["gasds"] = True
        elif name == "OtherInfo":
            claim["other_info"] = True
        elif name == "Claim":
            errors.extend(_claim_rules(claim))
            claim = {"gads": 0, "other_inc": 0}
    if govtalk_keys and header_keys and sorted(govtalk_keys) != sorted(header_keys):
        errors.append(BusinessError(5005, "GovTalkDetails Keys must match the IRheader Keys"))
    if len(set(refs)) > 1:
        errors.append(BusinessError(7030, "the same HMRCref must be used throughout"))
    if gad_count > MAX_GAD_PER_MESSAGE:
        errors.append(BusinessError(7036, f"at most {MAX_GAD_PER_MESSAGE} GAD in one submission"))
    if other_inc > 2000:
        errors.append(BusinessError(7037, "at most 2000 OtherInc in one submission"))
    return errors


def _claim_rules(claim: dict[str, Any]) -> list[BusinessError]:
    errors = []
    ref = claim.get("ref", "")
    if not claim.get("repayment") and not claim.get("gasds"):
        errors.append(BusinessError(7028, "a claim must contain Repayment or GASDS"))
    if ref.startswith(("CH", "CF")):
        if claim.get("regulator") not in (None, "NoReg"):
            errors.append(BusinessError(7033, "a CH/CF reference must use NoReg"))
    elif claim.get("regulator") is None:
        errors.append(BusinessError(7029, "a regulator is required"))
    if claim.get("regulator") == "RegName" and not claim.get("regno"):
        errors.append(BusinessError(7031, "RegName needs RegNo"))
    if claim["gads"] and not claim.get("earliest"):
        errors.append(BusinessError(7034, "EarliestGAdate is required when there are GADs"))
    if claim.get("adjustment") and not claim.get("other_info"):
        errors.append(BusinessError(7059, "OtherInfo is required when there is an Adjustment"))
    return errors


def iter_parts(total_lines: int, per_message: int = MAX_GAD_PER_MESSAGE) -> Iterator[tuple[int, int, int]]:
    """(part, first line, last line) for a claim of `total_lines` lines."""
    part = 1
    first = 1
    while first <= total_lines:
        last = min(first + per_message - 1, total_lines)
        yield part, first, last
        part += 1
        first = last + 1
