"""Prediction history and its aggregates: the queries behind `/graphql`.

Keyword-only functions that take the connection explicitly (SQLAlchemy Core). Nothing here
knows a model family: a grouping arrives as plain strings (which document, which key, which
band edges), a decision as its stored `model_name`.

Pages are keyset pages over `(created_at, id)`, newest first: the cursor is the last row's
pair, so a page costs an index range read whatever its depth, and rows inserted meanwhile
(always newer) never shift a later page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Row,
    String,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from persistence.tables import prediction_rollups, predictions, rollup_marks, stale_rollup_hours

#: Which stored documents a grouping or a filter may read.
DOCUMENTS = ("inputs", "outputs")


@dataclass(frozen=True)
class Filters:
    """What a history page keeps; every field left `None` keeps everything."""

    #: Stored `model_name`s (a family's decision, or one of its models asked alone).
    model_names: tuple[str, ...] | None = None
    model_version: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    label: str | None = None
    entity_id: str | None = None
    request_id: str | None = None
    source: str | None = None
    protocol: str | None = None
    role: str | None = "champion"
    #: `(document, key, value)`: the document's key, as text, equals the value.
    documents: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last row's `(created_at, id)`."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Group:
    """One group of an aggregate."""

    value: str | None
    count: int
    mean_score: float | None
    #: Share of rows whose rate key is true (None when no rate key was asked for).
    rate: float | None


@dataclass(frozen=True)
class Hour:
    """Volume and latency of one model version in one hour."""

    hour: datetime
    model_name: str
    model_version: str
    count: int
    mean_latency_ms: float
    max_latency_ms: float


class _DocumentText(ColumnElement[str]):
    """A document's value at `key` as text, JSON booleans as `true`/`false` on every
    database: PostgreSQL's `->>` says so, SQLite's `json_extract` says 1 and 0. Each form is
    built once, so a query that names it twice (select and group by) binds the same
    parameters; the cache key is (document, key)."""

    type = String()
    inherit_cache = True
    _traverse_internals = [
        ("document", InternalTraversal.dp_string),
        ("key", InternalTraversal.dp_string),
    ]

    def __init__(self, document: str, key: str) -> None:
        self.document, self.key = document, key
        column = predictions.c[document]
        self.portable = column[key].as_string()
        path = literal(f'$."{key}"', String)
        kind = func.json_type(column, path)
        self.sqlite = case(
            (kind == "true", literal("true")),
            (kind == "false", literal("false")),
            else_=cast(func.json_extract(column, path), String),
        )


@compiles(_DocumentText)
def _document_text_default(element: _DocumentText, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.portable, **kw))


@compiles(_DocumentText, "sqlite")
def _document_text_sqlite(element: _DocumentText, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.sqlite, **kw))


def _document_text(document: str, key: str) -> ColumnElement[Any]:
    if document not in DOCUMENTS:
        raise ValueError(f"unknown document {document!r}: one of {', '.join(DOCUMENTS)}")
    return _DocumentText(document, key)


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    c = predictions.c
    found: list[ColumnElement[bool]] = []
    if filters.model_names is not None:
        found.append(c.model_name.in_(filters.model_names))
    pairs: tuple[tuple[Any, Any], ...] = (
        (c.model_version, filters.model_version),
        (c.label, filters.label),
        (c.entity_id, filters.entity_id),
        (c.request_id, filters.request_id),
        (c.source, filters.source),
        (c.protocol, filters.protocol),
        (c.role, filters.role),
    )
    found.extend(column == value for column, value in pairs if value is not None)
    if filters.since is not None:
        found.append(c.created_at >= filters.since)
    if filters.until is not None:
        found.append(c.created_at < filters.until)
    for document, key, value in filters.documents:
        found.append(_document_text(document, key) == value)
    return found


def page(
    connection: Connection, *, filters: Filters, first: int, after: Cursor | None = None
) -> list[Row[Any]]:
    """Up to `first + 1` rows after `after`, newest first (the extra row says whether there
    is a next page)."""
    c = predictions.c
    conditions = _conditions(filters)
    if after is not None:
        # A row-value comparison, which PostgreSQL reads as one index range.
        conditions.append(tuple_(c.created_at, c.id) < tuple_(after.created_at, after.id))
    query = (
        select(predictions)
        .where(*conditions)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(first + 1)
    )
    return list(connection.execute(query).all())


def shadows(connection: Connection, *, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Row[Any]]]:
    """The challenger rows shadowing each of `ids`, oldest first, in one query."""
    found: dict[uuid.UUID, list[Row[Any]]] = {i: [] for i in ids}
    if not ids:
        return found
    c = predictions.c
    query = (
        select(predictions)
        .where(c.shadow_of.in_(list(ids)), c.role == "challenger")
        .order_by(c.created_at, c.id)
    )
    for row in connection.execute(query):
        found.setdefault(row.shadow_of, []).append(row)
    return found


def band(value: ColumnElement[Any], edges: Sequence[float], names: Sequence[str]) -> Any:
    """`value` cut into the bands `edges` make, named by `names` (one more than the edges);
    a row without the value is in no band (NULL compares as neither below nor above)."""
    whens = [(value < edge, name) for edge, name in zip(edges, names, strict=False)]
    return case((value.is_(None), null()), *whens, else_=names[-1])


#: Rows are written a moment after they are made (the writer flushes every 0.25 s): hours are
#: rolled up only once this much past their end.
ROLLUP_LAG = timedelta(minutes=5)

#: Partial sums of a group: rows, score sum, rows with a score, rows answered yes.
_Sums = list[float]


def _floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at else floor + timedelta(hours=1)


def _rolls_up(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def groups(
    connection: Connection,
    *,
    model_name: str,
    document: str,
    key: str,
    since: datetime,
    until: datetime,
    bands: Sequence[float] = (),
    band_names: Sequence[str] = (),
    rate_key: str | None = None,
    now: datetime | None = None,
) -> list[Group]:
    """Champion rows of `model_name` in `[since, until)` grouped by the document's key (cut
    into bands when edges are given): count, mean score and the share with `rate_key` true.

    On PostgreSQL the whole hours come from the hourly rollups (rolled up first, for the
    hours since the last call) and only the partial hours at either end from `predictions`.
    """
    c = predictions.c
    if bands:
        if len(band_names) != len(bands) + 1:
            raise ValueError("band_names must name one band more than there are edges")
        value: Any = band(c[document][key].as_float(), bands, band_names)
    else:
        value = _document_text(document, key)
    yes: Any = literal(0)
    if rate_key is not None:
        yes = case((c.outputs[rate_key].as_boolean(), 1), else_=0)
    conditions = [c.model_name == model_name, c.role == "champion"]
    spec = f"{document}.{key}|{','.join(f'{b:g}' for b in bands)}|{rate_key or ''}"
    sums: dict[str | None, _Sums] = {}
    for lo, hi, rolled in _pieces(
        connection,
        scope=model_name,
        grouping=spec,
        since=since,
        until=until,
        now=now,
        roll=lambda lo, hi: _roll(connection, conditions, value, yes, spec, lo, hi),
    ):
        if rolled:
            r = prediction_rollups.c
            query: Any = (
                select(
                    r.value,
                    func.sum(r.rows),
                    func.sum(r.score_sum),
                    func.sum(r.score_rows),
                    func.sum(r.yes_rows),
                )
                .where(
                    r.model_name == model_name,
                    r.grouping == spec,
                    r.hour >= lo,
                    r.hour < hi,
                )
                .group_by(r.value)
            )
        else:
            grouped = value.label("value")
            query = (
                select(
                    grouped,
                    func.count(),
                    func.sum(c.score),
                    func.count(c.score),
                    func.sum(cast(yes, Integer)),
                )
                .where(*conditions, c.created_at >= lo, c.created_at < hi)
                .group_by(grouped)
            )
        for group, *figures in connection.execute(query).all():
            name = None if group is None else _text(group)
            into = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            for i, figure in enumerate(figures):
                into[i] += float(figure or 0)
    found = [
        Group(
            value=name,
            count=int(rows),
            mean_score=score_sum / score_rows if score_rows else None,
            rate=None if rate_key is None else yes_rows / rows,
        )
        for name, (rows, score_sum, score_rows, yes_rows) in sums.items()
        if rows
    ]
    order = {name: i for i, name in enumerate(band_names)}
    found.sort(key=lambda g: (order.get(g.value or "", len(order)), g.value or ""))
    return found


def _pieces(
    connection: Connection,
    *,
    scope: str,
    grouping: str,
    since: datetime,
    until: datetime,
    now: datetime | None,
    roll: Any,
) -> list[tuple[datetime, datetime, bool]]:
    """`[since, until)` cut into the pieces read from rollups (`True`) and from predictions:
    the whole hours up to the grouping's mark, after rolling up the hours since it."""
    if not _rolls_up(connection):
        return [(since, until, False)]
    mark = refresh(connection, scope=scope, grouping=grouping, now=now, roll=roll)
    first, last = _ceil_hour(since), min(_floor_hour(until), mark)
    if first >= last:
        return [(since, until, False)]
    pieces = [(first, last, True)]
    if since < first:
        pieces.append((since, first, False))
    if last < until:
        pieces.append((last, until, False))
    return pieces


