"""The rules of the system shared memory extension that a client on this host cannot reach: registration from
another host is refused (403) before anything is mapped, and a key that is not a POSIX shared memory name is
refused (400) without touching the file system outside /dev/shm."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.errors import InvalidSharedMemory
from service.settings import Settings
from service.shared_memory import SharedMemoryRegions, same_host


def test_same_host_is_loopback_or_a_unix_socket() -> None:
    assert same_host("127.0.0.1") and same_host("127.8.0.1") and same_host("::1") and same_host(None)
    assert not same_host("10.0.0.7") and not same_host("192.168.1.2") and not same_host("fe80::1%eth0")
    assert not same_host("not-an-address")


async def test_registration_from_another_host_is_forbidden(models_dir: Path) -> None:
    settings = Settings(repository=models_dir, models=["mlp"], warmup_batch_sizes=[1], access_log=False,
                        grpc_port=0, memory_trim_interval_s=0)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for host, expected in (("10.1.2.3", 403), ("127.0.0.1", 400)):  # 400: the key names no object
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://nnserve") as client:
                response = await client.post("/v2/systemsharedmemory/region/r/register",
                                             json={"key": "/nnserve-no-such-object", "offset": 0, "byte_size": 4})
                assert response.status_code == expected, response.text
                if expected == 403:
                    assert response.json()["code"] == "forbidden" and host in response.json()["error"]
                    response = await client.post("/v2/systemsharedmemory/unregister")
                    assert response.status_code == 403
                else:
                    assert "no shared memory object '/nnserve-no-such-object'" in response.json()["error"]


@pytest.mark.parametrize("key", ["/a/b", "../etc/passwd", "/", "", "/..", "a\0b"])
def test_keys_outside_dev_shm_are_refused(tmp_path: Path, key: str) -> None:
    regions = SharedMemoryRegions(tmp_path / "control", root=tmp_path / "shm")
    (tmp_path / "control").mkdir()
    with pytest.raises(InvalidSharedMemory, match="not a POSIX shared memory name"):
        regions.register("r", key, 0, 4)
    assert regions.status() == []


def test_a_region_is_checked_against_its_object_and_forgotten_everywhere(tmp_path: Path) -> None:
    """Two processes' views of one control folder: what one registers and unregisters, the other sees."""
    (tmp_path / "control").mkdir()
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "obj").write_bytes(bytes(range(16)))
    one, other = (SharedMemoryRegions(tmp_path / "control", root=tmp_path / "shm") for _ in range(2))
    with pytest.raises(InvalidSharedMemory, match="= 20 bytes, but '/obj' holds 16"):
        one.register("r", "/obj", 4, 16)
    with pytest.raises(InvalidSharedMemory, match="byte_size must be a positive integer"):
        one.register("r", "/obj", 0, 0)
    one.register("r", "/obj", 4, 8)
    assert bytes(other.read("r", 2, 4, "input 'x'")) == bytes([6, 7, 8, 9])
    slot = other.slot("r", 0, 8, "output 'y'")
    slot.write(b"\xff\xfe")
    assert (tmp_path / "shm" / "obj").read_bytes()[4:6] == b"\xff\xfe"
    with pytest.raises(InvalidSharedMemory, match="output 'y': its 9 bytes do not fit the 8 bytes"):
        slot.write(bytes(9))
    with pytest.raises(InvalidSharedMemory, match="8 bytes at offset 4 run past shared memory region 'r'"):
        other.read("r", 4, 8, "input 'x'")
    (tmp_path / "shm" / "obj").write_bytes(bytes(6))  # the client shrinks its object: a 400, never a SIGBUS
    with pytest.raises(InvalidSharedMemory, match="needs 12 bytes of '/obj', which now holds 6"):
        other.read("r", 0, 8, "input 'x'")
    one.unregister("r")
    with pytest.raises(InvalidSharedMemory, match="no system shared memory region 'r' is registered"):
        other.read("r", 0, 4, "input 'x'")
    slot.write(b"\x01")  # a slot taken before the region went still writes to its object, not to a reused fd
    assert (tmp_path / "shm" / "obj").read_bytes()[4:5] == b"\x01"
