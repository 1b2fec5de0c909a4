"""The pgflow dashboard (``pip install 'pgflow-engine[dashboard]'``): runs, one run with its
timeline, workflows, and the actions of SPEC §15, as an ASGI app built on the public client API.

    from pgflow.dashboard import create_app
    app = create_app(pgflow.Client(...))          # or serve it: `pgflow dashboard`

Importing ``pgflow`` never imports this package (nor Starlette): it is loaded only when used.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the CLI test with the extra hidden
    raise ImportError(
        f"the pgflow dashboard needs the `dashboard` extra ({exc.name} is missing): "
        "pip install 'pgflow-engine[dashboard]'"
    ) from exc

from .app import create_app

__all__ = ["create_app"]
