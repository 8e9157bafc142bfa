"""Request layouts, read once: what a client repeats from call to call is not read again.

Clients of the Open Inference Protocol repeat everything but the values: tensor names,
datatypes, shapes, parameters, the outputs they ask for (tritonclient builds the same inputs
for every call, over gRPC and over REST). For the 20 single-element tensors of one churn
customer, reading and checking those costs more than the values. So each protocol keys what it
read by the request without its values (gRPC: the message without raw contents and id; REST:
the JSON header of a binary request, where the values are not), and a known layout only reads
the values, through readers prepared for it, with the same checks and messages as the full
path (`serving/oip/tensors.py` words every refusal).

Bounded: the first `size` layouts seen stay, and keys larger than `max_key_bytes` are never
kept; a request whose layout is not kept is read in full, as before. A stranger who fills the
cache only makes other clients' requests take the full path: a layout is kept only once it has
passed the model's checks, and it holds no values.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from serving.oip.dataplane import InferenceModel, InferRequest, check_layout, validate
from serving.oip.tensors import binary_reader, element_count

Reader = Callable[[bytes], list[Any]]


@dataclass(frozen=True)
class Layout:
    """A request's tensors without their values, read and checked once."""

    model: InferenceModel
    rows: int
    #: Per input, in order: its name and the reader of its binary values.
    readers: tuple[tuple[str, Reader], ...]
    #: The request without its tensors: id (where the key holds it), parameters, outputs.
    request: InferRequest
    #: REST: where each input's values lie in the binary part.
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def binary_size(self) -> int:
        """REST: the binary part's length (its last input's end)."""
        return self.spans[-1][1] if self.spans else 0

    def records(self, raw: Sequence[bytes]) -> list[BaseModel]:
        """The records the inputs' binary values (`raw`, one per input, in order) hold."""
        columns = {name: read(raw[i]) for i, (name, read) in enumerate(self.readers)}
        return validate(self.model, columns, self.rows)

    def split(self, binary: bytes) -> list[bytes]:
        """A REST body's binary part, one slice per input."""
        return [binary[start:end] for start, end in self.spans]


class Layouts:
    """The layouts seen so far, by key (see the module's docstring)."""

    def __init__(self, size: int = 256, max_key_bytes: int = 16_384) -> None:
        self.size, self.max_key_bytes = size, max_key_bytes
        self._known: dict[Hashable, Layout] = {}

    def get(self, key: Hashable) -> Layout | None:
        return self._known.get(key)

    def learn(
        self,
        key: Hashable,
        key_bytes: int,
        model: InferenceModel,
        request: InferRequest,
        spans: tuple[tuple[int, int], ...] = (),
    ) -> list[BaseModel] | None:
        """The records of `request` (read in full, its values binary), its layout kept under
        `key` while there is room; None, with nothing kept, when there is none (the caller
        validates it the usual way)."""
        if key_bytes > self.max_key_bytes or len(self._known) >= self.size:
            return None
        rows = check_layout(model, request)
        readers = tuple(
            (t.name, binary_reader(t.name, t.datatype, element_count(t.name, t.shape)))
            for t in request.inputs
        )
        self._known[key] = Layout(
            model,
            rows,
            readers,
            InferRequest([], request.id, request.parameters, request.outputs),
            spans,
        )
        return validate(model, {t.name: t.data for t in request.inputs}, rows)
