"""Triton's system shared memory extension: a client on this host puts a tensor in a POSIX shared memory object
(``/dev/shm/<key>``), registers a named region of it, and an inference request names the region instead of
carrying the bytes. The body shrinks from the tensor's size to a few hundred bytes of JSON, and the server reads
the input with one ``pread`` instead of off a socket; outputs asked for in a region are written there (``pwrite``).

Every serving process of one server sees the same regions: they are recorded in ``shared-memory.json`` in the
server's control folder (``service.model_control``), written atomically under its lock, and each process opens a
region's object itself the first time a request names it, re-reading the record whenever the file changed (a
``stat`` per request that uses shared memory). A region unregistered through one process is gone for all of them
before that call answers.

Registering opens memory another process owns, so only a client on this host may do it (``same_host``). The
object is read and written with ``pread``/``pwrite``, never mapped: a client that shrinks its object under a
registered region gets a 400 naming both sizes, where a mapping would die of SIGBUS (Triton maps, and does).
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import InvalidSharedMemory
from service.model_control import exclusively

SHM_ROOT = Path("/dev/shm")
RECORD = "shared-memory.json"


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int


@dataclass
class _Opened:
    region: Region
    file: Any  # never closed while in use: a slot holding it closes it with its last reference, not a reused fd


@dataclass
class SharedSlot:
    """An output's place in a region: ``byte_size`` bytes at ``position`` of an open object."""

    file: Any
    position: int
    byte_size: int
    what: str

    def write(self, data: bytes | memoryview) -> None:
        size = len(data)
        if size > self.byte_size:
            raise InvalidSharedMemory(f"{self.what}: its {size} bytes do not fit the {self.byte_size} bytes of shared "
                                      f"memory given for it")
        os.pwrite(self.file.fileno(), data, self.position)


def same_host(client: str | None) -> bool:
    """Whether a peer address is this host's (loopback, or a Unix socket: no address)."""
    if not client:
        return True
    try:
        return ipaddress.ip_address(client.split("%")[0]).is_loopback
    except ValueError:
        return False


def grpc_peer_host(peer: str) -> str | None:
    """The address in a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "ipv6:%5B::1%5D:5000");
    None for a Unix socket or no address."""
    peer = urllib.parse.unquote(peer)
    for scheme in ("ipv4:", "ipv6:"):
        if peer.startswith(scheme):
            host = peer[len(scheme):].rsplit(":", 1)[0]
            return host.strip("[]")
    return None


