"""`python -m aos.devhost`: run a function app locally, or send events to a topic.

python -m aos.devhost [--app-dir DIR] [--port 7071]
python -m aos.devhost send --topic aos-events FILE   # a CloudEvent or a list, JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from aos.devhost.host import DEFAULT_PORT, LocalHost
from aos.errors import AOSError


async def serve(app_dir: Path, port: int) -> None:
    host = LocalHost(app_dir, port=port)
    await host.start()
    print(host.describe(), flush=True)
    print(f"\nHost started: {host.url} (Ctrl-C stops it)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await host.stop()


async def send(app_dir: Path, topic: str, document: object) -> None:
    from aos.messaging.publisher import send_event
    from aos.settings import Settings, prepare_environment

    prepare_environment(app_dir / "local.settings.json")
    for event in document if isinstance(document, list) else [document]:
        sent = await send_event(Settings.from_env(), topic, event)
        print(f"sent {sent.id} ({sent.type}) to {topic}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aos.devhost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--app-dir", type=Path, default=Path("."), help="the app's folder")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    commands = parser.add_subparsers(dest="command")
    sender = commands.add_parser("send", help="send events (JSON file) to a topic")
    sender.add_argument("--topic", required=True)
    sender.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("azure", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "send":
            document = json.loads(args.file.read_text(encoding="utf-8"))
            asyncio.run(send(args.app_dir, args.topic, document))
        else:
            asyncio.run(serve(args.app_dir, args.port))
    except (AOSError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
