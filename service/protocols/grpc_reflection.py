"""gRPC server reflection (``grpc.reflection.v1alpha.ServerReflection``): lists nnserve's services and hands out
the file descriptors of their messages, so ``grpcurl`` and ``grpc_cli`` can describe and call them without the
.proto files. Everything it knows comes from nnserve's own descriptor pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from service.protocols.grpc_proto import reflection_pb2, reflection_pb2_grpc
from service.protocols.grpc_proto.pool import POOL

SERVICES = ("inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
NOT_FOUND, UNIMPLEMENTED = 5, 12


def _files(descriptor: Any) -> list[bytes]:
    """A file's serialized descriptor and those of everything it imports."""
    seen: dict[str, bytes] = {}
    pending = [descriptor]
    while pending:
        file = pending.pop()
        if file.name not in seen:
            seen[file.name] = file.serialized_pb
            pending.extend(file.dependencies)
    return list(seen.values())


class ReflectionServicer(reflection_pb2_grpc.ServerReflectionServicer):
    def answer(self, request: Any) -> Any:
        response = reflection_pb2.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                response.list_services_response.service.extend(
                    reflection_pb2.ServiceResponse(name=name) for name in SERVICES)
            elif kind == "file_by_filename":
                response.file_descriptor_response.file_descriptor_proto.extend(
                    _files(POOL.FindFileByName(request.file_by_filename)))
            elif kind == "file_containing_symbol":
                response.file_descriptor_response.file_descriptor_proto.extend(
                    _files(POOL.FindFileContainingSymbol(request.file_containing_symbol)))
            else:
                response.error_response.error_code = UNIMPLEMENTED
                response.error_response.error_message = f"{kind} is not supported (nnserve defines no extensions)"
        except KeyError as error:
            response.ClearField("file_descriptor_response")
            response.error_response.error_code = NOT_FOUND
            response.error_response.error_message = f"not found: {error}"
        return response

    async def ServerReflectionInfo(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for request in request_iterator:
            yield self.answer(request)
