"""The gRPC code nnserve carries: the generated modules are exactly what the documented command produces from the
.proto files beside them, and every message nnserve declares is wire-compatible with tritonclient's own (same
names, field numbers, types and labels), so the unmodified client and nnserve agree byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from service.protocols.grpc_proto import generate, oip_pb2


def test_the_generated_modules_are_not_stale(tmp_path: Path) -> None:
    for fresh in generate.generate(tmp_path):
        committed = generate.HERE / fresh.name
        assert committed.is_file(), f"{fresh.name} is not committed: run python -m {generate.PACKAGE}.generate"
        assert committed.read_text() == fresh.read_text(), (
            f"{fresh.name} is stale: run python -m {generate.PACKAGE}.generate")


def _fields(message: Descriptor) -> dict[str, tuple[int, int, bool, str]]:
    return {f.name: (f.number, f.type, f.is_repeated,
                     f.message_type.full_name if f.message_type else f.enum_type.full_name if f.enum_type else "")
            for f in message.fields}


def _messages(descriptor: Descriptor) -> list[Descriptor]:
    out = [descriptor]
    for nested in descriptor.nested_types:
        out += _messages(nested)
    return out


def triton_pool() -> object:
    tritonclient = pytest.importorskip("tritonclient.grpc")
    return tritonclient.service_pb2.DESCRIPTOR.pool


def test_every_message_matches_tritonclients() -> None:
    pool = triton_pool()
    ours = [m for top in oip_pb2.DESCRIPTOR.message_types_by_name.values() for m in _messages(top)]
    assert len(ours) > 40
    for message in ours:
        theirs = pool.FindMessageTypeByName(message.full_name)  # type: ignore[attr-defined]
        their_fields = _fields(theirs)
        for name, spec in _fields(message).items():
            theirs_spec = their_fields.get(name)
            assert theirs_spec == spec, f"{message.full_name}.{name}: ours {spec}, theirs {theirs_spec}"


def test_every_enum_value_and_method_matches_tritonclients() -> None:
    pool = triton_pool()
    enums: list[EnumDescriptor] = list(oip_pb2.DESCRIPTOR.enum_types_by_name.values())
    for message in oip_pb2.DESCRIPTOR.message_types_by_name.values():
        enums += list(message.enum_types)
    for enum in enums:
        theirs = pool.FindEnumTypeByName(enum.full_name)  # type: ignore[attr-defined]
        assert {v.name: v.number for v in enum.values}.items() <= {v.name: v.number for v in theirs.values}.items()
    service = oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    their_service = pool.FindServiceByName("inference.GRPCInferenceService")  # type: ignore[attr-defined]
    for method in service.methods:
        theirs = their_service.FindMethodByName(method.name)
        assert (method.input_type.full_name, method.output_type.full_name, method.client_streaming,
                method.server_streaming) == (theirs.input_type.full_name, theirs.output_type.full_name,
                                             theirs.client_streaming, theirs.server_streaming)
