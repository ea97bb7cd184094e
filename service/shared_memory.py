"""Triton's system shared memory extension: a client on this host puts a tensor in a POSIX shared memory object
(``/dev/shm/<key>``), registers a named region of it, and an inference request names the region instead of
carrying the bytes. The body shrinks from the tensor's size to a few hundred bytes of JSON, and the server reads
the input with ``pread`` instead of off a socket; outputs asked for in a region are written there (``pwrite``).

Every serving process of one server sees the same regions: they are recorded in ``shared-memory.json`` in the
server's control folder (``service.model_control``), written atomically under its lock. A process re-reads the
record whenever its inode changes (a ``stat`` per request that uses shared memory; the process keeps the record it
read open, so no later record can take its inode number), so a region unregistered through one process is gone
for all of them before that call answers.

Each use opens the object by name (``O_NOFOLLOW``: never through a symbolic link), checks that it is a regular
file, the very object registered (device and inode: one destroyed and made again under the same key must be
registered again) and still large enough, then reads or writes and closes it. Nothing is mapped: a client that
shrinks its object gets a 400 naming both sizes, where a mapping would die of SIGBUS (Triton maps); and no
process holds an object open once its request is answered, so a region unregistered and unlinked frees its memory.

The extension is off unless the server is started with ``--shared-memory``, and then only clients on this host may
use it: a loopback peer, with no non-loopback address in ``X-Forwarded-For``. A proxy on the same host that
forwards remote clients without saying so (any gRPC proxy: gRPC carries no such header here) would make them look
local, so turn it on only where the port is not reachable that way.
Inputs read from shared memory count against ``--max-body-bytes`` (per request) and the bytes in flight
(``--max-body-bytes-in-flight``) as a body would.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import AlreadyExists, Forbidden, InvalidSharedMemory, PayloadTooLarge, SharedMemoryNotFound
from service.model_control import exclusively

if TYPE_CHECKING:
    from service.hosting.body_budget import BodyBudget

SHM_ROOT = Path("/dev/shm")
RECORD = "shared-memory.json"
MAX_REGIONS = 1024
CHUNK = 1 << 30  # Linux moves at most ~2 GiB per read or write call


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    device: int = 0  # the object registered: a new object under the same key is another one
    inode: int = 0

    def shown(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


def same_host(client: str | None, forwarded: str | None = None) -> bool:
    """Whether a peer is on this host: its address loopback (IPv4, IPv6, IPv4-mapped), and every address a proxy
    says it forwarded for (``X-Forwarded-For``) loopback too. An unknown peer is not."""
    return bool(client) and all(_loopback(a.strip()) for a in [client or "", *(forwarded or "").split(",")]
                                if a.strip())


def _loopback(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return bool((mapped or parsed).is_loopback)


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
        self._held: int | None = None  # the record last read, kept open: its inode number stays its own
        self._held_inode = -1
        self._regions: dict[str, Region] = {}

    # -- the record every process shares ----------------------------------------------------------------------
    def _sync(self) -> None:
        """Re-read the record if another has replaced the one last read."""
        try:
            inode = os.stat(self._record).st_ino
        except FileNotFoundError:
            inode = 0
        if inode == self._held_inode:
            return
        data: dict[str, Any] = {}
        held, held_inode = None, 0
        if inode:
            try:
                held = os.open(self._record, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # replaced again meanwhile: the next call reads the newest
                return
            try:
                held_inode = os.fstat(held).st_ino
                with os.fdopen(os.dup(held), "rb") as file:
                    data = json.loads(file.read() or b"{}")
            except BaseException:  # an unreadable record: no descriptor left behind, and the next call tries again
                os.close(held)
                raise
        if self._held is not None:
            os.close(self._held)
        self._held, self._held_inode = held, held_inode
        self._regions = {name: Region(**entry) for name, entry in data.items()}

    def _write(self) -> None:
        part = self.folder / f".{RECORD}.{os.getpid()}.part"
        part.write_text(json.dumps({name: asdict(region) for name, region in self._regions.items()}))
        os.replace(part, self.folder / RECORD)
        self._sync()

    def close(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held, self._held_inode = None, -1

    # -- registration --------------------------------------------------------------------------------------------
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
                raise AlreadyExists(f"shared memory region '{name}' is already registered (key "
                                    f"{self._regions[name].key!r}): unregister it first")
            if len(self._regions) >= MAX_REGIONS:
                raise InvalidSharedMemory(f"{len(self._regions)} shared memory regions are registered, the most this "
                                          f"server takes: unregister some first")
            fd, info = self._open(region, f"shared memory region '{name}'")  # refused here, nothing recorded
            os.close(fd)
            region = Region(region.name, key, region.offset, region.byte_size, info.st_dev, info.st_ino)
            self._regions[name] = region
            try:
                self._write()
            except BaseException:  # not recorded: not registered here either
                self._regions.pop(name, None)
                raise
        return region

    def unregister(self, name: str | None = None) -> None:
        """One region, or every region (``None``); a name not registered is not an error (as Triton)."""
        with exclusively(self.folder / ".shared-memory.lock"):
            self._sync()
            if name is None:
                if not self._regions:
                    return
                self._regions = {}
            elif self._regions.pop(name, None) is None:
                return
            self._write()

    def status(self, name: str | None = None) -> list[Region]:
        self._sync()
        if name is None:
            return sorted(self._regions.values(), key=lambda r: r.name)
        if name not in self._regions:
            raise SharedMemoryNotFound(f"no system shared memory region '{name}' is registered")
        return [self._regions[name]]

    # -- use -------------------------------------------------------------------------------------------------------
    def place(self, name: Any, offset: Any, byte_size: Any, what: str) -> Place:
        """Where ``byte_size`` bytes at ``offset`` within region ``name`` lie, checked against the region."""
        if not isinstance(name, str):
            raise InvalidSharedMemory(f"{what}: shared_memory_region must be a string, received {name!r}")
        offset = _count(offset, f"{what}: shared_memory_offset")
        byte_size = _count(byte_size, f"{what}: shared_memory_byte_size")
        self._sync()
        region = self._regions.get(name)
        if region is None:
            raise SharedMemoryNotFound(f"{what}: no system shared memory region '{name}' is registered "
                                       f"(registered: {sorted(self._regions) or 'none'})")
        if offset + byte_size > region.byte_size:
            raise InvalidSharedMemory(f"{what}: {byte_size} bytes at offset {offset} run past shared memory region "
                                      f"'{name}', which holds {region.byte_size} bytes")
        return Place(self, region, region.offset + offset, byte_size, what)

    def _open(self, region: Region, what: str) -> tuple[int, os.stat_result]:
        """The region's object, open for reading and writing, after every check; the caller closes it."""
        path = self._path(region.key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidSharedMemory(f"{what}: no shared memory object {region.key!r} on this host (no {path})"
                                      ) from None
        except OSError as error:  # ELOOP: a symbolic link; EACCES: not ours to write
            raise InvalidSharedMemory(f"{what}: cannot open {region.key!r} for reading and writing: "
                                      f"{error.strerror}") from None
        try:
            info = os.fstat(fd)
            end = region.offset + region.byte_size
            if not stat.S_ISREG(info.st_mode):
                raise InvalidSharedMemory(f"{what}: {region.key!r} is not a shared memory object")
            if region.inode and (info.st_dev, info.st_ino) != (region.device, region.inode):
                raise InvalidSharedMemory(f"{what}: {region.key!r} is not the object registered as region "
                                          f"'{region.name}' (made again since?): register the region again")
            if info.st_size < end:
                raise InvalidSharedMemory(f"{what}: region '{region.name}' needs {end} bytes of {region.key!r} "
                                          f"(offset {region.offset} + byte_size {region.byte_size}), which "
                                          f"holds {info.st_size}")
        except BaseException:
            os.close(fd)
            raise
        return fd, info


@dataclass
class Place:
    """``byte_size`` bytes at ``position`` of a registered region's object."""

    regions: SharedMemoryRegions
    region: Region
    position: int
    byte_size: int
    what: str

    def read(self) -> memoryview:
        """A copy of the bytes (aligned, as onnxruntime wants its inputs)."""
        data = np.empty(self.byte_size, np.uint8).data
        self._transfer(data, lambda fd, piece, at: os.preadv(fd, [piece], at), "read")
        return data

    def write(self, data: bytes | memoryview) -> None:
        size = len(data)
        if size > self.byte_size:
            raise InvalidSharedMemory(f"{self.what}: its {size} bytes do not fit the {self.byte_size} bytes of shared "
                                      f"memory given for it")
        self._transfer(memoryview(data), os.pwrite, "written")

    def _transfer(self, data: memoryview, move: Callable[[int, memoryview, int], int], verb: str) -> None:
        """All of ``data`` read into or written from the object at ``position``, in pieces Linux takes whole,
        the object opened (and checked: still there, the same, and large enough) for this one transfer."""
        fd, _ = self.regions._open(self.region, self.what)
        try:
            done = 0
            while done < len(data):
                moved = move(fd, data[done:done + CHUNK], self.position + done)
                if moved == 0:
                    raise InvalidSharedMemory(f"{self.what}: {self.region.key!r} ended while it was {verb}")
                done += moved
        except OSError as error:
            raise InvalidSharedMemory(f"{self.what}: {self.region.key!r} could not be {verb}: {error.strerror}"
                                      ) from None
        finally:
            os.close(fd)


def permitted(regions: SharedMemoryRegions | None, client: str | None, forwarded: str | None,
              what: str) -> SharedMemoryRegions:
    """The regions, for a peer that may use them: the extension on, and the peer on this host."""
    if regions is None:
        raise InvalidSharedMemory(f"{what}: system shared memory is off on this server (start it with "
                                  f"--shared-memory)")
    if not same_host(client, forwarded):
        via = f" (forwarded for {forwarded})" if forwarded else ""
        raise Forbidden(f"{what}: system shared memory is for clients on this host; refused for "
                        f"{client or 'an unknown peer'}{via}")
    return regions


class SharedAccess:
    """One request's access to shared memory: whether it may (the extension on, its client on this host), and the
    input bytes it has read, counted as a body's (``--max-body-bytes`` in all, each reserved from the process's
    bytes in flight until ``release``)."""

    def __init__(self, regions: SharedMemoryRegions | None, client: str | None, limit: int,
                 budget: BodyBudget | None, forwarded: str | None = None) -> None:
        self._regions = regions
        self.client = client
        self.forwarded = forwarded
        self.limit = limit
        self.budget = budget
        self.taken = 0

    def regions(self, what: str) -> SharedMemoryRegions:
        return permitted(self._regions, self.client, self.forwarded, what)

    def read(self, place: Place) -> memoryview:
        if self.taken + place.byte_size > self.limit:
            raise PayloadTooLarge(f"{place.what}: {self.taken + place.byte_size} bytes of inputs in shared memory; "
                                  f"the limit is {self.limit} per request (--max-body-bytes)")
        if self.budget is not None and not self.budget.take(place.byte_size):
            raise self.budget.refusal(place.byte_size)
        self.taken += place.byte_size
        return place.read()

    def release(self) -> None:
        if self.budget is not None and self.taken:
            self.budget.give(self.taken)
        self.taken = 0
