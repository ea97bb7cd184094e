"""The rules of the system shared memory extension that a client on this host cannot reach, and the record the
server's processes share: a client on another host may neither register, list, nor use a region (403); keys
outside /dev/shm, symbolic links and objects that are not files are refused; what one process registers and
unregisters, another sees at once, even when a region is registered again under the same name and key for a new
object; a shrunk object is a 400, never a crash."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.errors import AlreadyExists, InvalidSharedMemory, SharedMemoryNotFound
from service.settings import Settings
from service.shared_memory import SharedMemoryRegions, same_host


def test_same_host_is_loopback_or_a_unix_socket() -> None:
    assert same_host("127.0.0.1") and same_host("127.8.0.1") and same_host("::1") and not same_host(None)
    assert same_host("127.0.0.1", "127.0.0.2") and not same_host("127.0.0.6", "10.1.2.3, 127.0.0.6")
    assert same_host("::ffff:127.0.0.1")  # a dual-stack listener's local IPv4 client
    assert not same_host("10.0.0.7") and not same_host("192.168.1.2") and not same_host("fe80::1%eth0")
    assert not same_host("::ffff:10.0.0.7") and not same_host("not-an-address")


async def test_clients_on_another_host_can_neither_register_list_nor_use_regions(models_dir: Path) -> None:
    settings = Settings(repository=models_dir, models=["mlp"], warmup_batch_sizes=[1], access_log=False,
                        grpc_port=0, memory_trim_interval_s=0, shared_memory=True)
    app = create_app(settings)
    infer = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                         "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 3136}}]}
    async with app.router.lifespan_context(app):
        remote = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=remote, base_url="http://nnserve") as client:
            forwarded = httpx.ASGITransport(app=app, client=("127.0.0.6", 40000))  # a sidecar's hop
            async with httpx.AsyncClient(transport=forwarded, base_url="http://nnserve") as via:
                response = await via.get("/v2/systemsharedmemory/status", headers={"x-forwarded-for": "10.1.2.3"})
                assert response.status_code == 403 and "forwarded for 10.1.2.3" in response.json()["error"]
            for method, path, body in (
                    ("POST", "/v2/systemsharedmemory/region/r/register", {"key": "/x", "offset": 0, "byte_size": 4}),
                    ("POST", "/v2/systemsharedmemory/unregister", None),
                    ("GET", "/v2/systemsharedmemory/status", None),
                    ("GET", "/v2/systemsharedmemory/region/r/status", None),
                    ("POST", "/v2/models/mlp/infer", infer)):
                response = await client.request(method, path, json=body)
                assert response.status_code == 403, (path, response.text)
                assert response.json()["code"] == "forbidden" and "10.1.2.3" in response.json()["error"]
        local = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=local, base_url="http://nnserve") as client:
            response = await client.post("/v2/systemsharedmemory/region/r/register",
                                         json={"key": "/nnserve-no-such-object", "offset": 0, "byte_size": 4})
            assert response.status_code == 400 and "no shared memory object '/nnserve-no-such-object'" in \
                response.json()["error"]
            response = await client.post("/v2/models/mlp/infer", json=infer)
            assert response.status_code == 404 and response.json()["code"] == "shared_memory_not_found"


@pytest.fixture
def shm_root() -> Iterator[Path]:
    """A folder standing for /dev/shm, on the same tmpfs (whose inode numbers are not handed out again at once)."""
    root = Path(tempfile.mkdtemp(prefix="nnserve-test-", dir="/dev/shm"))
    yield root
    shutil.rmtree(root)


def regions_pair(tmp_path: Path, shm: Path) -> tuple[SharedMemoryRegions, SharedMemoryRegions, Path]:
    """Two processes' views of one control folder."""
    (tmp_path / "control").mkdir()
    one, other = (SharedMemoryRegions(tmp_path / "control", root=shm) for _ in range(2))
    return one, other, shm


