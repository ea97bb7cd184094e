"""The ``v2-shm`` protocol of the benchmark: the same tensors as ``v2-binary``, but in a system shared memory
region the bench registers with the server (``service.shared_memory``), so each body is a few hundred bytes of
JSON naming where its inputs are and where its outputs go. One slot of outputs per body (at most 64 bodies, one
per sample): with fewer bodies than connections two requests in flight can share a slot, which only means its
bytes are written twice (nobody reads them). ``BYTES`` outputs, whose size is not known before, come back in the
body. The server must take shared memory (``--shared-memory``: the bench turns it on for the servers it starts)."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from multiprocessing import shared_memory
from typing import Any

import orjson

from service.bench.payloads import Payload, Sample, build
from service.datatypes import serialize_bytes
from service.loading import LoadedVersion

BODIES = 64


def _post(url: str, path: str, body: Any) -> None:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30).read()
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{url}{path}: {error.code} {error.read().decode(errors='replace')[:300]}") from None


@contextlib.contextmanager
def payload_for(url: str, model: LoadedVersion, protocol: str, items: list[Sample]) -> Iterator[Payload]:
    """The bodies of ``protocol``; for ``v2-shm`` the region they name exists and is registered meanwhile."""
    if protocol != "v2-shm":
        yield build(model, protocol, items)
        return
    items = items[:BODIES]
    inputs = [{n: serialize_bytes(t) if t.dtype == object else t.tobytes() for n, t in item.tensors.items()}
              for item in items]
    outputs = [{n: a.nbytes for n, a in model.backend.run(item.tensors).items() if a.dtype != object}
               for item in items]
    size = sum(len(b) for blobs in inputs for b in blobs.values()) + sum(sum(o.values()) for o in outputs)
    name = f"nnserve-bench-{os.getpid()}-{model.config.name}"[:200]
    memory = shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))
    buffer = memory.buf  # the one view SharedMemory.close() releases
    assert buffer is not None
    try:
        bodies, offset = [], 0
        for item, blobs in zip(items, inputs, strict=True):
            described = []
            for n, t in item.tensors.items():
                buffer[offset:offset + len(blobs[n])] = blobs[n]
                described.append({"name": n, "shape": list(t.shape), "datatype": model.config.input(n).datatype,
                                  "parameters": _where(name, offset, len(blobs[n]))})
                offset += len(blobs[n])
            bodies.append(described)
        requests = []
        for described, sizes in zip(bodies, outputs, strict=True):
            wanted = []
            for o in model.config.outputs:
                if o.name in sizes:
                    wanted.append({"name": o.name, "parameters": _where(name, offset, sizes[o.name])})
                    offset += sizes[o.name]
                else:
                    wanted.append({"name": o.name, "parameters": {"binary_data": True}})
            requests.append(orjson.dumps({"inputs": described, "outputs": wanted}))
        _post(url, f"/v2/systemsharedmemory/region/{name}/register", {"key": f"/{name}", "offset": 0,
                                                                       "byte_size": memory.size})
        try:
            yield Payload(f"/v2/models/{model.config.name}/infer", "application/json", requests,
                          [{} for _ in requests], 1)
        finally:
            _post(url, f"/v2/systemsharedmemory/region/{name}/unregister", {})
    finally:
        memory.close()
        memory.unlink()


def _where(region: str, offset: int, size: int) -> dict[str, Any]:
    return {"shared_memory_region": region, "shared_memory_offset": offset, "shared_memory_byte_size": size}