def stale_hours(created_at: Iterable[datetime], now: datetime) -> set[datetime]:
    """The hours of rows written at `now` that may be rolled up already (a journal replayed
    after an outage); the writer records them in `stale_rollup_hours` with the rows."""
    line = now - ROLLUP_LAG
    return {_floor_hour(at) for at in created_at if at < line}


def refresh(
    connection: Connection, *, scope: str, grouping: str, now: datetime | None, roll: Any
) -> datetime:
    """Roll up the whole hours since the grouping's mark (`roll(lo, hi)`) and the hours that
    went stale since its last look (rows written late into them), move the mark, and return
    it. One transaction under an advisory lock, so API workers never roll up an hour twice; a
    mark already fresh costs one primary-key read and one index read."""
    upper = _floor_hour((now or datetime.now(UTC)) - ROLLUP_LAG)
    m, s = rollup_marks.c, stale_rollup_hours.c
    where = (m.scope == scope, m.grouping == grouping)
    newest_stale = select(func.coalesce(func.max(s.seq), 0))
    fresh = connection.execute(
        select(m.rolled_until, m.stale_seen, newest_stale.scalar_subquery()).where(*where)
    ).one_or_none()
    if fresh is not None and fresh[0] >= upper and fresh[1] >= fresh[2]:
        connection.commit()
        return fresh[0]
    connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"{scope}/{grouping}"))))
    state = connection.execute(select(m.rolled_until, m.stale_seen).where(*where)).one_or_none()
    seen = connection.execute(newest_stale).scalar_one()
    if state is None:
        c = predictions.c
        oldest = select(func.min(c.created_at))
        if scope != "*":
            oldest = oldest.where(c.model_name == scope)
        found = connection.execute(oldest).scalar_one_or_none()
        lower = upper if found is None else min(_floor_hour(found), upper)
        if lower < upper:
            roll(lower, upper)
        connection.execute(
            insert(rollup_marks).values(
                scope=scope, grouping=grouping, rolled_until=upper, stale_seen=seen
            )
        )
        connection.commit()
        return upper
    mark, stale_seen = state
    if stale_seen < seen:
        hours = connection.execute(
            select(s.hour).distinct().where(s.seq > stale_seen, s.seq <= seen, s.hour < mark)
        ).scalars()
        for hour in sorted(hours):
            _unroll(connection, scope, grouping, hour, hour + timedelta(hours=1))
            roll(hour, hour + timedelta(hours=1))
    if mark < upper:
        roll(mark, upper)
        mark = upper
    connection.execute(
        update(rollup_marks).where(*where).values(rolled_until=mark, stale_seen=seen)
    )
    connection.commit()
    return mark


