"""Run the gateway under uvicorn, with the egress guard installed first."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from gateway import egress
from gateway.app import create_app
from gateway.settings import CONFIG_ENV, GatewaySettings


def serve(config: Path | None, host: str, port: int, log_level: str = "info") -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    settings = GatewaySettings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.enforce_egress:
        destinations = [u.host for u in settings.upstreams.values()]
        destinations.append(urlsplit(settings.openbao.address).hostname or "")
        egress.install(settings.egress_allowlist, destinations)
    app = create_app(settings)
    # the standard asyncio loop: the egress audit hook sees its connects (uvloop's are unseen)
    uvicorn.run(
        app, host=host, port=port, loop="asyncio", http="httptools", log_level=log_level, access_log=False
    )
