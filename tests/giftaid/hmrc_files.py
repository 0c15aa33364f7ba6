"""HMRC's reference files (../shared/hmrc) and checks built on them: the R68 and GovTalk envelope schemas."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

from giftaid.xml import R68_NS

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
HMRC = SHARED / "hmrc"
SAMPLES = HMRC / "samples"
ODS = HMRC / "ods"
XSD = HMRC / "xsd"


@lru_cache(maxsize=1)
def r68_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD / "r68-v2-0.xsd")))


@lru_cache(maxsize=1)
def envelope_schema() -> etree.XMLSchema:
    # The envelope imports xmldsig without a location: give it one.
    dsig, envelope = (XSD / "xmldsig-core-schema.xsd").as_uri(), (XSD / "envelope-v2-0-HMRC.xsd").as_uri()
    wrapper = f"""<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema">
      <xsd:import namespace="http://www.w3.org/2000/09/xmldsig#" schemaLocation="{dsig}"/>
      <xsd:import namespace="http://www.govtalk.gov.uk/CM/envelope" schemaLocation="{envelope}"/>
    </xsd:schema>"""
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), base_url=XSD.as_uri() + "/"))


def irenvelope(document: bytes) -> etree._ElementTree:
    root = etree.fromstring(document, parser=etree.XMLParser(huge_tree=True))
    found = root.find(f".//{{{R68_NS}}}IRenvelope")
    assert found is not None, "no IRenvelope"
    return etree.ElementTree(found)


def r68_errors(document: bytes) -> list[str]:
    schema = r68_schema()
    if schema.validate(irenvelope(document)):
        return []
    return [str(e) for e in schema.error_log]


def envelope_errors(document: bytes) -> list[str]:
    schema = envelope_schema()
    if schema.validate(etree.ElementTree(etree.fromstring(document))):
        return []
    return [str(e) for e in schema.error_log]
