"""GraphQL over prediction history (`/graphql`, strawberry), built from the catalog.

The schema names no family: which families exist, which groupings each offers and what its
rate is called all come from the declarations (`Family.groupings`, `Family.rate`,
`Family.recording`). The SQL is `persistence/history.py`'s; it runs in a worker thread, on one
engine per API worker made on first use, so no resolver blocks the event loop.

Pages are Relay connections paged by keyset (a cursor over `(created_at, id)`), not by offset.
Every query is checked before it runs: depth, tokens, aliases (strawberry's limiters) and its
cost (ours, `CostLimit`: strawberry has none). Unexpected errors are masked; the refusals this
module makes (`HistoryError`) keep their message. The front door (`serving/access.py`) lets
only history and admin keys reach it.
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import anyio.to_thread
import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from sqlalchemy import Engine, Row
from strawberry.asgi import GraphQL
from strawberry.dataloader import DataLoader
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.relay import PageInfo
from strawberry.scalars import JSON
from strawberry.types import Info

from models.family import Family
from persistence import history
from persistence.db import make_engine
from persistence.settings import get_settings as get_persistence_settings
from serving.settings import get_settings as get_access_settings

T = TypeVar("T")

#: Rows per page by default, and at most.
DEFAULT_FIRST = 20
MAX_FIRST = 100
#: The longest time range one aggregate may cover.
MAX_SPAN = timedelta(days=92)
#: Limits every query is checked against before it runs.
MAX_DEPTH = 10
MAX_TOKENS = 2000
MAX_ALIASES = 15
MAX_COST = 1000
#: What each field costs (`CostLimit`): a field that runs a query costs its query; a page
#: multiplies what each of its rows asks for by the rows it may return.
FIELD_COSTS = {"predictions": 10, "aggregate": 50, "volume": 50, "shadows": 2}


class HistoryError(ValueError):
    """A query the history refuses, with a message for the caller (never masked)."""


def grouping_query(family: Family, by: str) -> dict[str, Any]:
    """What `history.groups` needs to aggregate `family` by its grouping `by` (the same for
    the resolver and `python -m serving.rollups`, so both roll up the same groupings)."""
    grouping = family.groupings.get(by)
    if grouping is None:
        offered = ", ".join(family.groupings) or "none"
        raise HistoryError(f"by: {family.name} has no grouping {by!r} (it has {offered})")
    return {
        "model_name": family.recording.decision,
        "document": grouping.document,
        "key": grouping.key,
        "bands": grouping.bands,
        "band_names": grouping.band_names(),
        "rate_key": None if family.rate is None else family.rate.key,
    }


# ---------------------------------------------------------------- engine, one per API worker

_engine_lock = threading.Lock()
_engine: Engine | None = None


def engine() -> Engine:
    """This worker's engine on `DATABASE_URL`, made on first use (never at import time)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = make_engine(get_persistence_settings().database_url)
        return _engine