def _count(value: Any, what: str, positive: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        raise InvalidSharedMemory(f"{what} must be a {'positive' if positive else 'non-negative'} integer, "
                                  f"received {value!r}")
    return value


class SharedMemoryRegions:
    def __init__(self, folder: Path, root: Path = SHM_ROOT) -> None:
        self.folder = folder
        self.root = root
        self._record = str(folder / RECORD)  # a str: os.stat of it costs a third of pathlib's stat, per request
        self._seen: tuple[int, int, int] | None = None
        self._regions: dict[str, Region] = {}
        self._opened: dict[str, _Opened] = {}

    # -- the record every process shares ----------------------------------------------------------------------
    def _sync(self) -> None:
        """Re-read the record if it changed; forget the mappings of regions it no longer holds as they were."""
        try:
            stat = os.stat(self._record)
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen == self._seen:
            return
        try:
            data = json.loads((self.folder / RECORD).read_text())
        except FileNotFoundError:
            data = {}
        self._regions = {name: Region(**entry) for name, entry in data.items()}
        self._seen = seen
        for name in [n for n, o in self._opened.items() if self._regions.get(n) != o.region]:
            del self._opened[name]  # its file closes with its last reference (a slot may still hold it)

    def _write(self) -> None:
        part = self.folder / f".{RECORD}.{os.getpid()}.part"
        part.write_text(json.dumps({name: asdict(region) for name, region in self._regions.items()}))
        os.replace(part, self.folder / RECORD)
        self._seen = None
        self._sync()

    # -- the API -------------------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        name = key[1:] if key.startswith("/") else key
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise InvalidSharedMemory(f"shared memory key {key!r} is not a POSIX shared memory name (\"/name\", "
                                      f"one leading slash at most)")
        return self.root / name

    def register(self, name: str, key: Any, offset: Any, byte_size: Any) -> Region:
        if not isinstance(key, str):
            raise InvalidSharedMemory(f"shared memory region '{name}': \"key\" must be a string, received {key!r}")
        region = Region(name, key, _count(offset, f"region '{name}': offset"),
                        _count(byte_size, f"region '{name}': byte_size", positive=True))
        with exclusively(self.folder / ".shared-memory.lock"):
            self._sync()
            if name in self._regions:
                raise InvalidSharedMemory(f"shared memory region '{name}' is already registered (key "
                                          f"{self._regions[name].key!r}): unregister it first")
            self._open(region)  # refused here, nothing recorded, if the object cannot hold it
            self._regions[name] = region
            self._write()
        return region

    def unregister(self, name: str | None = None) -> None:
        """One region, or every region (``None``); a name not registered is not an error (as Triton)."""
        with exclusively(self.folder / ".shared-memory.lock"):
            self._sync()
            if name is None:
                self._regions = {}
            elif self._regions.pop(name, None) is None:
                return
            self._write()

    def status(self, name: str | None = None) -> list[Region]:
        self._sync()
        if name is None:
            return sorted(self._regions.values(), key=lambda r: r.name)
        if name not in self._regions:
            raise InvalidSharedMemory(f"no system shared memory region '{name}' is registered")
        return [self._regions[name]]

    def _locate(self, name: Any, offset: Any, byte_size: Any, what: str) -> tuple[_Opened, int, int]:
        """The open object of region ``name``, and where in it ``byte_size`` bytes at ``offset`` lie."""
        if not isinstance(name, str):
            raise InvalidSharedMemory(f"{what}: shared_memory_region must be a string, received {name!r}")
        offset = _count(offset, f"{what}: shared_memory_offset")
        byte_size = _count(byte_size, f"{what}: shared_memory_byte_size")
        self._sync()
        region = self._regions.get(name)
        if region is None:
            raise InvalidSharedMemory(f"{what}: no system shared memory region '{name}' is registered "
                                      f"(registered: {sorted(self._regions) or 'none'})")
        if offset + byte_size > region.byte_size:
            raise InvalidSharedMemory(f"{what}: {byte_size} bytes at offset {offset} run past shared memory region "
                                      f"'{name}', which holds {region.byte_size} bytes")
        return self._opened.get(name) or self._open(region), region.offset + offset, byte_size

    def read(self, name: Any, offset: Any, byte_size: Any, what: str) -> memoryview:
        """A copy of ``byte_size`` bytes at ``offset`` within region ``name``. Read with ``pread``, not through a
        mapping: an object the client shrank gives a short read here (a 400), where a mapping would crash the
        process (SIGBUS)."""
        opened, position, size = self._locate(name, offset, byte_size, what)
        data = np.empty(size, np.uint8).data  # numpy's allocation: aligned, as onnxruntime wants its inputs
        got = os.preadv(opened.file.fileno(), [data], position) if size else 0
        if got < size:
            raise InvalidSharedMemory(f"{what}: shared memory region '{name}' needs {position + size} bytes of "
                                      f"{opened.region.key!r}, which now holds {position + got}")
        return data

    def slot(self, name: Any, offset: Any, byte_size: Any, what: str) -> SharedSlot:
        """Where an output goes: checked now, written once computed (``SharedSlot.write``)."""
        opened, position, size = self._locate(name, offset, byte_size, what)
        return SharedSlot(opened.file, position, size, what)

    def _open(self, region: Region) -> _Opened:
        path = self._path(region.key)
        end = region.offset + region.byte_size
        try:
            file = path.open("r+b", buffering=0)
        except FileNotFoundError:
            raise InvalidSharedMemory(f"shared memory region '{region.name}': no shared memory object "
                                      f"{region.key!r} on this host (no {path})") from None
        except OSError as error:
            raise InvalidSharedMemory(f"shared memory region '{region.name}': cannot open {region.key!r} for reading "
                                      f"and writing: {error.strerror}") from None
        size = os.fstat(file.fileno()).st_size
        if size < end:
            file.close()
            raise InvalidSharedMemory(f"shared memory region '{region.name}': offset {region.offset} + byte_size "
                                      f"{region.byte_size} = {end} bytes, but {region.key!r} holds {size}")
        opened = self._opened[region.name] = _Opened(region, file)
        return opened

    def close(self) -> None:
        self._opened.clear()
