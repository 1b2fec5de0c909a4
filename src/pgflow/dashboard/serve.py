"""``pgflow dashboard``: serve ``create_app(client)`` with uvicorn until Ctrl-C / SIGTERM."""

from __future__ import annotations

import sys

import uvicorn

from .app import create_app

__all__ = ["serve"]


def serve(client: object, *, host: str = "127.0.0.1", port: int = 8484, read_only: bool = False) -> None:
    """Serve the dashboard for ``client`` on ``host:port`` (blocks until interrupted)."""
    app = create_app(client, read_only=read_only)
    mode = "read-only" if read_only else "actions enabled"
    print(f"pgflow dashboard ({mode}) on http://{host}:{port}/ — Ctrl-C to stop", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
