"""A model family's declaration: everything the serving core, training and every protocol need
to know about one business decision, in one typed, frozen object.

A family is one decision (churn risk, credit evaluation, ...) served by one or more registered
models. Its module in `models/` exports a `Family`; `models/catalog.py` lists them. The server
builds one model service, one batcher, one shadow and the routes of each family from it; the
training CLI trains and gates its models from it; the MLflow signature and the API schemas come
from its `record` and `answer`. No server, HTTP or SQL here: those read the declaration.

Where the work happens:
- in the family's model worker, a `Scorer` (the versions of its models that serve together:
  champion, or challenger) scores records, or a feature frame for files, with the versions'
  decision thresholds;
- in the API worker, `decide` turns the worker's outputs into answers (credit combines the
  segment and approval models there: the client-evaluation layer); by default the outputs are
  the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pandas as pd
from pydantic import BaseModel

if TYPE_CHECKING:
    from models.registry import ServedModel

#: Validated columns of an upload, by field (`models/tabular.validate_columns`).
Columns = Mapping[str, Any]


class FamilyError(ValueError):
    """A family's declaration is incomplete or inconsistent; the message names the family and
    the piece."""


class Scorer(Protocol):
    """The versions of a family's models that serve together, loaded in a model worker."""

    @property
    def models(self) -> tuple[ServedModel, ...]:
        """One loaded version per registered model, in the family's `models` order."""
        ...

    def score(self, records: Sequence[Any]) -> list[Any]:
        """The family's `scored` outputs for validated records, in order."""
        ...


class FrameScorer(Scorer, Protocol):
    """A scorer that also takes a file's feature frame and answers columns (no record per
    row on either side of the process boundary)."""

    def score_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The answer's columns for each row (`Family.output_columns`, then any
        `Family.optional_columns` the versions produce), `model_version` among them."""
        ...


@dataclass(frozen=True)
class Recording:
    """How a prediction is stored: which decision it is, which model's version fills the
    row's `model_version`, and which answer fields index the row (entity, score, label)."""

    decision: str
    primary_model: str
    entity_field: str
    score_field: str
    label_field: str


@dataclass(frozen=True)
class Grouping:
    """One way the history's aggregates may group a family's rows: the stored document
    (`inputs`: the record; `outputs`: the answer) and key it reads, and for a number the band
    edges that cut it into bands (`(12, 24)`: `<12`, `12-24`, `>=24`), so that tenure is
    grouped by band, not by month. No edges: the value itself is the group."""

    document: Literal["inputs", "outputs"]
    key: str
    bands: tuple[float, ...] = ()

    def band_names(self) -> tuple[str, ...]:
        """The group names `bands` makes, in order."""
        edges = [f"{edge:g}" for edge in self.bands]
        if not edges:
            return ()
        middle = [f"{low}-{high}" for low, high in pairwise(edges)]
        return (f"<{edges[0]}", *middle, f">={edges[-1]}")


@dataclass(frozen=True)
class Rate:
    """The share of rows whose answer says yes, and what to call it (churn: "churn rate" of
    `churn`; credit: "approval rate" of `eligible`). `key` is a boolean field of the answer."""

    name: str
    key: str


@dataclass(frozen=True)
class Gate:
    """What a candidate version must not score worse on than the alias's holder, on the
    hold-out rows neither trained on. `score(model, frame)` reads the stored evaluation set."""

    metric: str
    score: Callable[[Any, pd.DataFrame], float]
    higher_is_better: bool = True

    def better(self, candidate: float, holder: float) -> bool:
        """Whether `candidate` is at least as good as `holder`."""
        return candidate >= holder if self.higher_is_better else candidate <= holder


@dataclass(frozen=True)
class ModelView:
    """What one registered model of a family that decides with several answers on its own
    (the Open Inference Protocol serves `credit-segment` and `credit-approval` as models too):
    its output type, taken from the worker's output for a record, and which of its fields are
    stored as a row's score and label."""

    output: type[BaseModel]
    take: Callable[[Any], BaseModel]
    score_field: str | None = None
    label_field: str | None = None


@dataclass(frozen=True)
class Training:
    """How the family's models are trained: `module` (importable, in `training/`) defines
    `add_arguments(parser)` and `run(args) -> int`; `default_data` says what it reads when no
    `--data` is given."""

    module: str
    default_data: str
    help: str


