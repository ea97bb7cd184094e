"""The Open Inference Protocol over gRPC: KServe's ``inference.GRPCInferenceService`` with the Triton extensions its
client uses (model configuration, statistics, the repository behind the admin token, a bidirectional stream of
inferences). Each method decodes, calls the data plane (or the repository admin, or a model view: what HTTP
calls), and encodes; an error's stable ``code`` becomes its gRPC status (``STATUS``) with the same message.

A client's deadline is the request's (never computed after it passed); a cancelled call leaves its batch. Every
call is counted with ``protocol="grpc"`` and gets one access-log line with its request id (metadata
``x-request-id``, echoed in the trailing metadata, or generated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
from google.protobuf import json_format

from service import repository_admin
from service.dataplane import DataPlane, parse_version
from service.errors import InvalidSharedMemory, MalformedRequest, NNServeError, NotReady, SharedMemoryNotFound
from service.hosting.access_log import AccessLogWriter, RequestIds
from service.hosting.body_budget import BodyBudget
from service.model_views import model_metadata, server_metadata, triton_config
from service.protocols.grpc_handlers import Malformed
from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc
from service.protocols.oip_grpc_codec import decode_infer, encode_infer
from service.registry import ServedModel
from service.shared_memory import SharedAccess, SharedMemoryRegions, grpc_peer_host, permitted

STATUS: dict[str, grpc.StatusCode] = {  # error code -> gRPC status; a 4xx code not listed is INVALID_ARGUMENT
    "model_not_found": grpc.StatusCode.NOT_FOUND,
    "version_not_found": grpc.StatusCode.NOT_FOUND,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "shared_memory_not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "payload_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "not_ready": grpc.StatusCode.UNAVAILABLE,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "inference_failed": grpc.StatusCode.INTERNAL,
    "internal_error": grpc.StatusCode.INTERNAL,
}
SERVICE = "inference.GRPCInferenceService"
log = logging.getLogger("nnserve")
QUIET = frozenset({"ServerLive", "ServerReady", "ModelReady"})  # probes: no access-log line, as HTTP's health
STREAM_IN_FLIGHT = 64  # requests of one ModelStreamInfer stream taken and not yet answered


class ActivePeers:
    """How many other clients (gRPC peers: connections) sent calls to this process within ``WINDOW_S``: the
    company a call can expect. Calls of separate clients reach the batcher one at a time and a lone batch of a
    fast model computes at once, so each would find an empty queue; a call that knows others are coming lets its
    batch wait for them (service.batcher; measured on the MLP at c=64, one process: 9.0k calls/s, 7.5–7.8k
    without)."""

    WINDOW_S = 0.05

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._pruned = 0.0

    def others(self, peer: str) -> int:
        now = time.monotonic()
        self._seen[peer] = now
        if now - self._pruned > self.WINDOW_S:
            self._seen = {p: t for p, t in self._seen.items() if now - t <= self.WINDOW_S}
            self._pruned = now
        return len(self._seen) - 1


def status_of(error: NNServeError) -> grpc.StatusCode:
    return STATUS.get(error.code, grpc.StatusCode.INVALID_ARGUMENT if error.status < 500 else
                      grpc.StatusCode.INTERNAL)


class CallRecord:
    """One RPC's request id, access-log record and error mapping."""

    def __init__(self, method: str, context: Any, ids: RequestIds, log: AccessLogWriter | None) -> None:
        self.method = method
        self.context = context
        self.log = log if method not in QUIET else None
        self.start = time.perf_counter()
        metadata = dict(context.invocation_metadata() or ())
        self.metadata: dict[str, str] = {k: v for k, v in metadata.items() if isinstance(v, str)}
        self.request_id = self.metadata.get("x-request-id", "")[:128] or ids.next()
        self.record: dict[str, Any] = {}
        self.status = "OK"

    def write(self) -> None:
        if self.log is not None:
            self.log.write({
                "ts": time.time(), "request_id": self.request_id, "protocol": "grpc", "method": self.method,
                "path": f"/{SERVICE}/{self.method}", "status": self.status, "model": self.record.get("model"),
                "version": self.record.get("version"), "batch_size": self.record.get("batch_size"),
                "latency_ms": round((time.perf_counter() - self.start) * 1e3, 3),
            })


