"""`imagegen-gateway` / `python -m imagegen_gateway`: read the settings (settings.py), the pool's
worker.json and the keys file, and serve the app with uvicorn until SIGTERM.
"""

from __future__ import annotations

import logging

import uvicorn

from . import keys
from .app import create_app
from .settings import GatewaySettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = GatewaySettings.from_env()
    app = create_app(settings, settings.load_pool(), keys.load(settings.keys_file))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                access_log=False)


if __name__ == "__main__":
    main()