@pytest.mark.parametrize("key", ["/a/b", "../etc/passwd", "/", "", "/..", "a\0b"])
def test_keys_outside_dev_shm_are_refused(tmp_path: Path, shm_root: Path, key: str) -> None:
    one, _, _ = regions_pair(tmp_path, shm_root)
    with pytest.raises(InvalidSharedMemory, match="not a POSIX shared memory name"):
        one.register("r", key, 0, 4)
    assert one.status() == []


def test_links_and_other_files_are_refused(tmp_path: Path, shm_root: Path) -> None:
    one, _, shm = regions_pair(tmp_path, shm_root)
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours" * 10)
    (shm / "link").symlink_to(secret)
    with pytest.raises(InvalidSharedMemory, match="cannot open '/link'"):
        one.register("r", "/link", 0, 4)
    os.mkfifo(shm / "fifo")
    with pytest.raises(InvalidSharedMemory, match="'/fifo' is not a shared memory object"):
        one.register("r", "/fifo", 0, 4)
    assert one.status() == [] and secret.read_bytes() == b"not yours" * 10


def test_what_one_process_registers_another_sees_and_uses(tmp_path: Path, shm_root: Path) -> None:
    one, other, shm = regions_pair(tmp_path, shm_root)
    (shm / "obj").write_bytes(bytes(range(16)))
    with pytest.raises(InvalidSharedMemory, match=r"needs 20 bytes of '/obj'.*which holds 16"):
        one.register("r", "/obj", 4, 16)
    with pytest.raises(InvalidSharedMemory, match="byte_size must be a positive integer"):
        one.register("r", "/obj", 0, 0)
    one.register("r", "/obj", 4, 8)
    with pytest.raises(AlreadyExists, match="already registered"):
        other.register("r", "/obj", 0, 4)
    assert [r.shown() for r in other.status()] == [{"name": "r", "key": "/obj", "offset": 4, "byte_size": 8}]
    assert bytes(other.place("r", 2, 4, "input 'x'").read()) == bytes([6, 7, 8, 9])
    slot = other.place("r", 0, 8, "output 'y'")
    slot.write(b"\xff\xfe")
    assert (shm / "obj").read_bytes()[4:6] == b"\xff\xfe"
    with pytest.raises(InvalidSharedMemory, match="output 'y': its 9 bytes do not fit the 8 bytes"):
        slot.write(bytes(9))
    with pytest.raises(InvalidSharedMemory, match="8 bytes at offset 4 run past shared memory region 'r'"):
        other.place("r", 4, 8, "input 'x'")
    (shm / "obj").write_bytes(bytes(6))  # the client shrinks its object: a 400, never a SIGBUS
    for use in (lambda: other.place("r", 0, 8, "input 'x'").read(), lambda: slot.write(b"\x01")):
        with pytest.raises(InvalidSharedMemory, match=r"needs 12 bytes of '/obj'.*which holds 6"):
            use()
    assert (shm / "obj").read_bytes() == bytes(6)  # the write did not grow it back
    one.unregister("r")
    with pytest.raises(SharedMemoryNotFound, match="no system shared memory region 'r' is registered"):
        other.place("r", 0, 4, "input 'x'")


def test_a_region_registered_again_for_a_new_object_is_seen_as_new(tmp_path: Path, shm_root: Path) -> None:
    """Unregister, destroy, make the object again under the same key, register again with the same numbers: the
    other process reads the new object, and a region whose object was replaced without registering again is
    refused rather than served from the object it no longer names."""
    one, other, shm = regions_pair(tmp_path, shm_root)
    (shm / "obj").write_bytes(b"old!" * 4)
    one.register("r", "/obj", 0, 16)
    assert bytes(other.place("r", 0, 4, "input 'x'").read()) == b"old!"
    for _ in range(3):  # the record's inode numbers may alternate: each change is still seen
        one.unregister("r")
        (shm / "obj").unlink()
        (shm / "obj").write_bytes(b"new!" * 4)
        one.register("r", "/obj", 0, 16)
        assert bytes(other.place("r", 0, 4, "input 'x'").read()) == b"new!"
    (shm / "obj").unlink()
    (shm / "obj").write_bytes(b"else" * 4)  # made again, not registered again
    with pytest.raises(InvalidSharedMemory, match="not the object registered as region 'r'"):
        other.place("r", 0, 4, "input 'x'").read()