def _unroll(connection: Connection, scope: str, grouping: str, lo: datetime, hi: datetime) -> None:
    """Delete the grouping's rollups of `[lo, hi)`, to roll those hours up again."""
    r = prediction_rollups.c
    statement = delete(prediction_rollups).where(r.grouping == grouping, r.hour >= lo, r.hour < hi)
    if scope != "*":
        statement = statement.where(r.model_name == scope)
    connection.execute(statement)


def _roll(
    connection: Connection,
    conditions: list[ColumnElement[bool]],
    value: Any,
    yes: Any,
    spec: str,
    lo: datetime,
    hi: datetime,
) -> None:
    c = predictions.c
    hour = func.date_trunc("hour", c.created_at).label("hour")
    grouped = value.label("value")
    rows = (
        select(
            hour,
            c.model_name,
            c.model_version,
            literal(spec).label("grouping"),
            grouped,
            func.count(),
            func.sum(c.score),
            func.count(c.score),
            func.sum(cast(yes, Integer)),
            func.sum(c.latency_ms),
            func.max(c.latency_ms),
        )
        .where(*conditions, c.created_at >= lo, c.created_at < hi)
        .group_by(hour, c.model_name, c.model_version, grouped)
    )
    r = prediction_rollups.c
    columns = [
        r.hour,
        r.model_name,
        r.model_version,
        r.grouping,
        r.value,
        r.rows,
        r.score_sum,
        r.score_rows,
        r.yes_rows,
        r.latency_sum,
        r.latency_max,
    ]
    connection.execute(insert(prediction_rollups).from_select(columns, rows))