class OipServicer(oip_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, log: AccessLogWriter | None, budget: BodyBudget) -> None:
        self.plane = plane
        self.budget = budget  # --max-body-bytes-in-flight, shared with HTTP bodies
        self.log = log
        self.ids = RequestIds()
        self.peers = ActivePeers()

    def _record(self, method: str, context: Any) -> CallRecord:
        """A call's record, its request id echoed in the trailing metadata."""
        call = CallRecord(method, context, self.ids, self.log)
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        return call

    async def _answer(self, method: str, context: Any, handler: Callable[[CallRecord], Awaitable[Any]]) -> Any:
        call = self._record(method, context)
        try:
            return await handler(call)
        except NNServeError as error:
            code = status_of(error)
            call.status = code.name
            await context.abort(code, error.message)
        except asyncio.CancelledError:
            call.status = "CANCELLED"
            raise
        finally:
            call.write()

    def refused_on_arrival(self, method: str, context: Any) -> None:
        """A call the transport refused while its message arrived (it would pass the byte budget), before any
        method ran: counted and logged as an overload, like HTTP's bodies refused by their length."""
        call = self._record(method, context)
        call.status = "RESOURCE_EXHAUSTED"
        self.plane.refused_unread("grpc")
        call.write()

    # -- health and metadata --------------------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return oip_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return oip_pb2.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self.plane.model(request.name, parse_version(request.version))
        except NNServeError:
            return oip_pb2.ModelReadyResponse(ready=False)
        return oip_pb2.ModelReadyResponse(ready=self.plane.accepting)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return oip_pb2.ServerMetadataResponse(**server_metadata(self.plane.shared_memory is not None))

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            served = self._model(request.name, request.version)
            view = model_metadata(served, sorted(self.plane.registry.models[served.name]))
            view.pop("parameters")
            return json_format.ParseDict(view, oip_pb2.ModelMetadataResponse())

        return await self._answer("ModelMetadata", context, handle)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            served = self._model(request.name, request.version)
            view = triton_config(served, sorted(self.plane.registry.models[served.name]))
            config = json_format.ParseDict(view, oip_pb2.ModelConfig(), ignore_unknown_fields=True)
            config.parameters["nnserve_config"].string_value = orjson.dumps(view["nnserve"]).decode()
            return oip_pb2.ModelConfigResponse(config=config)

        return await self._answer("ModelConfig", context, handle)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            if request.name:
                name = self._model(request.name, request.version).name
                versions = self.plane.registry.models[name]
                wanted = [versions[int(request.version)]] if request.version else list(versions.values())
            else:
                wanted = self.plane.registry.served()
            return oip_pb2.ModelStatisticsResponse(model_stats=[_statistics(m) for m in wanted])

        return await self._answer("ModelStatistics", context, handle)

    def _model(self, name: str, version: str) -> ServedModel:
        return self.plane.model(name, parse_version(version))

    # -- inference -------------------------------------------------------------------------------------------
    async def _infer(self, call: CallRecord, request: Any, context: Any) -> Any:
        settings = self.plane.settings
        with self.plane.call("grpc", call.record) as accounting:
            self.plane.require_accepting()
            # The request as it arrived, held until it is answered: counted with the HTTP bodies in flight (gRPC
            # has read it whole already; refusing it now frees it instead of queueing it).
            size = request.ByteSize()
            if not self.budget.take(size):
                raise self.budget.refusal(size)
            try:
                accounting.decode_started()
                remaining = context.time_remaining() if context is not None else None
                peer = context.peer() if context is not None else ""
                shared = SharedAccess(self.plane.shared_memory, grpc_peer_host(peer), settings.max_body_bytes,
                                      self.budget)
                try:
                    decoded = decode_infer(request, remaining, shared)
                    if context is not None:
                        decoded.request.company = self.peers.others(peer)
                    response = await self.plane.infer(accounting, decoded.request)
                    return encode_infer(response, decoded)
                finally:
                    shared.release()
            finally:
                self.budget.give(size)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._answer("ModelInfer", context, lambda call: self._infer(call, request, context))

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        """Each request is answered as soon as it is computed (requests of one stream batch together), with its
        error in ``error_message`` rather than ending the stream. At most ``STREAM_IN_FLIGHT`` requests of a stream
        are taken before their answers are sent: a client that sends faster is slowed down by the transport's
        flow control, not refused (nor answered into a queue it does not read)."""
        answers: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        in_flight = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def one(request: Any) -> None:
            call = CallRecord("ModelStreamInfer", context, self.ids, self.log)
            try:
                if isinstance(request, Malformed):
                    raise MalformedRequest(request.message)
                response = await self._infer(call, request, context)
                await answers.put(oip_pb2.ModelStreamInferResponse(infer_response=response))
            except Exception as error:  # the stream goes on: this request's error is its answer
                message = error.message if isinstance(error, NNServeError) else f"internal error: {error!r}"
                call.status = status_of(error).name if isinstance(error, NNServeError) else "INTERNAL"
                if not isinstance(error, NNServeError):
                    log.exception("stream inference failed", exc_info=error)
                await answers.put(oip_pb2.ModelStreamInferResponse(
                    error_message=message, infer_response=oip_pb2.ModelInferResponse(id=getattr(request, "id", ""))))
            finally:
                call.write()

        async def read() -> None:
            async for request in request_iterator:
                await in_flight.acquire()
                task = asyncio.get_running_loop().create_task(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
            await answers.put(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
                in_flight.release()
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # -- the model repository (admin) ------------------------------------------------------------------------
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            repository_admin.authorize(self.plane.settings, call.metadata.get("authorization"))
            rows = repository_admin.index(self.plane.repository)
            if request.ready:
                rows = [r for r in rows if r["state"] == "READY"]
            return oip_pb2.RepositoryIndexResponse(models=[oip_pb2.RepositoryIndexResponse.ModelIndex(**r)
                                                           for r in rows])

        return await self._answer("RepositoryIndex", context, handle)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            repository_admin.authorize(self.plane.settings, call.metadata.get("authorization"))
            if not self.plane.accepting:
                raise NotReady("server is shutting down")
            await repository_admin.load(self.plane.repository, request.model_name, load_versions(request.parameters))
            return oip_pb2.RepositoryModelLoadResponse()

        return await self._answer("RepositoryModelLoad", context, handle)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            repository_admin.authorize(self.plane.settings, call.metadata.get("authorization"))
            await repository_admin.unload(self.plane.repository, request.model_name)
            return oip_pb2.RepositoryModelUnloadResponse()

        return await self._answer("RepositoryModelUnload", context, handle)


    # -- Triton's shared memory extensions -------------------------------------------------------------------------
    def _regions(self, call: CallRecord, what: str) -> SharedMemoryRegions:
        return permitted(self.plane.shared_memory, grpc_peer_host(call.context.peer()), None, what)

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            regions = self._regions(call, "status").status(request.name or None)
            message = oip_pb2.SystemSharedMemoryStatusResponse()
            for r in regions:
                message.regions[r.name].CopyFrom(oip_pb2.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size))
            return message

        return await self._answer("SystemSharedMemoryStatus", context, handle)

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            regions = self._regions(call, f"register '{request.name}'")
            regions.register(request.name, request.key, request.offset, request.byte_size)
            return oip_pb2.SystemSharedMemoryRegisterResponse()

        return await self._answer("SystemSharedMemoryRegister", context, handle)

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            self._regions(call, "unregister").unregister(request.name or None)
            return oip_pb2.SystemSharedMemoryUnregisterResponse()

        return await self._answer("SystemSharedMemoryUnregister", context, handle)

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            if request.name:
                raise SharedMemoryNotFound(f"no CUDA shared memory region '{request.name}' is registered (none can be)")
            return oip_pb2.CudaSharedMemoryStatusResponse()

        return await self._answer("CudaSharedMemoryStatus", context, handle)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            raise InvalidSharedMemory(f"register '{request.name}': CUDA shared memory is not supported by this "
                                      f"server; register system shared memory instead")

        return await self._answer("CudaSharedMemoryRegister", context, handle)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        async def handle(call: CallRecord) -> Any:
            return oip_pb2.CudaSharedMemoryUnregisterResponse()

        return await self._answer("CudaSharedMemoryUnregister", context, handle)


def load_versions(parameters: Any) -> list[int] | None:
    """The versions a load asks for, as HTTP's ``parameters.versions`` (nnserve's extension): the parameter
    ``versions``, an int64 or a string of integers separated by commas ("1,3"); absent, what the policy selects."""
    if "versions" not in parameters:
        return None
    value = parameters["versions"]
    kind = value.WhichOneof("parameter_choice")
    if kind == "int64_param":
        return [value.int64_param]
    if kind == "string_param":
        try:
            return [int(v) for v in value.string_param.split(",")]
        except ValueError:
            pass
    received = repr(getattr(value, kind)) if kind else "nothing"
    raise MalformedRequest(f"parameters.versions: expected an int64 or integers separated by commas (\"1,3\"), "
                           f"received {received}")


def _statistics(served: ServedModel) -> Any:
    s = served.stats

    def duration(d: Any) -> Any:
        return oip_pb2.StatisticDuration(count=d.count, ns=d.ns)

    return oip_pb2.ModelStatistics(
        name=served.name, version=str(served.version), last_inference=s.last_inference_ms,
        inference_count=s.inference_count, execution_count=s.execution_count,
        inference_stats=oip_pb2.InferStatistics(success=duration(s.success), fail=duration(s.fail),
                                                queue=duration(s.queue), compute_infer=duration(s.compute)),
        batch_stats=[oip_pb2.InferBatchStatistics(batch_size=size, compute_infer=duration(d))
                     for size, d in sorted(s.batches.items())],
    )
