"""Queries for giftaid tables. Private to the package: other packages call giftaid.service.

Claims are built with set-based SQL: the eligibility of every candidate gift is materialised once into a temporary
table, then one INSERT ... SELECT claims the good ones with their line numbers, and the rest are read back as held
back. When the files are written the lines come back in order: the schedule's through a server-side cursor, the
XML's rendered by the database (on PostgreSQL, by a binary COPY).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Select
from sqlmodel import Session, col, select

from giftaid.eligibility import CD, CG, C, D, G, day_number
from giftaid.models import Adjustment, Claim, ClaimEvent, ClaimGift, ClaimStatus, HeldBack, Message
from giftaid.sendable import (
    TITLE_SQLITE,
    schedule_blank,
    schedule_blank_candidate_sql,
    sendable,
    sendable_sql,
    sendable_title,
    sendable_title_sql,
    title_fits_sql,
    unsendable_sql,
)
from payments.models import MONEY_RETURNED, money_returned

CANDIDATES = "giftaid_candidates"
# Small gifts per aggregated line: with gifts of at most `aggregate_limit` pence, this many stay within £1,000.
AGGREGATE_LINE_LIMIT = 100_000
# The line number of a gift taken off a claim HMRC may hold (`take_off_claim`'s `keep`): its row stays, live, so no
# other claim claims it, but it is on no line of the claim's files, nor in its totals.
OFF_THE_LINES = 0
ON_A_LINE = CG.c.line_no > OFF_THE_LINES


def dialect_of(session: Session) -> str:
    return str(session.get_bind().dialect.name)


def read_only(session: Session) -> bool:
    """Whether the session is a read session (`Runtime.read_session`): nothing it writes is kept."""
    return bool(session.get_bind().get_execution_options().get("postgresql_readonly"))


def lock_claims(session: Session) -> None:
    """One claim is built at a time: a second builder waits here, then sees the first one's gifts as claimed.
    Whatever takes this lock and a claim's row lock takes this one first (`lock_claims_then_claim`).
    (SQLite's BEGIN IMMEDIATE already serialises writers.)"""
    if dialect_of(session) == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('giftaid.build_claim'))"))
        # The build sorts and hashes every candidate gift once: let it do so in memory (this transaction only).
        session.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        # Its statements are planned once and run once over every gift, with simple expressions: compiling them
        # (JIT) costs more than it saves (measured: 0.1-1.7 s a statement on a claim of a million gifts).
        session.execute(sa.text("SET LOCAL jit = off"))


def create_candidates(session: Session, query: Select[Any]) -> Any:
    """Materialise the eligibility query into a temporary table; returns a table object with its columns."""
    dialect = session.get_bind().dialect
    compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    drop_candidates(session)
    if dialect.name == "postgresql":
        session.execute(sa.text(f"CREATE TEMPORARY TABLE {CANDIDATES} ON COMMIT DROP AS {compiled}"))
        session.execute(sa.text(f"ANALYZE {CANDIDATES}"))
    else:
        session.execute(sa.text(f"CREATE TEMPORARY TABLE {CANDIDATES} AS {compiled}"))
    return sa.table(CANDIDATES, *[sa.column(c.name, c.type) for c in query.selected_columns])


def drop_candidates(session: Session) -> None:
    session.execute(sa.text(f"DROP TABLE IF EXISTS {CANDIDATES}"))


