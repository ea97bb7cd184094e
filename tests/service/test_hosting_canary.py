"""The uvicorn and Starlette internals nnserve leans on (service/hosting/ and the hot routes) are still there, in
the form it uses, and the installed versions are within the ranges pyproject.toml pins. When a dependency moves,
this fails first, naming what moved."""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute, APIRouter

ROOT = Path(__file__).resolve().parents[2]


def _pinned(package: str) -> tuple[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    spec = next(d for d in deps if re.match(rf"{package}(\[|>|$)", d))
    low, high = re.findall(r">=([\d.]+)", spec)[0], re.findall(r"<([\d.]+)", spec)[0]
    return low, high


def _key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3])


def test_installed_versions_are_the_tested_ones() -> None:
    for package in ("uvicorn", "starlette"):
        low, high = _pinned(package)
        installed = version(package)
        assert _key(low) <= _key(installed) < _key(high), f"{package} {installed} is outside >={low},<{high}"


def test_uvicorn_internals_the_hosting_code_uses() -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert "connection_made" in HttpToolsProtocol.__dict__  # service/hosting/http_protocol.py wraps the transport
    assert "loop" in inspect.signature(HttpToolsProtocol.__init__).parameters or \
        "self.loop" in inspect.getsource(HttpToolsProtocol.__init__)
    for method, parameter in (("on_tick", "counter"), ("handle_exit", "sig"), ("shutdown", "sockets"),
                              ("run", "sockets")):  # service/hosting/workers.py overrides or calls these
        assert parameter in inspect.signature(getattr(uvicorn.Server, method)).parameters, method
    assert "http" in inspect.signature(uvicorn.Config.__init__).parameters  # a protocol class is accepted
    # NNServeServer.handle_exit sets these instead of uvicorn's (which re-raises the signal at exit)
    server = uvicorn.Server(uvicorn.Config(app=None))  # type: ignore[arg-type]  # never run
    assert server.should_exit is False and server.force_exit is False
    assert "self.should_exit" in inspect.getsource(uvicorn.Server.on_tick)
    # CoalescingHttpToolsProtocol.shutdown replaces this one, and reads the cycle's state
    assert "connection.shutdown()" in inspect.getsource(uvicorn.Server.shutdown)
    shutdown = inspect.getsource(HttpToolsProtocol.shutdown)
    assert "self.cycle.response_complete" in shutdown and "self.cycle.keep_alive = False" in shutdown
    assert "keep_alive=" in inspect.getsource(HttpToolsProtocol.on_headers_complete)
    # NNServeServer.shutdown accepts queued connections itself, making their protocol as uvicorn's startup does
    startup = inspect.getsource(uvicorn.Server.startup)
    for made_with in ("config.http_protocol_class(", "server_state=self.server_state",
                      "app_state=self.lifespan.state", "self.servers"):
        assert made_with in startup, made_with
    from uvicorn.protocols.http import httptools_impl  # read_whole_bodies sets the limit on_body reads

    assert isinstance(httptools_impl.HIGH_WATER_LIMIT, int)  # type: ignore[attr-defined]  # not re-exported
    assert "HIGH_WATER_LIMIT" in inspect.getsource(HttpToolsProtocol.on_body)
    # service/hosting/request_bodies.py: a large body's cycle gets its own receive, looked up when the app starts;
    # header names come lower-cased; a message completes in on_message_complete; the parser is self.parser
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    assert "self.receive" in inspect.getsource(RequestResponseCycle.run_asgi)
    assert "name.lower()" in inspect.getsource(HttpToolsProtocol.on_header)
    complete = inspect.getsource(HttpToolsProtocol.on_message_complete)
    assert "self.cycle.more_body = False" in complete and "message_event.set()" in complete
    assert "self.parser = httptools.HttpRequestParser(self)" in inspect.getsource(HttpToolsProtocol.__init__)


async def test_starlette_parses_a_form_from_a_body_already_read() -> None:
    from service.hosting.request_body import keep_body

    app = FastAPI()

    @app.post("/form")
    async def form(request: Request) -> PlainTextResponse:
        chunks = []
        while True:  # drain the stream first, as service.protocols.http_io.read_body does
            message = await request.receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        keep_body(request, b"".join(chunks))
        parsed = await request.form()
        return PlainTextResponse(str(parsed.get("model")))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        response = await client.post("/form", data={"model": "mlp"}, files={"file": ("a.txt", b"x")})
    assert response.text == "mlp"


def test_routes_carry_the_compiled_pattern_the_hot_path_matches() -> None:
    router = APIRouter(prefix="/v2")

    @router.post("/models/{name}/infer")
    async def infer(name: str) -> None: ...

    (route,) = [r for r in router.routes if isinstance(r, APIRoute)]
    assert route.name == "infer" and route.path == "/v2/models/{name}/infer"
    match = route.path_regex.match("/v2/models/mlp/infer")
    assert match is not None and match.groupdict() == {"name": "mlp"}