# ---------------------------------------------------------------- cursors


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque cursor for the row `(created_at, id)`."""
    at = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    raw = f"{at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> history.Cursor:
    """The row a cursor names, or a `HistoryError`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, _, row_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return history.Cursor(datetime.fromisoformat(at), uuid.UUID(row_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HistoryError(f"after: {cursor!r} is not a cursor this API gave") from None


# ---------------------------------------------------------------- types


@strawberry.type(description="One stored prediction: what was asked, what was answered.")
class Prediction:
    id: strawberry.ID
    request_id: str
    created_at: datetime
    family: str | None = strawberry.field(description="The catalog family that made it.")
    model: str = strawberry.field(description="The stored model name (a family's decision).")
    version: str
    versions: JSON | None = strawberry.field(description="Every model version behind it.")
    source: str = strawberry.field(description="api or file")
    protocol: str = strawberry.field(description="http, oip-rest or oip-grpc")
    entity_id: str | None
    score: float | None
    label: str | None
    latency_ms: float
    role: str = strawberry.field(description="champion (answered) or challenger (shadow)")
    shadow_of: strawberry.ID | None
    inputs: JSON | None = strawberry.field(description="The record as it was validated.")
    outputs: JSON | None = strawberry.field(description="The answer as it was given.")

    @strawberry.field(description="The challenger's shadow scores of this prediction.")
    async def shadows(self, info: Info) -> list[Prediction]:
        loader: DataLoader[uuid.UUID, list[Prediction]] = info.context["shadows"]
        return await loader.load(uuid.UUID(str(self.id)))


@strawberry.type
class PredictionEdge:
    cursor: str
    node: Prediction


@strawberry.type(description="A page of predictions, newest first, paged by keyset cursor.")
class PredictionConnection:
    edges: list[PredictionEdge]
    page_info: PageInfo

    @classmethod
    def resolve_connection(
        cls, rows: Sequence[Prediction], *, first: int, after: str | None
    ) -> PredictionConnection:
        """The page from up to `first + 1` rows: the extra row only says a next page exists."""
        edges = [
            PredictionEdge(
                cursor=encode_cursor(node.created_at, uuid.UUID(str(node.id))), node=node
            )
            for node in rows[:first]
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(rows) > first,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


@strawberry.input(description="Keeps the predictions that match every field given.")
class GroupValue:
    name: str = strawberry.field(description="A grouping of the family (see `families`).")
    value: str


@strawberry.input(description="Which predictions a page keeps; every field is optional.")
class PredictionFilter:
    family: str | None = None
    model: str | None = strawberry.field(
        default=None, description="A stored model name, e.g. one model of a family asked alone."
    )
    version: str | None = None
    since: datetime | None = strawberry.field(default=None, description="Inclusive.")
    until: datetime | None = strawberry.field(default=None, description="Exclusive.")
    label: str | None = strawberry.field(
        default=None, description="The stored label: a risk band, or a decision (True/False)."
    )
    groups: list[GroupValue] | None = strawberry.field(
        default=None,
        description='Grouping values to match, e.g. [{name: "segment", value: "2"}]; '
        "needs `family`.",
    )
    entity_id: str | None = None
    request_id: str | None = None
    source: str | None = None
    protocol: str | None = None
    role: str | None = strawberry.field(
        default="champion", description="champion (default), challenger, or null for both."
    )


@strawberry.type
class Grouping:
    name: str
    document: str = strawberry.field(description="inputs or outputs")
    key: str
    bands: list[str] = strawberry.field(description="The band names, for a banded number.")


@strawberry.type(description="A family of the catalog and what its history offers.")
class FamilyInfo:
    name: str
    decision: str = strawberry.field(description="Its stored model name.")
    models: list[str]
    score_name: str
    label_name: str
    rate_name: str | None
    groupings: list[Grouping]


@strawberry.type
class AggregateGroup:
    value: str | None
    count: int
    mean_score: float | None
    rate: float | None = strawberry.field(description="Share of rows answered yes.")


@strawberry.type(description="A family's champion rows in a time range, by one grouping.")
class Aggregate:
    family: str
    grouping: str
    score_name: str = strawberry.field(description="What mean_score averages.")
    rate_name: str | None = strawberry.field(description="What rate is, e.g. churn rate.")
    since: datetime
    until: datetime
    groups: list[AggregateGroup]


@strawberry.type(description="One model version's traffic in one hour.")
class HourlyVolume:
    hour: datetime
    model: str
    version: str
    count: int
    mean_latency_ms: float
    max_latency_ms: float


# ---------------------------------------------------------------- the history, from the catalog


def _node(row: Row[Any], families: dict[str, str]) -> Prediction:
    return Prediction(
        id=strawberry.ID(str(row.id)),
        request_id=row.request_id,
        created_at=row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC),
        family=families.get(row.model_name),
        model=row.model_name,
        version=row.model_version,
        versions=row.model_versions,
        source=row.source,
        protocol=row.protocol,
        entity_id=row.entity_id,
        score=row.score,
        label=row.label,
        latency_ms=row.latency_ms,
        role=row.role,
        shadow_of=None if row.shadow_of is None else strawberry.ID(str(row.shadow_of)),
        inputs=row.inputs,
        outputs=row.outputs,
    )


@dataclass
class History:
    """The catalog's families, and how to reach the database."""

    families: tuple[Family, ...]
    engine: Callable[[], Engine] = engine

    def __post_init__(self) -> None:
        #: Stored model name -> family name (the decision and each model asked alone).
        self.by_model = {
            name: f.name for f in self.families for name in (f.recording.decision, *f.models)
        }

    def family(self, name: str) -> Family:
        for candidate in self.families:
            if candidate.name == name:
                return candidate
        known = ", ".join(f.name for f in self.families)
        raise HistoryError(f"family: no family {name!r}; the catalog has {known}")

    async def run(self, work: Callable[..., T], /, **kwargs: Any) -> T:
        """`work(connection, **kwargs)` in a worker thread, off the event loop."""

        def call() -> T:
            with self.engine().connect() as connection:
                return work(connection, **kwargs)

        return await anyio.to_thread.run_sync(call)

    def filters(self, given: PredictionFilter | None) -> history.Filters:
        given = given or PredictionFilter()
        names: tuple[str, ...] | None = None
        #: The stored model names a `model` filter may pick: any, or the family's.
        allowed: tuple[str, ...] | None = None
        documents: list[tuple[str, str, str]] = []
        if given.family is not None:
            family = self.family(given.family)
            names = (family.recording.decision,)
            allowed = (family.recording.decision, *family.models)
            for wanted in given.groups or []:
                grouping = family.groupings.get(wanted.name)
                if grouping is None:
                    offered = ", ".join(family.groupings) or "none"
                    raise HistoryError(
                        f"groups: {family.name} has no grouping {wanted.name!r} (it has {offered})"
                    )
                if grouping.bands:
                    raise HistoryError(
                        f"groups: {wanted.name!r} is banded; filter on it by aggregate only"
                    )
                documents.append((grouping.document, grouping.key, wanted.value))
        elif given.groups:
            raise HistoryError("groups: needs a family, whose groupings they are")
        if given.model is not None:
            names = (given.model,) if allowed is None or given.model in allowed else ()
        return history.Filters(
            model_names=names,
            model_version=given.version,
            since=given.since,
            until=given.until,
            label=given.label,
            entity_id=given.entity_id,
            request_id=given.request_id,
            source=given.source,
            protocol=given.protocol,
            role=given.role,
            documents=tuple(documents),
        )

    async def shadows(self, ids: list[uuid.UUID]) -> list[list[Prediction]]:
        found = await self.run(history.shadows, ids=ids)
        return [[_node(row, self.by_model) for row in found.get(i, [])] for i in ids]


def _span(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """`[since, until)`, by default the last 7 days; refused when longer than `MAX_SPAN`."""
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=7)
    if start >= end:
        raise HistoryError("since: must be before until")
    if end - start > MAX_SPAN:
        raise HistoryError(f"since/until: at most {MAX_SPAN.days} days per aggregate")
    return start, end


def _history(info: Info) -> History:
    return cast(History, info.context["history"])


@strawberry.type
class Query:
    @strawberry.field(description="The catalog's families, their groupings and rate names.")
    def families(self, info: Info) -> list[FamilyInfo]:
        return [
            FamilyInfo(
                name=f.name,
                decision=f.recording.decision,
                models=list(f.models),
                score_name=f.recording.score_field,
                label_name=f.recording.label_field,
                rate_name=None if f.rate is None else f.rate.name,
                groupings=[
                    Grouping(name=n, document=g.document, key=g.key, bands=list(g.band_names()))
                    for n, g in f.groupings.items()
                ],
            )
            for f in _history(info).families
        ]

    @strawberry.field(description="Predictions, newest first, a keyset page at a time.")
    async def predictions(
        self,
        info: Info,
        first: int = DEFAULT_FIRST,
        after: str | None = None,
        filter: PredictionFilter | None = None,
    ) -> PredictionConnection:
        if not 1 <= first <= MAX_FIRST:
            raise HistoryError(f"first: between 1 and {MAX_FIRST}, not {first}")
        state = _history(info)
        filters = state.filters(filter)
        cursor = None if after is None else decode_cursor(after)
        rows = await state.run(history.page, filters=filters, first=first, after=cursor)
        nodes = [_node(row, state.by_model) for row in rows]
        return PredictionConnection.resolve_connection(nodes, first=first, after=after)

    @strawberry.field(
        description="A family's champion rows in [since, until) (default: the last 7 days) "
        "by one of its groupings: count, mean score and rate per group."
    )
    async def aggregate(
        self,
        info: Info,
        family: str,
        by: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Aggregate:
        state = _history(info)
        declared = state.family(family)
        start, end = _span(since, until)
        found = await state.run(
            history.groups, **grouping_query(declared, by), since=start, until=end
        )
        return Aggregate(
            family=declared.name,
            grouping=by,
            score_name=declared.recording.score_field,
            rate_name=None if declared.rate is None else declared.rate.name,
            since=start,
            until=end,
            groups=[
                AggregateGroup(value=g.value, count=g.count, mean_score=g.mean_score, rate=g.rate)
                for g in found
            ],
        )

    @strawberry.field(
        description="Champion rows per model version per hour in [since, until) (default: "
        "the last 7 days): count and latency."
    )
    async def volume(
        self,
        info: Info,
        family: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[HourlyVolume]:
        state = _history(info)
        names = None
        if family is not None:
            declared = state.family(family)
            names = (declared.recording.decision, *declared.models)
        start, end = _span(since, until)
        hours = await state.run(history.hourly, since=start, until=end, model_names=names)
        return [
            HourlyVolume(
                hour=h.hour,
                model=h.model_name,
                version=h.model_version,
                count=h.count,
                mean_latency_ms=h.mean_latency_ms,
                max_latency_ms=h.max_latency_ms,
            )
            for h in hours
        ]


# ---------------------------------------------------------------- the cost limit


def query_cost(
    selections: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> int:
    """What a selection costs: `FIELD_COSTS` per field that runs a query, 1 per other object
    field, and a page's rows times what each row asks for (`first`, or `MAX_FIRST` when it
    is a variable)."""
    if selections is None:
        return 0
    total = 0
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            inner = query_cost(selection.selection_set, fragments, seen)
            name = selection.name.value
            if name == "predictions":
                total += FIELD_COSTS[name] + _first(selection) * inner
            elif name in FIELD_COSTS:
                total += FIELD_COSTS[name] + inner
            elif selection.selection_set is not None:
                total += 1 + inner
        elif isinstance(selection, InlineFragmentNode):
            total += query_cost(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                total += query_cost(fragments[name].selection_set, fragments, seen | {name})
    return total


def _first(field: FieldNode) -> int:
    for argument in field.arguments or ():
        if argument.name.value == "first":
            if isinstance(argument.value, IntValueNode):
                return max(1, int(argument.value.value))
            return MAX_FIRST
    return DEFAULT_FIRST


def cost_limit(max_cost: int) -> type[ValidationRule]:
    """A validation rule refusing an operation whose `query_cost` exceeds `max_cost`."""

    class CostLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = {
                d.name.value: d
                for d in self.context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            cost = query_cost(node.selection_set, fragments)
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"query cost {cost} exceeds the limit of {max_cost}: ask for fewer "
                        f"rows (first, at most {MAX_FIRST}), fewer shadows or fewer aggregates "
                        "per query",
                        node,
                    )
                )

    return CostLimit


# ---------------------------------------------------------------- the schema and the app


def _masked(error: GraphQLError) -> bool:
    """Whether an error is masked: all but our refusals and validation errors (no original)."""
    original = error.original_error
    return original is not None and not isinstance(original, HistoryError)


class HistorySchema(strawberry.Schema):
    """Logs only unexpected errors: a refused query is the caller's, not a server fault."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        unexpected = [error for error in errors if _masked(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def schema(*, production: bool) -> strawberry.Schema:
    """The history schema with every limit; introspection off in production."""
    # strawberry takes configured instances as well as classes (its own type says classes).
    extensions: list[Any] = [
        QueryDepthLimiter(max_depth=MAX_DEPTH),
        MaxTokensLimiter(max_token_count=MAX_TOKENS),
        MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        AddValidationRules([cost_limit(MAX_COST)]),
        MaskErrors(should_mask_error=_masked, error_message="Unexpected error."),
    ]
    if production:
        extensions.append(DisableIntrospection())
    return HistorySchema(query=Query, extensions=extensions)


class HistoryApp(GraphQL[dict[str, Any], None]):
    """The ASGI app: a context per request with the history and a shadow loader."""

    def __init__(self, state: History, *, production: bool) -> None:
        super().__init__(
            schema(production=production), graphql_ide=None if production else "graphiql"
        )
        self.state = state

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        return {
            "request": request,
            "response": response,
            "history": self.state,
            "shadows": DataLoader(load_fn=self.state.shadows),
        }


def install(app: Any, families: Iterable[Family]) -> None:
    """Serve `/graphql` on the route table's app (a route, not a mount: `/graphql` itself
    answers, without a redirect to `/graphql/`)."""
    app.add_route("/graphql", graphql_app(families), methods=["GET", "POST"])


def graphql_app(
    families: Iterable[Family],
    *,
    production: bool | None = None,
    engine_factory: Callable[[], Engine] = engine,
) -> HistoryApp:
    """The `/graphql` app for `families`; production mode is the server settings' unless
    given."""
    if production is None:
        production = get_access_settings().environment == "production"
    return HistoryApp(History(tuple(families), engine_factory), production=production)