def hourly(
    connection: Connection,
    *,
    since: datetime,
    until: datetime,
    model_names: tuple[str, ...] | None = None,
    now: datetime | None = None,
) -> list[Hour]:
    """Champion rows per model version per hour in `[since, until)`: count and latency
    (whole hours from the rollups on PostgreSQL, as `groups`)."""
    c = predictions.c
    if _rolls_up(connection):
        hour: Any = func.date_trunc("hour", c.created_at)
    else:
        hour = func.strftime("%Y-%m-%d %H:00:00", c.created_at)
    hour = hour.label("hour")
    sums: dict[tuple[datetime, str, str], list[float]] = {}
    everything = [c.role == "champion"]
    for lo, hi, rolled in _pieces(
        connection,
        scope="*",
        grouping="volume",
        since=since,
        until=until,
        now=now,
        roll=lambda lo, hi: _roll(
            connection, everything, literal(None, type_=String), literal(0), "volume", lo, hi
        ),
    ):
        if rolled:
            r = prediction_rollups.c
            query: Any = (
                select(
                    r.hour,
                    r.model_name,
                    r.model_version,
                    func.sum(r.rows),
                    func.sum(r.latency_sum),
                    func.max(r.latency_max),
                )
                .where(r.grouping == "volume", r.hour >= lo, r.hour < hi)
                .group_by(r.hour, r.model_name, r.model_version)
            )
            if model_names is not None:
                query = query.where(r.model_name.in_(model_names))
        else:
            query = (
                select(
                    hour,
                    c.model_name,
                    c.model_version,
                    func.count(),
                    func.sum(c.latency_ms),
                    func.max(c.latency_ms),
                )
                .where(*everything, c.created_at >= lo, c.created_at < hi)
                .group_by(hour, c.model_name, c.model_version)
            )
            if model_names is not None:
                query = query.where(c.model_name.in_(model_names))
        for at, name, version, count, total, top in connection.execute(query).all():
            into = sums.setdefault((_hour(at), name, version), [0.0, 0.0, 0.0])
            into[0] += float(count)
            into[1] += float(total)
            into[2] = max(into[2], float(top))
    return [
        Hour(
            hour=at,
            model_name=name,
            model_version=version,
            count=int(count),
            mean_latency_ms=total / count,
            max_latency_ms=top,
        )
        for (at, name, version), (count, total, top) in sorted(sums.items())
    ]


def _hour(value: Any) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