def test_a_failed_record_write_registers_nothing_and_a_bad_record_leaks_no_descriptor(
        tmp_path: Path, shm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, other, shm = regions_pair(tmp_path, shm_root)
    (shm / "obj").write_bytes(bytes(16))

    def full(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", full)
        with pytest.raises(OSError):
            one.register("r", "/obj", 0, 16)
    assert one.status() == [] and other.status() == []
    one.register("r", "/obj", 0, 16)  # and it can be registered once the disk has room
    (tmp_path / "control" / "bad").write_text("{not json")
    os.replace(tmp_path / "control" / "bad", tmp_path / "control" / "shared-memory.json")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(ValueError):
            other.status()
    assert len(os.listdir("/proc/self/fd")) == before


def test_at_most_max_regions_are_registered(tmp_path: Path, shm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import shared_memory

    monkeypatch.setattr(shared_memory, "MAX_REGIONS", 3)
    one, other, shm = regions_pair(tmp_path, shm_root)
    (shm / "obj").write_bytes(bytes(8))
    for name in ("a", "b", "c"):
        one.register(name, "/obj", 0, 8)
    with pytest.raises(InvalidSharedMemory, match="3 shared memory regions are registered, the most this server"):
        other.register("d", "/obj", 0, 8)
    one.unregister("b")
    other.register("d", "/obj", 0, 8)
    assert sorted(r.name for r in one.status()) == ["a", "c", "d"]


def test_transfers_larger_than_one_system_call_move_whole(tmp_path: Path, shm_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux moves at most ~2 GiB per read or write: a transfer goes in ``CHUNK``-sized pieces (7 bytes here)."""
    from service import shared_memory

    monkeypatch.setattr(shared_memory, "CHUNK", 7)
    one, _, shm = regions_pair(tmp_path, shm_root)
    (shm / "obj").write_bytes(bytes(100))
    one.register("r", "/obj", 3, 90)
    payload = bytes(range(1, 51))
    one.place("r", 5, 50, "output 'y'").write(payload)
    assert (shm / "obj").read_bytes()[8:58] == payload
    assert bytes(one.place("r", 5, 50, "input 'x'").read()) == payload


def test_inputs_read_from_shared_memory_hold_body_bytes_until_released(tmp_path: Path, shm_root: Path) -> None:
    """Each input read counts against the request's --max-body-bytes and the process's bytes in flight; the bytes
    are given back on release, after a refusal too."""
    from service.errors import Overloaded, PayloadTooLarge
    from service.hosting.body_budget import BodyBudget
    from service.shared_memory import SharedAccess

    one, _, shm = regions_pair(tmp_path, shm_root)
    (shm / "obj").write_bytes(bytes(range(64)))
    one.register("r", "/obj", 0, 64)
    budget = BodyBudget(capacity=100)
    access = SharedAccess(one, "127.0.0.1", limit=40, budget=budget)
    assert bytes(access.read(one.place("r", 0, 16, "input 'a'"))) == bytes(range(16))
    assert bytes(access.read(one.place("r", 16, 16, "input 'b'"))) == bytes(range(16, 32))
    assert (access.taken, budget.held) == (32, 32)
    with pytest.raises(PayloadTooLarge, match="input 'c': 48 bytes of inputs in shared memory; the limit is 40"):
        access.read(one.place("r", 32, 16, "input 'c'"))
    assert budget.held == 32  # the refused input took nothing
    access.release()
    assert (access.taken, budget.held) == (0, 0)
    budget.held = 90  # other requests' bodies in flight
    crowded = SharedAccess(one, "127.0.0.1", limit=40, budget=budget)
    with pytest.raises(Overloaded, match="--max-body-bytes-in-flight"):
        crowded.read(one.place("r", 0, 16, "input 'a'"))
    crowded.release()
    assert budget.held == 90

