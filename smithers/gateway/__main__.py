"""``python -m smithers.gateway``: gunicorn on the app, configured from ``SMITHERS_*`` alone.

``smithers gateway`` serves in its own process (the console script patched first,
:mod:`smithers.cli.entry`); it becomes this module only when called some other way.

With gevent workers the standard library is patched here, before anything imports
``ssl`` or ``socket``, as gevent asks; then gunicorn starts (see :mod:`smithers.gateway.server`).
"""

from __future__ import annotations

import os
import sys

from smithers.shared.settings import GATEWAY_WORKER_CLASS

if GATEWAY_WORKER_CLASS.read(os.environ) == "gevent":
    from gevent import monkey  # type: ignore[import-untyped]

    monkey.patch_all()

from smithers.gateway.server import main

sys.exit(main(sys.argv[1:]))
