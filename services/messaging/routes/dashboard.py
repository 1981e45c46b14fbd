"""The live federation dashboard: `/dashboard` (its page) and `/dashboard/static/NAME` (its
script, and uPlot, MIT, vendored from the npm registry: no CDN). The page is open; it asks
for the API token once (kept in the tab's sessionStorage) and sends it with every poll of
`/metrics`, which stays behind the token.

Invariant: only the files named in STATIC are served (no path from the request reaches
the filesystem)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from shared.errors import MatrixError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC = {"dashboard.js": "text/javascript", "uPlot.iife.min.js": "text/javascript",
          "uPlot.min.css": "text/css", "uPlot.LICENSE": "text/plain"}

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard():
    return Response((STATIC_DIR / "dashboard.html").read_bytes(), media_type="text/html",
                    headers={"cache-control": "no-cache"})


@router.get("/dashboard/static/{name}")
async def static(name: str):
    if name not in STATIC:
        raise MatrixError(404, "M_NOT_FOUND", "no such file")
    return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC[name],
                    headers={"cache-control": "no-cache"})
