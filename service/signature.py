"""What a model file declares, as its runtime reads it: each input's and output's name, datatype and shape.

A dimension is an ``int`` when the graph fixes it, the symbolic name the graph gives it (``"batch"``) or ``None``
when it is open and unnamed. A tensor of a type nnserve cannot serve (a sequence or map, bfloat16, ...) keeps the
runtime's type string in ``unsupported`` so a refusal can name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Dim = int | str | None


@dataclass(frozen=True)
class GraphTensor:
    name: str
    datatype: str  # an OIP datatype, or "" when unsupported
    dims: tuple[Dim, ...]
    unsupported: str = ""  # the runtime's own type string when datatype is ""

    @property
    def shape(self) -> list[int]:
        """The config's form: -1 for every open axis."""
        return [d if isinstance(d, int) and d >= 0 else -1 for d in self.dims]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name} {self.datatype or self.unsupported} [{dims}]"


@dataclass(frozen=True)
class GraphSignature:
    inputs: tuple[GraphTensor, ...]
    outputs: tuple[GraphTensor, ...]
    metadata: dict[str, str] = field(default_factory=dict)  # the file's own key/value metadata
    opset: int | None = None

    def unsupported(self) -> list[str]:
        return [f"{kind} '{t.name}' is of type {t.unsupported}"
                for kind, tensors in (("input", self.inputs), ("output", self.outputs))
                for t in tensors if not t.datatype]
