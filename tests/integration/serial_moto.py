"""moto's S3 server, one request at a time: ``python -m tests.integration.serial_moto PORT``.

``moto_server`` serves requests on threads, and its conditional PUT (``If-Match``,
``If-None-Match: *``) checks the live object and then writes it in two steps, so two racing
writers can both pass the check. Real S3 evaluates the condition atomically. Serving requests
one at a time restores that, so races between registry writers are tested with S3's semantics.
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
