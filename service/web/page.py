"""``GET /`` (the page) and ``GET /web/{asset}`` (its scripts, style sheet and icon, all under one prefix).

Every answer carries a Content-Security-Policy that allows only this server's own scripts, styles, images and API
(no inline script or style, no other origin, no frames, no forms posted anywhere), so a label or a name from a
model folder that slipped into the page as HTML still could not run. The page itself never renders such text as
HTML (``static/dom.js``). Links are relative, so the page works under any prefix a proxy strips; with
``--root-path`` the page also gets a ``<base href>`` naming it, for a visit without the trailing slash.

Assets are read once, when the app is built, and answered from memory with an ETag (a reload revalidates).
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import NNServeError

STATIC = Path(__file__).with_name("static")
ASSET_NAME = re.compile(r"[a-z][a-z0-9_-]*\.(js|css|svg)")
MEDIA_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8", "svg": "image/svg+xml",
               "html": "text/html; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "base-uri 'self'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin", "Cache-Control": "no-cache"}
BASE_MARK = "<!--base-->"


class AssetNotFound(NNServeError):
    status, code = 404, "not_found"


class Asset:
    def __init__(self, content: bytes, media_type: str) -> None:
        self.content = content
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.content, media_type=self.media_type, headers=headers)


def read_assets(folder: Path = STATIC) -> dict[str, Asset]:
    return {path.name: Asset(path.read_bytes(), MEDIA_TYPES[path.suffix[1:]])
            for path in sorted(folder.iterdir()) if ASSET_NAME.fullmatch(path.name)}


def page_html(root_path: str, template: str) -> bytes:
    base = f'<base href="{html.escape(root_path, quote=True)}/">' if root_path else ""
    return template.replace(BASE_MARK, base, 1).encode()


def build_router() -> APIRouter:
    router = APIRouter(tags=["page"])
    assets = read_assets()
    template = (STATIC / "index.html").read_text()
    pages: dict[str, Asset] = {}

    @router.get("/", summary="The page: every served model's card, a form to try it, its live figures",
                response_class=Response)
    async def page(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        if root not in pages:
            pages[root] = Asset(page_html(root, template), MEDIA_TYPES["html"])
        return pages[root].response(request)

    @router.get("/web/{name}", summary="The page's scripts, style sheet and icon", response_class=Response)
    async def asset(request: Request, name: str) -> Response:
        found = assets.get(name)
        if found is None:
            raise AssetNotFound(f"GET /web/{name}: no such file (the page's files: {sorted(assets)})")
        return found.response(request)

    return router
