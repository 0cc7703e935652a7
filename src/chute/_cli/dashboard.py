"""``chute dashboard URL``: serve the web page of ``chute.dashboard``
until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .._open import without_password
from .queues import Failure

__all__ = ["dashboard"]


def dashboard(args: argparse.Namespace) -> int:
    try:
        from aiohttp import web

        from ..dashboard import is_loopback, make_app, new_token
    except ImportError as exc:
        raise Failure(str(exc)) from None
    token = args.token
    if token is not None and not token:
        raise Failure("--token must not be empty")
    if token is None and not is_loopback(args.host):
        # Never open to the network without one: made up, and printed.
        token = new_token()

    async def run() -> None:
        app = make_app(args.url, token=token, codec=args.codec)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, args.host, args.port)
            try:
                await site.start()
            except OSError as exc:
                raise Failure(
                    f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
                ) from None
            stop = asyncio.Event()  # set by Ctrl-C or SIGTERM, from the moment it says where
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            bound = runner.addresses  # the port the system chose, for --port 0
            host, port = bound[0][:2] if bound else (args.host, args.port)
            shown = f"[{host}]" if ":" in str(host) else host
            address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
            print(
                f"chute dashboard over {without_password(args.url)} on {address} (Ctrl-C stops it)",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return 0