def insert_claim_gifts(session: Session, claim_id: uuid.UUID, candidates: Any, aggregate_limit: int) -> None:
    """Claim every claimable candidate in one statement, numbering the lines 1..N: a line per gift first (by date),
    then small gifts aggregated (each ≤ the limit, the donor's only gift in that financial period, at most
    `AGGREGATE_LINE_LIMIT // limit` to a line so a line stays ≤ £1,000, one period to a line).

    Each row gets a group (0: donor lines; else the financial period of an aggregated gift) and one integer sort
    key, group then date; one sort on (key, gift) numbers the rows, and a tiny table of rows per group turns those
    numbers into line numbers. The rows are then written in gift id order (see `ClaimGift`)."""
    cand = candidates
    dialect = dialect_of(session)
    claimable = cand.c.code.is_(None)
    if aggregate_limit > 0:
        per_donor = (
            sa.select(cand.c.supporter_id, cand.c.period_year, sa.func.count().label("gifts"))
            .where(claimable)
            .group_by(cand.c.supporter_id, cand.c.period_year)
            .subquery("per_donor")
        )
        small = sa.and_(cand.c.claim_amount <= aggregate_limit, per_donor.c.gifts == 1)
        source = cand.outerjoin(
            per_donor,
            sa.and_(per_donor.c.supporter_id == cand.c.supporter_id, per_donor.c.period_year == cand.c.period_year),
        )
    else:
        small, source = sa.false(), cand
    # Periods are years (> 0), so donor lines (group 0) come first, then each period's aggregated lines.
    group_key = sa.case((small, cand.c.period_year), else_=0)
    flagged = (
        sa.select(
            cand.c.gift_id,
            cand.c.received_on,
            cand.c.returned,
            cand.c.claim_amount,
            cand.c.declaration_id,
            group_key.label("group_key"),
            (sa.cast(group_key, sa.BigInteger) * 1_000_000 + day_number(cand.c.received_on, dialect)).label("sort_key"),
        )
        .select_from(source)
        .where(claimable)
        .cte("flagged")
    )
    per_line = max(1, AGGREGATE_LINE_LIMIT // max(aggregate_limit, 1))
    groups = (
        sa.select(flagged.c.group_key, sa.func.count().label("rows")).group_by(flagged.c.group_key).subquery("groups")
    )
    lines_in_group = sa.case((groups.c.group_key == 0, groups.c.rows), else_=(groups.c.rows + per_line - 1) // per_line)
    offsets = sa.select(
        groups.c.group_key,
        (sa.func.sum(groups.c.rows).over(order_by=groups.c.group_key) - groups.c.rows).label("rows_before"),
        (sa.func.sum(lines_in_group).over(order_by=groups.c.group_key) - lines_in_group).label("lines_before"),
    ).subquery("offsets")
    numbered = sa.select(
        flagged,
        sa.func.row_number().over(order_by=(flagged.c.sort_key, flagged.c.gift_id)).label("rn"),
    ).subquery("numbered")
    in_group = numbered.c.rn - offsets.c.rows_before  # 1.. within its group
    line_no = offsets.c.lines_before + sa.case(
        (numbered.c.group_key == 0, in_group), else_=(in_group - 1) // per_line + 1
    )
    columns = [
        "claim_id",
        "gift_id",
        "live",
        "line_no",
        "aggregated",
        "received_on",
        "amount",
        "returned_at_claim",
        "adjusted_returned",
        "declaration_id",
    ]
    rows = sa.select(
        sa.literal(claim_id, sa.Uuid).label("claim_id"),
        numbered.c.gift_id,
        sa.true(),
        sa.cast(line_no, sa.Integer),
        numbered.c.group_key != 0,
        numbered.c.received_on,
        numbered.c.claim_amount,
        numbered.c.returned,
        sa.literal(0),
        numbered.c.declaration_id,
    ).select_from(numbered.join(offsets, offsets.c.group_key == numbered.c.group_key))
    # Written in gift id order, so the keys (claim, gift) and (gift, live) are appended to, not inserted into at
    # random (measured on a million gifts: 9.3 s → 2.9 s for the rows and their two indexes).
    session.execute(sa.insert(CG).from_select(columns, rows.order_by(numbered.c.gift_id)))
    # The donor's details once per declaration, as the files carry them (kept as the evidence of what was sent, so
    # finance sees what HMRC got): a legacy declaration's characters no file can carry dropped (giftaid.sendable),
    # its title trimmed, or left out when HMRC's files take no such title. In key order for the same reason.
    postcode = sa.func.coalesce(D.c.postcode, "")
    declared = sa.select(
        D.c.id,
        D.c.title,
        D.c.first_name,
        D.c.last_name,
        D.c.house,
        postcode.label("postcode"),
        sa.func.coalesce(D.c.non_uk, False).label("overseas"),
    ).where(D.c.id.in_(sa.select(cand.c.declaration_id).where(claimable)))
    donor_columns = ["claim_id", "declaration_id", "title", "first_name", "last_name", "house", "postcode", "overseas"]
    if dialect != "postgresql":
        session.execute(
            sa.insert(CD).from_select(
                donor_columns, sa.select(sa.literal(claim_id, sa.Uuid), *declared.selected_columns).order_by(D.c.id)
            )
        )
        _clean_legacy_donors(session, claim_id)
        return
    # One match of the four against the unsendable characters a donor (in the statement the rows are written by);
    # only a legacy row is then cleaned.
    unsendable = unsendable_sql(_joined(D.c.first_name, D.c.last_name, D.c.house, postcode, dialect=dialect))
    fenced = (
        declared.add_columns(unsendable.label("unsendable"))
        .order_by(D.c.id)
        .offset(0)  # a fence: the match is made once a donor, not once for each column that uses it
        .subquery("declared")
    )

    def cleaned(column: Any) -> Any:
        return sa.case((fenced.c.unsendable, sendable_sql(column)), else_=column)

    donors = sa.select(
        sa.literal(claim_id, sa.Uuid).label("claim_id"),
        fenced.c.id,
        sendable_title_sql(fenced.c.title),
        cleaned(fenced.c.first_name),
        cleaned(fenced.c.last_name),
        cleaned(fenced.c.house),
        cleaned(fenced.c.postcode),
        fenced.c.overseas,
    ).order_by(fenced.c.id)
    session.execute(sa.insert(CD).from_select(donor_columns, donors))


def _clean_legacy_donors(session: Session, claim_id: uuid.UUID) -> None:
    """SQLite (which has no `translate`): the claim's donor rows as the files carry them (`insert_claim_gifts`),
    cleaned in Python; only legacy rows need it, found by Python's `re` (SQLite's REGEXP) in one statement."""
    unsendable = unsendable_sql(_joined(CD.c.first_name, CD.c.last_name, CD.c.house, CD.c.postcode), "sqlite")
    title_not_sent = sa.and_(CD.c.title.is_not(None), sa.not_(CD.c.title.regexp_match(TITLE_SQLITE)))
    legacy = session.execute(
        sa.select(CD.c.declaration_id, CD.c.title, CD.c.first_name, CD.c.last_name, CD.c.house, CD.c.postcode).where(
            CD.c.claim_id == claim_id, sa.or_(unsendable, title_not_sent)
        )
    )
    for row in list(legacy):
        session.execute(
            sa.update(CD)
            .where(CD.c.claim_id == claim_id, CD.c.declaration_id == row.declaration_id)
            .values(
                title=sendable_title(row.title),
                first_name=sendable(row.first_name),
                last_name=sendable(row.last_name),
                house=sendable(row.house),
                postcode=sendable(row.postcode),
            )
        )


def refresh_claim_statistics(session: Session) -> None:
    """PostgreSQL: sample the claim tables a build has just grown (a fraction of a second), so the files' statements
    are planned on their real sizes, not on none (a join planned for a few rows would render each line serially)."""
    if dialect_of(session) == "postgresql":
        session.execute(sa.text(f"ANALYZE {CG.name}, {CD.name}"))


def held_back_ids(session: Session, candidates: Any) -> list[uuid.UUID]:
    """The candidates that cannot be claimed, by date."""
    query = (
        sa.select(candidates.c.gift_id)
        .where(candidates.c.code.is_not(None))
        .order_by(candidates.c.received_on, candidates.c.gift_id)
    )
    return list(session.execute(query).scalars())


def add_held_back(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(sa.insert(HeldBack.__table__), rows)  # type: ignore[attr-defined]


def claim_summary(session: Session, claim_id: uuid.UUID) -> Any:
    return session.execute(
        sa.select(
            # The last line's number: a take-off numbers the lines again within their parts, so a part (and a
            # message's last schedule, left empty) may be short; `lines` counts them as full. Gifts held on no line
            # (`OFF_THE_LINES`) are not in the files, so not in the totals.
            sa.func.coalesce(sa.func.max(CG.c.line_no), 0).label("lines"),
            sa.func.count().label("gifts"),
            sa.func.coalesce(sa.func.sum(CG.c.amount), 0).label("total"),
            sa.func.min(CG.c.received_on).label("earliest"),
            sa.func.max(CG.c.received_on).label("latest"),
        ).where(CG.c.claim_id == claim_id, ON_A_LINE)
    ).one()


def part_summary(session: Session, claim_id: uuid.UUID, first_line: int, last_line: int) -> Any:
    return session.execute(
        sa.select(
            sa.func.min(CG.c.received_on).label("earliest"),
            sa.func.max(CG.c.received_on).label("latest"),
            sa.func.coalesce(sa.func.sum(CG.c.amount), 0).label("total"),
        ).where(CG.c.claim_id == claim_id, CG.c.line_no.between(first_line, last_line))
    ).one()


def part_earliest(session: Session, claim_id: uuid.UUID, per_part: int) -> dict[int, Any]:
    """The earliest gift date on each part of `per_part` lines (1-based), in one pass over the claim's rows."""
    part = (CG.c.line_no - 1) // per_part + 1
    rows = session.execute(
        sa.select(part.label("part"), sa.func.min(CG.c.received_on))
        .where(CG.c.claim_id == claim_id, ON_A_LINE)
        .group_by(part)
    )
    return {int(n): earliest for n, earliest in rows}


def stream_line_rows(session: Session, claim_id: uuid.UUID, first_line: int, last_line: int) -> Iterator[Any]:
    """A claim's gifts in line order, through a server-side cursor (constant memory)."""
    query = (
        sa.select(
            CG.c.line_no,
            CG.c.aggregated,
            # What a schedule's donor line shows, in HMRC's column order.
            CD.c.title,
            CD.c.first_name,
            CD.c.last_name,
            CD.c.house,
            CD.c.postcode,
            CD.c.overseas,
            CG.c.received_on,
            CG.c.amount,
            CG.c.gift_id,
        )
        .select_from(_with_donors(CG))
        .where(CG.c.claim_id == claim_id, CG.c.line_no.between(first_line, last_line))
        .order_by(CG.c.line_no, CG.c.received_on, CG.c.gift_id)
        .execution_options(stream_results=True, yield_per=10_000)
    )
    yield from session.execute(query)


def _with_donors(claim_gifts: Any) -> Any:
    """Each claimed gift with its donor as claimed (none for a row without a declaration: not one a claim writes)."""
    return claim_gifts.outerjoin(
        CD, sa.and_(CD.c.claim_id == CG.c.claim_id, CD.c.declaration_id == CG.c.declaration_id)
    )


def _escaped(value: Any) -> Any:
    """XML character data in SQL (& < >); the characters XML cannot hold are dropped first (`stream_gad_xml`)."""
    return sa.func.replace(sa.func.replace(sa.func.replace(value, "&", "&amp;"), "<", "&lt;"), ">", "&gt;")


def _joined(*parts: Any, dialect: str = "sqlite") -> Any:
    """Text concatenation: PostgreSQL's one `concat(...)` call is cheaper than a chain of `||`."""
    pieces = [sa.literal(part, sa.String) if isinstance(part, str) else part for part in parts]
    if dialect == "postgresql":
        return sa.func.concat(*pieces)
    expression = pieces[0]
    for piece in pieces[1:]:
        expression = expression.op("||")(piece)
    return expression


def _money(pence: Any, dialect: str) -> Any:
    """`1234.50` in SQL."""
    pounds = sa.cast(pence // 100, sa.String)
    if dialect == "postgresql":
        return _joined(pounds, ".", sa.func.lpad(sa.cast(pence % 100, sa.String), 2, "0"), dialect=dialect)
    return _joined(pounds, ".", sa.func.substr(_joined("0", sa.cast(pence % 100, sa.String)), -2, 2))


def stream_gad_xml(
    session: Session, claim_id: uuid.UUID, first_line: int, last_line: int
) -> Iterator[tuple[bytes, int]]:
    """Each line's `<GAD>` element, rendered by the database in canonical form (the same bytes as
    `giftaid.xml.gad`), in line order, UTF-8 encoded, in runs with how many lines each holds (PostgreSQL: a binary
    COPY; SQLite: a server-side cursor): Python only hashes and writes them.

    Donor lines (one gift each) are numbered before aggregated lines, so they are read first (on PostgreSQL
    joined by the server into runs of 1,000 lines); then the aggregated lines, grouped."""
    dialect = dialect_of(session)
    if dialect == "postgresql":
        # Dates as YYYY-MM-DD whatever the server's DateStyle.
        session.execute(sa.text("SET LOCAL DateStyle = 'ISO, YMD'"))

    def tail(pence: Any) -> tuple[Any, ...]:
        return ("</Date><Total>", _money(pence, dialect), "</Total></GAD>")

    in_range = sa.and_(CG.c.claim_id == claim_id, CG.c.line_no.between(first_line, last_line))
    donor_lines = sa.and_(in_range, CG.c.aggregated.is_(False))
    # Each donor's `<Donor>` element is rendered once (the claim's donors: a fifth of its lines in the bench) and
    # joined to each of their gifts' lines; only the donors of this part's lines (a message of a claim in several
    # parts rendered every donor of the claim, most of them for nothing).
    part_donors = sa.select(CG.c.declaration_id).where(donor_lines)
    # The donor's details as HMRC can take them (giftaid.sendable): on PostgreSQL, a donor whose details hold a
    # character no file can carry (stored before crm dropped them) is rendered from its cleaned details (one match of
    # all five against the unsendable characters a donor, then nothing for the others); SQLite's lines are cleaned
    # in Python below.
    part_donor_rows = sa.select(CD).where(CD.c.claim_id == claim_id, CD.c.declaration_id.in_(part_donors))
    if dialect == "postgresql":
        everything = _joined(
            sa.func.coalesce(CD.c.title, ""),
            CD.c.first_name,
            CD.c.last_name,
            CD.c.house,
            CD.c.postcode,
            dialect=dialect,
        )
        part_donor_rows = part_donor_rows.add_columns(unsendable_sql(everything).label("unsendable"))
    donor_rows = part_donor_rows.subquery("part_donors")

    def field(column: Any) -> Any:
        if dialect != "postgresql":
            return _escaped(column)
        return _escaped(sa.case((donor_rows.c.unsendable, sendable_sql(column)), else_=column))

    heads = (
        sa.select(
            donor_rows.c.declaration_id,
            _joined(
                "<GAD><Donor>",
                # A claim's donor rows hold a title both files take, or none (`insert_claim_gifts`); a claim built
                # before they did may hold another: left out, as its schedule leaves it out, not sent to fail the
                # whole message.
                sa.case(
                    (
                        title_fits_sql(donor_rows.c.title, dialect),
                        _joined("<Ttl>", field(donor_rows.c.title), "</Ttl>", dialect=dialect),
                    ),
                    else_="",
                ),
                "<Fore>",
                field(donor_rows.c.first_name),
                "</Fore><Sur>",
                field(donor_rows.c.last_name),
                "</Sur><House>",
                field(donor_rows.c.house),
                "</House>",
                sa.case(
                    (donor_rows.c.overseas.is_(True), "<Overseas>yes</Overseas>"),
                    else_=_joined("<Postcode>", field(donor_rows.c.postcode), "</Postcode>", dialect=dialect),
                ),
                "</Donor><Date>",
                dialect=dialect,
            ).label("head"),
        )
        .offset(0)  # a fence: rendered here, once a donor, not above the join for every line
        .subquery("heads")
    )
    with_heads = CG.join(heads, heads.c.declaration_id == CG.c.declaration_id)
    donor = _joined(heads.c.head, sa.cast(CG.c.received_on, sa.String), *tail(CG.c.amount), dialect=dialect)
    if dialect == "postgresql":
        # The server joins each run of 1,000 line numbers into one text (in line order within it, runs in order),
        # so a message is a few hundred COPY rows instead of a row per line: the client's per-row work (reading a
        # COPY message, slicing it) was ~2.2 s of CPU for a million lines, now ~0.5 s.
        # The lines are rendered and sorted by parallel workers (rendering is the cost) and merged in order; the
        # leader joins each run as it arrives (the aggregate's own ORDER BY keeps the order whatever the plan).
        run = ((CG.c.line_no - first_line) // _GAD_RUN).label("run")
        lines = (
            sa.select(run, CG.c.line_no, donor.label("gad"))
            .select_from(with_heads)
            .where(donor_lines)
            .order_by(run, CG.c.line_no)
            .subquery("lines")
        )
        joined = sa.func.string_agg(lines.c.gad, sa.literal_column("''")).aggregate_order_by(lines.c.line_no)
        runs = (
            sa.select(sa.func.convert_to(joined, "UTF8"), sa.func.count()).group_by(lines.c.run).order_by(lines.c.run)
        )
        previous = _apply_donor_lines_settings(session)
        try:
            yield from _copy_runs(session, runs)
        finally:
            _restore_settings(session, previous)
    else:
        donors = sa.select(donor).select_from(with_heads).where(donor_lines).order_by(CG.c.line_no)
        query = donors.execution_options(stream_results=True, yield_per=20_000)
        # Markup holds none of the unsendable characters: cleaning the line is cleaning its donor's details.
        yield from ((sendable(text).encode(), 1) for text in session.execute(query).scalars())
    latest = sa.cast(sa.func.max(CG.c.received_on), sa.String)
    small = _joined(
        "<GAD><AggDonation>Small donations, ",
        sa.cast(sa.func.count(), sa.String),
        " donors</AggDonation><Date>",
        latest,
        *tail(sa.cast(sa.func.sum(CG.c.amount), sa.BigInteger)),
        dialect=dialect,
    )
    aggregated = (
        sa.select(small)
        .where(in_range, CG.c.aggregated.is_(True))
        .group_by(CG.c.line_no)
        .order_by(CG.c.line_no)
        .execution_options(stream_results=True, yield_per=20_000)
    )
    yield from ((text.encode(), 1) for text in session.execute(aggregated).scalars())


_GAD_RUN = 1_000  # donor lines joined into one text by the server

# For the donor lines' statement only. Parallel query: a claim's rows were written in this transaction or just
# before, with no statistics yet, so the planner would take them for too few to share out. work_mem: a message's
# lines are sorted into line order in memory, not on disk.
_DONOR_LINES_SETTINGS = {
    "work_mem": "256MB",
    "parallel_setup_cost": "0",
    "parallel_tuple_cost": "0",
    "min_parallel_table_scan_size": "0",
    "min_parallel_index_scan_size": "0",
    # Each donor's element is rendered once, then looked up by hash for every line (never rendered again for
    # each line by a nested loop, which a planner without statistics would pick).
    "enable_nestloop": "off",
    "enable_mergejoin": "off",
}


def _apply_donor_lines_settings(session: Session) -> dict[str, str]:
    """Settings for the next statement (a parallel plan, sorted in memory; this transaction only); returns the
    settings to restore."""
    names = list(_DONOR_LINES_SETTINGS)
    read = sa.select(*(sa.func.current_setting(name) for name in names))
    previous = dict(zip(names, session.execute(read).one(), strict=True))
    _set_settings(session, _DONOR_LINES_SETTINGS)
    return previous


def _restore_settings(session: Session, previous: dict[str, str]) -> None:
    _set_settings(session, previous)


def _set_settings(session: Session, values: dict[str, str]) -> None:
    session.execute(sa.select(*(sa.func.set_config(name, value, True) for name, value in values.items())))


def _copy_runs(session: Session, query: Select[Any]) -> Iterator[tuple[bytes, int]]:
    """The rows of `query` (a run of lines as UTF-8 bytes, how many lines it holds) by PostgreSQL's binary COPY:
    the server renders and sends without waiting for each batch to be asked for (a cursor's FETCH), so it renders
    while Python hashes and writes."""
    sql = str(query.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}))
    # Compiled for psycopg's placeholders, every `%` came out doubled; COPY gets the SQL as it is.
    sql = sql.replace("%%", "%")
    connection = session.connection().connection.driver_connection
    with connection.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as copy:  # type: ignore[union-attr]
        copy.set_types(["bytea", "int8"])
        for data, lines in copy.rows():
            yield bytes(data), int(lines)


def gift_ids_on_lines(session: Session, claim_id: uuid.UUID, line_numbers: list[int]) -> dict[int, list[uuid.UUID]]:
    found: dict[int, list[uuid.UUID]] = {}
    if not line_numbers:
        return found
    # HMRC's GAD[n] is the n-th line of the message as sent (a claim sent through the gateway is one message): not
    # line number n once a part is short (gifts taken off before it was sent keep the others in their parts).
    ranked = (
        sa.select(CG.c.gift_id, sa.func.dense_rank().over(order_by=CG.c.line_no).label("position"))
        .where(CG.c.claim_id == claim_id, ON_A_LINE)
        .subquery("ranked")
    )
    rows = session.execute(
        sa.select(ranked.c.position, ranked.c.gift_id)
        .where(ranked.c.position.in_(line_numbers))
        .order_by(ranked.c.position, ranked.c.gift_id)
    )
    for line_no, gift_id in rows:
        found.setdefault(int(line_no), []).append(gift_id)
    return found


# --- adjustments ------------------------------------------------------------------------------------------------------


def returned_since_claim(session: Session) -> list[Any]:
    """Claimed gifts (in a claim HMRC has not rejected) that had money returned, or whose declaration became void,
    beyond what adjustments have already taken back.

    It starts from the few gifts that could qualify, each through a partial index: gifts with money returned
    (`ix_gifts_money_returned`) and the gifts of supporters with a void declaration (`ix_declarations_voided`), and
    looks up their claim rows by gift. Reading every claimed gift instead took 7-8 s after a claim of a million
    gifts, at every build and every voided declaration (docs/giftaid.md)."""
    returned = money_returned()
    voided = sa.func.coalesce(D.c.voided, False).is_(True)
    void_declarations = D.alias("void_declarations")
    candidates = sa.union(
        sa.select(G.c.id).where(sa.text(MONEY_RETURNED)),
        sa.select(G.c.id)
        .select_from(void_declarations.join(G, G.c.supporter_id == void_declarations.c.supporter_id))
        .where(void_declarations.c.voided),
    )
    query = (
        sa.select(
            CG.c.claim_id,
            CG.c.gift_id,
            CG.c.amount,
            CG.c.returned_at_claim,
            CG.c.adjusted_returned,
            returned.label("returned_now"),
            voided.label("voided"),
            G.c.status,
        )
        .select_from(
            CG.join(C, C.c.id == CG.c.claim_id)
            .join(G, G.c.id == CG.c.gift_id)
            .outerjoin(D, D.c.id == CG.c.declaration_id)
        )
        .where(
            CG.c.gift_id.in_(candidates),
            CG.c.live.is_(True),
            C.c.status != ClaimStatus.REJECTED.value,
            CG.c.adjusted_returned < CG.c.amount,
            sa.or_(returned > CG.c.returned_at_claim + CG.c.adjusted_returned, voided),
        )
        .order_by(CG.c.claim_id, CG.c.gift_id)
    )
    return list(session.execute(query))


_MARK_ADJUSTED = (
    sa.update(CG)
    .where(CG.c.claim_id == sa.bindparam("adjusted_claim_id"), CG.c.gift_id == sa.bindparam("adjusted_gift_id"))
    .values(adjusted_returned=sa.bindparam("adjusted_returned"))
)


def mark_adjusted(session: Session, adjusted: list[tuple[uuid.UUID, uuid.UUID, int]]) -> None:
    """(claim id, gift id, money returned adjusted so far) for each claim row: one statement executed for many."""
    if adjusted:
        rows = [
            {"adjusted_claim_id": claim_id, "adjusted_gift_id": gift_id, "adjusted_returned": returned}
            for claim_id, gift_id, returned in adjusted
        ]
        session.connection().execute(_MARK_ADJUSTED, rows)


def pending_adjustments(session: Session) -> list[Adjustment]:
    return list(
        session.exec(
            select(Adjustment)
            .where(Adjustment.applied_claim_id.is_(None), Adjustment.withdrawn_at.is_(None))  # type: ignore[union-attr]
            .order_by(Adjustment.detected_at, Adjustment.id)  # type: ignore[arg-type]
        )
    )


def standing_adjustments(session: Session) -> list[Any]:
    """The adjustments that stand (not withdrawn) about live claim rows of claims HMRC has not rejected, each with
    its row's claimed amount, the money returned when claimed and the money the gift has returned now: to find
    money that came back (a dispute won, a chargeback cancelled). Starts from the adjustments, so its cost follows
    the refunds, not the claim history. Ordered by row, newest adjustment first."""
    A = Adjustment.__table__  # type: ignore[attr-defined]
    return list(
        session.execute(
            sa.select(
                Adjustment,
                CG.c.amount.label("claimed"),
                CG.c.returned_at_claim,
                CG.c.adjusted_returned,
                money_returned().label("returned_now"),
            )
            .select_from(
                A.join(CG, sa.and_(CG.c.claim_id == A.c.claim_id, CG.c.gift_id == A.c.gift_id))
                .join(C, C.c.id == CG.c.claim_id)
                .join(G, G.c.id == CG.c.gift_id)
            )
            .where(
                A.c.withdrawn_at.is_(None),
                CG.c.live.is_(True),
                C.c.status != ClaimStatus.REJECTED.value,
                # Only rows whose adjustments took back more than the gift now has returned since the claim.
                money_returned() - CG.c.returned_at_claim < CG.c.adjusted_returned,
            )
            .order_by(A.c.claim_id, A.c.gift_id, A.c.detected_at.desc(), A.c.id.desc())
        )
    )


def release_claim_gift(session: Session, claim_id: uuid.UUID, gift_id: uuid.UUID) -> None:
    """The gift is no longer claimed by this claim (its row stays, as what was sent): it can be claimed again."""
    session.execute(
        sa.update(CG).where(CG.c.claim_id == claim_id, CG.c.gift_id == gift_id, CG.c.live.is_(True)).values(live=None)
    )


def adjustments_applied_to(session: Session, claim_id: uuid.UUID) -> list[Adjustment]:
    return list(
        session.exec(
            select(Adjustment)
            .where(Adjustment.applied_claim_id == claim_id)
            .order_by(Adjustment.detected_at, Adjustment.id)  # type: ignore[arg-type]
        )
    )


def adjustments_from(session: Session, claim_id: uuid.UUID) -> list[Adjustment]:
    return list(session.exec(select(Adjustment).where(Adjustment.claim_id == claim_id)))


# --- claims -----------------------------------------------------------------------------------------------------------


class LockWaitExceeded(Exception):
    """A bounded wait for the claims' lock (or the claim's row) ran out: a build held it all along."""


def lock_claims_then_claim(session: Session, claim_id: uuid.UUID, *, wait_seconds: float | None = None) -> Claim | None:
    """The claims' lock, then the claim's row lock, read afresh (the wait may have let another transaction change
    it). The one order every path that takes both keeps: a build holds the claims' lock and may lock a claim's row (an
    adjustment coming off the claim carrying it), so a path locking the row first could deadlock with it. A path
    that changes which gifts are claimed (gifts taken off, a rejection) or may (a submit, a poll) takes both: a build
    waits for it, never adjusting a gift it has just released, and one already running finishes first.

    `wait_seconds` (PostgreSQL): wait at most that long for the two locks (`lock_timeout`, in a savepoint, so the
    transaction goes on), else `LockWaitExceeded`, having taken neither. SQLite's writers are serialised before
    this (BEGIN IMMEDIATE), so there is nothing to bound here."""
    if wait_seconds is None or dialect_of(session) != "postgresql":
        lock_claims(session)
        return get_claim(session, claim_id, for_update=True, fresh=True)
    previous = session.execute(sa.select(sa.func.current_setting("lock_timeout"))).scalar_one()
    try:
        with session.begin_nested():
            _set_settings(session, {"lock_timeout": f"{max(1, int(wait_seconds * 1000))}ms"})
            lock_claims(session)
            claim = get_claim(session, claim_id, for_update=True, fresh=True)
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise LockWaitExceeded(f"the claims' lock was not free within {wait_seconds:g} s") from exc
        raise
    # A SET LOCAL made in a savepoint that was released lasts to the transaction's end: put it back.
    _set_settings(session, {"lock_timeout": previous})
    return claim


_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout ran out


def lock_claim_row(session: Session, claim_id: uuid.UUID) -> None:
    """The claim's row lock alone, leaving the session's copy of the claim as it is (not read afresh: its changes
    not yet flushed stay). SQLite's writers are serialised already (BEGIN IMMEDIATE)."""
    if dialect_of(session) == "postgresql":
        session.execute(sa.select(C.c.id).where(C.c.id == claim_id).with_for_update())


def get_claim(session: Session, claim_id: uuid.UUID, *, for_update: bool = False, fresh: bool = False) -> Claim | None:
    """The claim; `fresh`: its row read again even if this session holds it (another transaction may have changed it
    before this one took its lock)."""
    query = select(Claim).where(Claim.id == claim_id)
    if for_update:
        query = query.with_for_update()
    if fresh:
        query = query.execution_options(populate_existing=True)
    return session.exec(query).first()


def list_claims(session: Session) -> list[Claim]:
    return list(session.exec(select(Claim).order_by(col(Claim.built_at).desc(), col(Claim.id))))


def claim_with_correlation_id(session: Session, correlation_id: str) -> Claim | None:
    return session.exec(select(Claim).where(Claim.correlation_id == correlation_id).limit(1)).first()


def claim_events(session: Session, claim_id: uuid.UUID) -> list[ClaimEvent]:
    return list(
        session.exec(
            select(ClaimEvent).where(ClaimEvent.claim_id == claim_id).order_by(col(ClaimEvent.at), col(ClaimEvent.id))
        )
    )


def held_back_of(session: Session, claim_id: uuid.UUID) -> list[HeldBack]:
    return list(session.exec(select(HeldBack).where(HeldBack.claim_id == claim_id).order_by(col(HeldBack.gift_id))))


def held_back_gift_amounts(session: Session, claim_id: uuid.UUID) -> list[Any]:
    """(gift_id, amount, returned) of the gifts a claim held back."""
    H = HeldBack.__table__  # type: ignore[attr-defined]
    return list(
        session.execute(
            sa.select(H.c.gift_id, G.c.amount, money_returned().label("returned"))
            .select_from(H.join(G, G.c.id == H.c.gift_id))
            .where(H.c.claim_id == claim_id)
        )
    )


def blank_donors(session: Session, claim_id: uuid.UUID) -> list[Any]:
    """The claim's donor rows whose name or house is nothing in a file: nothing but characters no file can carry
    (giftaid.sendable; rows copied from declarations stored before crm dropped them, in a claim built before the
    eligibility held them back), or nothing HMRC's schedule can show, even transliterated (`schedule_blank`).
    The SQL picks the few rows that could be by each value's first character (and a regular expression for those
    alone: names in another script among them); Python confirms, for those rows only."""
    dialect = dialect_of(session)
    candidates = session.execute(
        sa.select(CD.c.declaration_id, CD.c.first_name, CD.c.last_name, CD.c.house).where(
            CD.c.claim_id == claim_id,
            sa.or_(
                schedule_blank_candidate_sql(CD.c.first_name, dialect),
                schedule_blank_candidate_sql(CD.c.last_name, dialect),
                schedule_blank_candidate_sql(CD.c.house, dialect),
            ),
        )
    )
    return [row for row in candidates if any(map(schedule_blank, (row.first_name, row.last_name, row.house)))]


def claim_gifts_of_declarations(session: Session, claim_id: uuid.UUID, declaration_ids: list[uuid.UUID]) -> list[Any]:
    """Every gift of the claim under these declarations, donor lines and aggregated ones alike, by date."""
    rows: list[Any] = []
    for start in range(0, len(declaration_ids), 1_000):
        rows.extend(
            session.execute(
                sa.select(CG.c.gift_id, CG.c.received_on, CG.c.amount, CG.c.declaration_id).where(
                    CG.c.claim_id == claim_id, CG.c.declaration_id.in_(declaration_ids[start : start + 1_000])
                )
            )
        )
    return sorted(rows, key=lambda row: (row.received_on, str(row.gift_id)))


def claim_gifts_to_take_off(
    session: Session,
    claim_id: uuid.UUID,
    *,
    received_through: dt.date | None,
    declaration_ids: list[uuid.UUID],
    handed_out: Sequence[tuple[int, int, dt.date]] = (),
) -> list[Any]:
    """The claim's gifts received on or before `received_through`, and its donor lines (not aggregated: those send
    no donor details) under these declarations, by date. `handed_out`: (first line, last line, in time after) of
    each part already written: its gifts received after that day (in time when it was written) are not late."""
    conditions = []
    if received_through is not None:
        late = CG.c.received_on <= received_through
        kept = [
            sa.and_(CG.c.line_no.between(first, last), CG.c.received_on > in_time_after)
            for first, last, in_time_after in handed_out
        ]
        conditions.append(sa.and_(late, sa.not_(sa.or_(*kept))) if kept else late)
    if declaration_ids:
        conditions.append(sa.and_(CG.c.aggregated.is_(False), CG.c.declaration_id.in_(declaration_ids)))
    if not conditions:
        return []
    return list(
        session.execute(
            sa.select(CG.c.gift_id, CG.c.received_on, CG.c.amount, CG.c.declaration_id, CG.c.aggregated, CG.c.line_no)
            .where(CG.c.claim_id == claim_id, ON_A_LINE, sa.or_(*conditions))
            .order_by(CG.c.received_on, CG.c.gift_id)
        )
    )


def take_off_claim(
    session: Session,
    claim_id: uuid.UUID,
    gift_ids: list[uuid.UUID],
    *,
    per_part: int,
    per_message: int,
    keep: Collection[uuid.UUID] = (),
) -> list[int]:
    """Take these gifts off a claim nothing has been sent for: their rows go (the gifts are free to be claimed again
    if they ever can be), except those in `keep` (HMRC may hold the claim with them): their rows stay, live, on no
    line (`OFF_THE_LINES`), so no other claim claims them. The donor rows no line of the claim uses any more go, and
    the lines are numbered again in the same order (an aggregated line keeps its other gifts) *within their part* of
    `per_part` lines: a part is a file handed out on its own, so a line never moves into another part (numbering the
    whole claim 1..N again slid lines into a part already downloaded, where they were in no file). A part left empty
    is dropped, the later ones *of its message* (`per_message` lines, a whole number of parts) moving down whole: a
    message is a file handed out on its own too, so no part moves into another message (the message's last part is
    then left empty; the later messages keep their lines). A message left empty is dropped whole, the later ones
    moving down whole. Returns the parts dropped (numbered as they were before; every part of a message dropped
    whole)."""
    if per_message % per_part:
        raise ValueError(f"a message of {per_message} lines is not a whole number of parts of {per_part}")
    declarations: set[uuid.UUID] = set()
    touched: set[int] = set()
    part = (CG.c.line_no - 1) // per_part
    held = set(keep)
    for start in range(0, len(gift_ids), 1_000):
        batch = gift_ids[start : start + 1_000]
        kept = [gift_id for gift_id in batch if gift_id in held]
        taken = sa.and_(CG.c.claim_id == claim_id, CG.c.gift_id.in_([g for g in batch if g not in held]), ON_A_LINE)
        off = list(session.execute(sa.delete(CG).where(taken).returning(CG.c.declaration_id, CG.c.line_no)))
        if kept:
            on_no_line = sa.and_(CG.c.claim_id == claim_id, CG.c.gift_id.in_(kept), ON_A_LINE)
            off.extend(session.execute(sa.select(CG.c.declaration_id, CG.c.line_no).where(on_no_line)))
            session.execute(sa.update(CG).where(on_no_line).values(line_no=OFF_THE_LINES))
        for declaration_id, line_no in off:
            if declaration_id is not None:
                declarations.add(declaration_id)
            touched.add((int(line_no) - 1) // per_part)
    left = set(
        session.execute(
            sa.select(part).where(CG.c.claim_id == claim_id, ON_A_LINE, part.in_(sorted(touched))).distinct()
        ).scalars()
    )
    dropped = {p + 1 for p in touched - {int(p) for p in left}}
    # A message left empty is dropped whole, the later messages moving down whole: recorded as every part of it.
    parts_per_message = per_message // per_part
    message = (CG.c.line_no - 1) // per_message
    touched_messages = sorted({p // parts_per_message for p in touched})
    messages_left = set(
        session.execute(
            sa.select(message).where(CG.c.claim_id == claim_id, ON_A_LINE, message.in_(touched_messages)).distinct()
        ).scalars()
    )
    for emptied in set(touched_messages) - {int(m) for m in messages_left}:
        dropped.update(range(emptied * parts_per_message + 1, (emptied + 1) * parts_per_message + 1))
    still_used = sa.select(CG.c.declaration_id).where(
        CG.c.claim_id == claim_id, ON_A_LINE, CG.c.declaration_id.is_not(None)
    )
    unused = sorted(declarations)
    for start in range(0, len(unused), 1_000):
        session.execute(
            sa.delete(CD).where(
                CD.c.claim_id == claim_id,
                CD.c.declaration_id.in_(unused[start : start + 1_000]),
                CD.c.declaration_id.not_in(still_used),
            )
        )
    ranked = (
        sa.select(
            CG.c.gift_id,
            (
                (sa.func.dense_rank().over(order_by=message) - 1) * per_message
                + (sa.func.dense_rank().over(partition_by=message, order_by=part) - 1) * per_part
                + sa.func.dense_rank().over(partition_by=part, order_by=CG.c.line_no)
            ).label("line"),
        )
        .where(CG.c.claim_id == claim_id, ON_A_LINE)
        .subquery("ranked")
    )
    session.execute(
        sa.update(CG)
        .where(CG.c.claim_id == claim_id, CG.c.gift_id == ranked.c.gift_id, CG.c.line_no != ranked.c.line)
        .values(line_no=ranked.c.line)
    )
    return sorted(dropped)


def release_held_gifts(session: Session, claim_id: uuid.UUID) -> list[uuid.UUID]:
    """The gifts a take-off kept with the claim on no line (HMRC might hold it with them) go as the take-off would have
    let them go: their rows are deleted, so the gifts are free to be claimed again. Returns their ids."""
    held = sa.and_(CG.c.claim_id == claim_id, CG.c.live.is_(True), sa.not_(ON_A_LINE))
    return list(session.execute(sa.delete(CG).where(held).returning(CG.c.gift_id)).scalars())


def taken_off_adjusted(session: Session, claim_id: uuid.UUID) -> set[uuid.UUID]:
    """Gifts taken off the claim (on no line of it) that standing adjustments from it are about."""
    A = Adjustment.__table__  # type: ignore[attr-defined]
    on_a_line = sa.select(CG.c.gift_id).where(CG.c.claim_id == claim_id, CG.c.gift_id == A.c.gift_id, ON_A_LINE)
    return set(
        session.execute(
            sa.select(A.c.gift_id).where(A.c.claim_id == claim_id, A.c.withdrawn_at.is_(None), ~on_a_line.exists())
        ).scalars()
    )


def release_claim_gifts(session: Session, claim_id: uuid.UUID) -> int:
    result = session.execute(sa.update(CG).where(CG.c.claim_id == claim_id, CG.c.live.is_(True)).values(live=sa.null()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def messages_of(session: Session, claim_id: uuid.UUID) -> list[Message]:
    return list(
        session.exec(select(Message).where(Message.claim_id == claim_id).order_by(Message.at, Message.id))  # type: ignore[arg-type]
    )


def last_sent_at(session: Session, claim_id: uuid.UUID, functions: tuple[str, ...]) -> dt.datetime | None:
    """When we last sent HMRC one of these functions about the claim (without reading the messages' bodies)."""
    return session.execute(
        sa.select(sa.func.max(Message.at)).where(  # type: ignore[arg-type]
            Message.claim_id == claim_id,  # type: ignore[arg-type]
            Message.direction == "sent",  # type: ignore[arg-type]
            col(Message.function).in_(functions),
        )
    ).scalar_one_or_none()


def delete_answered(session: Session, claim_id: uuid.UUID) -> bool:
    """Whether HMRC has answered a delete of the claim's submission with an answer that ends it (a failed attempt,
    kept with its `error`, does not)."""
    found = session.execute(
        sa.select(Message.id)  # type: ignore[call-overload]
        .where(
            Message.claim_id == claim_id,
            Message.direction == "received",
            Message.function == "delete",
            Message.error == "",
        )
        .limit(1)
    ).first()
    return found is not None


def poll_errors_since(session: Session, claim_id: uuid.UUID) -> dt.datetime | None:
    """When the claim's current run of failed polls began: the first answer to a poll received after HMRC's last
    acknowledgement (of the submission, or "still working" to a poll). None when that acknowledgement is the last
    answer (a verdict ends the polling, so any other answer to a poll is a failed one)."""
    received = sa.and_(col(Message.claim_id) == claim_id, col(Message.direction) == "received")
    acknowledgement = col(Message.qualifier) == "acknowledgement"
    last_acknowledged = (
        sa.select(sa.func.max(col(Message.at)))
        .where(received, col(Message.function).in_(("submit", "poll")), acknowledgement)
        .scalar_subquery()
    )
    return session.execute(
        sa.select(sa.func.min(col(Message.at))).where(
            received,
            col(Message.function) == "poll",
            sa.not_(acknowledgement),
            sa.or_(last_acknowledged.is_(None), col(Message.at) > last_acknowledged),
        )
    ).scalar_one_or_none()


def claim_gift(session: Session, gift_id: uuid.UUID) -> ClaimGift | None:
    return session.exec(
        select(ClaimGift).where(ClaimGift.gift_id == gift_id, ClaimGift.live.is_(True))  # type: ignore[union-attr]
    ).first()


# --- supporters -------------------------------------------------------------------------------------------------------


def claimed_totals(session: Session, supporter_ids: list[uuid.UUID]) -> tuple[int, int]:
    """(donations claimed, tax taken back by adjustments) for these supporters' gifts in claims not rejected."""
    claimed = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(CG.c.amount), 0))
        .select_from(CG.join(C, C.c.id == CG.c.claim_id).join(G, G.c.id == CG.c.gift_id))
        .where(CG.c.live.is_(True), C.c.status != ClaimStatus.REJECTED.value, G.c.supporter_id.in_(supporter_ids))
    ).scalar_one()
    A = Adjustment.__table__  # type: ignore[attr-defined]
    adjusted = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(A.c.amount), 0))
        .select_from(A.join(G, G.c.id == A.c.gift_id))
        .where(G.c.supporter_id.in_(supporter_ids), A.c.withdrawn_at.is_(None))
    ).scalar_one()
    return int(claimed), int(adjusted)