@dataclass(frozen=True)
class Family:
    """One business decision and everything every surface needs to serve it."""

    #: The family's name: its URL prefix, model-service name and settings prefix.
    name: str
    #: The registered models that decide together (one loaded version each per scorer).
    models: tuple[str, ...]
    #: One input record (pydantic, `extra="forbid"`), and one answer.
    record: type[BaseModel]
    answer: type[BaseModel]
    #: The JSON body's list field: `{"customers": [...]}`.
    records_field: str
    recording: Recording
    #: What the model worker returns per record (default: the answer itself).
    scored: type[BaseModel] | None = None
    #: The API worker's rule from the worker's outputs to answers (default: they are answers).
    decide: Callable[[Sequence[Any], Sequence[Any]], list[Any]] | None = None
    #: Builds a `Scorer` from one loaded version per model (by name); `previous` holds the
    #: scorers the worker already has, so that what belongs to a version is reused with it.
    assemble: Callable[[Mapping[str, ServedModel], Sequence[Any]], Scorer] | None = None
    #: Per-model facts `GET /models` adds (credit: the segment profiles).
    describe_extra: Callable[[Any, ServedModel], dict[str, Any]] | None = None
    #: The route verb: `POST /{name}/{verb}` and `/{name}/{verb}_file`.
    verb: str = "predict"
    summary: str = ""
    file_summary: str = ""
    #: The file answer's name in Content-Disposition (`<name>.<format>`).
    file_answer: str = ""
    #: Every name an upload's column may carry, mapped to the field it feeds.
    column_aliases: Mapping[str, str] = field(default_factory=dict)
    #: The columns a file's answer adds, in order; then those optional ones it produces.
    output_columns: tuple[str, ...] = ()
    optional_columns: tuple[str, ...] = ()
    #: Files go to the worker as feature frames (`FrameScorer.score_frame`) when set: the
    #: validated columns to the frame the pipelines were trained on.
    feature_frame: Callable[[Columns], pd.DataFrame] | None = None
    #: The answers' columns for a file, when it is scored as records (no `feature_frame`).
    file_columns: Callable[[Sequence[Any]], dict[str, list[Any]]] | None = None
    #: The promotion gate of each registered model.
    gates: Mapping[str, Gate] = field(default_factory=dict)
    #: Each registered model's own answer, for a family that decides with several models.
    views: Mapping[str, ModelView] = field(default_factory=dict)
    training: Training | None = None
    #: How the history's aggregates may group this family's rows (`/graphql`), by name.
    groupings: Mapping[str, Grouping] = field(default_factory=dict)
    #: The yes/no share the aggregates report beside the mean score, if the answer has one.
    rate: Rate | None = None

    @property
    def worker_output(self) -> type[BaseModel]:
        return self.scored or self.answer

    @property
    def route(self) -> str:
        return f"/{self.name}/{self.verb}"

    @property
    def file_route(self) -> str:
        return f"/{self.name}/{self.verb}_file"

    @property
    def operation(self) -> str:
        """The OpenAPI operation id of the JSON route (the file route's adds `_file`)."""
        return f"{self.name.replace('-', '_')}_{self.verb}"

    def answers(self, records: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
        """The answers for `records` from the worker's outputs (`decide`, if declared)."""
        return list(outputs) if self.decide is None else self.decide(records, outputs)

    def check(self) -> Family:
        """This declaration, or a `FamilyError` naming the family and what is missing or
        inconsistent (run at start-up for every family in the catalog)."""
        problems: list[str] = []
        if not self.name or not self.name.replace("-", "").isalnum() or not self.name.islower():
            problems.append("name: lower-case letters, digits and '-' only")
        if not self.models:
            problems.append("models: no registered model named")
        if self.assemble is None:
            problems.append("assemble: no way to build a scorer from loaded versions")
        if self.scored is not None and self.decide is None:
            problems.append(
                "decide: the worker's outputs differ from answers but no rule joins them"
            )
        fields = set(self.answer.model_fields)
        for piece in ("entity_field", "score_field", "label_field"):
            name = getattr(self.recording, piece)
            if name not in fields:
                problems.append(
                    f"recording.{piece}: {name!r} is not a field of {_name(self.answer)}"
                )
        if self.recording.primary_model not in self.models:
            problems.append(
                f"recording.primary_model: {self.recording.primary_model!r} is not served"
            )
        if self.recording.entity_field not in self.record.model_fields:
            problems.append(
                f"recording.entity_field: {self.recording.entity_field!r} is not a field of "
                f"{_name(self.record)} (answers echo it)"
            )
        if not self.records_field:
            problems.append("records_field: the JSON body's list field is not named")
        if not self.output_columns:
            problems.append("output_columns: a file's answer would add no column")
        if self.feature_frame is None and self.file_columns is None:
            problems.append("file_columns: files need feature_frame or file_columns")
        unknown = sorted(set(self.column_aliases.values()) - set(self.record.model_fields))
        if unknown:
            problems.append(f"column_aliases: {', '.join(unknown)} are not fields of the record")
        for model in self.models:
            if model not in self.gates:
                problems.append(f"gates: no promotion gate for {model!r}")
            if len(self.models) > 1 and model not in self.views:
                problems.append(f"views: no answer of {model!r} on its own")
        for model, view in self.views.items():
            if model not in self.models:
                problems.append(f"views: {model!r} is not served")
            for piece in ("score_field", "label_field"):
                name = getattr(view, piece)
                if name is not None and name not in view.output.model_fields:
                    problems.append(
                        f"views[{model!r}].{piece}: {name!r} is not a field of {_name(view.output)}"
                    )
        if self.training is None:
            problems.append("training: no training entry point")
        documents = {"inputs": self.record.model_fields, "outputs": self.answer.model_fields}
        for name, grouping in self.groupings.items():
            if grouping.key not in documents.get(grouping.document, {}):
                problems.append(
                    f"groupings[{name!r}]: {grouping.key!r} is not a field of its "
                    f"{grouping.document}"
                )
            if list(grouping.bands) != sorted(set(grouping.bands)):
                problems.append(f"groupings[{name!r}]: band edges must rise")
        if self.rate is not None and self.rate.key not in fields:
            problems.append(f"rate: {self.rate.key!r} is not a field of {_name(self.answer)}")
        if problems:
            raise FamilyError(f"model family {self.name!r}: " + "; ".join(problems))
        return self


def _name(model: type[BaseModel]) -> str:
    return model.__name__


def records_file_columns(output_columns: Sequence[str]) -> Callable[[Sequence[Any]], dict]:
    """`file_columns` that takes `output_columns` from each answer as it dumps to JSON."""

    def columns(answers: Sequence[Any]) -> dict[str, list[Any]]:
        dumped = [a.model_dump(mode="json") for a in answers]
        return {name: [d[name] for d in dumped] for name in output_columns}

    return columns
