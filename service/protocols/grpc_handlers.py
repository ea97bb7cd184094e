"""The method handlers of a gRPC service, built from its descriptor, whose request deserializers never raise: a
request that is not a valid protobuf becomes a ``Malformed`` that is answered INVALID_ARGUMENT naming the problem
(gRPC itself would answer INTERNAL, "Exception deserializing request!"). Streams get the ``Malformed`` itself, to
answer in the stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass


class Malformed:
    """What a request that is not a valid protobuf of its message type decodes to: the servicer answers it
    INVALID_ARGUMENT naming the problem (gRPC itself would answer INTERNAL, "Exception deserializing request!")."""

    def __init__(self, message: str) -> None:
        self.message = message


def checked_handlers(service: Any, servicer: Any) -> Any:
    """The service's method handlers, each with a deserializer that never raises, from its descriptor."""
    def parse(message_class: Any, method: str) -> Any:
        def decode(data: bytes) -> Any:
            try:
                return message_class.FromString(data)
            except DecodeError as error:
                return Malformed(f"{method}: the request is not a valid {message_class.DESCRIPTOR.full_name} "
                                 f"protobuf ({error}; {len(data)} bytes)")
        return decode

    handlers = {}
    for method in service.methods:
        request, response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        factory = {(False, False): grpc.unary_unary_rpc_method_handler,
                   (True, True): grpc.stream_stream_rpc_method_handler}[(method.client_streaming,
                                                                           method.server_streaming)]
        implementation = getattr(servicer, method.name)
        if not method.client_streaming:
            implementation = _refusing_malformed(implementation)
        handlers[method.name] = factory(implementation, request_deserializer=parse(request, method.name),
                                        response_serializer=response.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)



def _refusing_malformed(method: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await method(request, context)
    return call
