"""A stand-in for the operator's ``GET /v1/config``, to run inside a test's network namespace.

``python config_server.py DIR CERT KEY PORT TOKEN`` serves, over HTTPS on
127.0.0.1:PORT, the files of DIR as the operator answers a pod
(``{"files": {name: base64}}``, the operator's own ETag, 304 on ``If-None-Match``),
to a bearer ``TOKEN`` only. A test changes what the "operator" serves by rewriting DIR.
The real operator's endpoint is tested in tests/operator/test_operator_config_delivery.py;
this one lets a sidecar in a namespace (which cannot reach the test's loopback) poll.
"""

from __future__ import annotations

import base64
import ssl
import sys
from pathlib import Path

from aiohttp import web

from kipsec_operator.config_delivery import etag


def application(directory: Path, token: str) -> web.Application:
    async def config(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response(
                {"code": "unauthenticated", "reason": "wrong token", "retryable": False},
                status=401,
            )
        data = {
            path.name: base64.b64encode(path.read_bytes()).decode()
            for path in sorted(directory.iterdir())
            if path.is_file()
        }
        tag = etag(data)
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.json_response({"files": data}, headers={"ETag": tag})

    app = web.Application()
    app.router.add_get("/v1/config", config)
    return app


def main(argv: list[str]) -> None:
    directory, cert, key, port, token = argv
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    web.run_app(
        application(Path(directory), token),
        host="127.0.0.1",
        port=int(port),
        ssl_context=context,
        print=lambda *_: print("ready", flush=True),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
