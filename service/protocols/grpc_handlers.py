"""The methods of a gRPC service, built from its descriptor, whose request decoders never raise: a request that is
not a valid protobuf becomes a ``Malformed`` that is answered INVALID_ARGUMENT naming the problem (gRPC itself would
answer INTERNAL, "Exception deserializing request!"). Streams get the ``Malformed`` itself, to answer in the stream.
Both gRPC servers (nnserve's own HTTP/2 front and grpcio's) serve these same methods."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass


class Malformed:
    """What a request that is not a valid protobuf of its message type decodes to: the servicer answers it
    INVALID_ARGUMENT naming the problem (gRPC itself would answer INTERNAL, "Exception deserializing request!")."""

    def __init__(self, message: str) -> None:
        self.message = message


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    decode: Callable[[bytes], Any]  # never raises: a Malformed instead
    encode: Callable[[Any], bytes]
    client_streaming: bool
    server_streaming: bool
    implementation: Callable[[Any, Any], Any]  # (request or request iterator, context)

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _decoder(message_class: Any, method: str) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Malformed(f"{method}: the request is not a valid {message_class.DESCRIPTOR.full_name} "
                             f"protobuf ({error}; {len(data)} bytes)")
    return decode


def service_methods(service: Any, servicer: Any) -> list[Method]:
    """The service's methods, served by ``servicer``'s attributes of the same names."""
    methods = []
    for method in service.methods:
        request, response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        implementation = getattr(servicer, method.name)
        if not method.client_streaming:
            implementation = _refusing_malformed(implementation)
        methods.append(Method(service.full_name, method.name, _decoder(request, method.name),
                              response.SerializeToString, method.client_streaming, method.server_streaming,
                              implementation))
    return methods


def checked_handlers(service: Any, servicer: Any) -> Any:
    """The service's methods as grpcio's handlers."""
    factories = {(False, False): grpc.unary_unary_rpc_method_handler,
                 (False, True): grpc.unary_stream_rpc_method_handler,
                 (True, True): grpc.stream_stream_rpc_method_handler}
    handlers = {m.name: factories[(m.client_streaming, m.server_streaming)](
        m.implementation, request_deserializer=m.decode, response_serializer=m.encode)
        for m in service_methods(service, servicer)}
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _refusing_malformed(method: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    if inspect.isasyncgenfunction(method):
        async def stream(request: Any, context: Any) -> Any:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for answer in method(request, context):
                yield answer
        return stream

    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await method(request, context)
    return call
