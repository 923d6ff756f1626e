"""Start and stop Azurite, the Azure Storage emulator, for local runs and tests.

Azurite comes from npm (pinned in package.json; `npm ci` installs it). It listens on 127.0.0.1
only, with telemetry disabled.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from aos.errors import ConfigurationError
from aos.storage.clients import azurite_connection_string

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORTS = (10000, 10001, 10002)


def find_azurite() -> str:
    """The azurite executable: $AZURITE_BIN, the project's node_modules, or the PATH."""
    candidates = [
        os.environ.get("AZURITE_BIN"),
        str(PROJECT_ROOT / "node_modules" / ".bin" / "azurite"),
        shutil.which("azurite"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise ConfigurationError(
        "Azurite was not found: run `npm ci` in the project folder (package.json pins it), "
        "or set AZURITE_BIN to the azurite executable",
        field="AZURITE_BIN",
    )


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all held open while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Azurite:
    """An Azurite process storing its data under `location`."""

    location: Path
    ports: tuple[int, int, int] = DEFAULT_PORTS
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def connection_string(self) -> str:
        blob, queue, table = self.ports
        return azurite_connection_string(blob_port=blob, queue_port=queue, table_port=table)

    def start(self, timeout: float = 30.0) -> Azurite:
        busy = [port for port in self.ports if port_open(port)]
        if busy:
            raise ConfigurationError(
                f"cannot start Azurite: port(s) {busy} are already in use on 127.0.0.1 "
                "(is another Azurite running?)"
            )
        self.location.mkdir(parents=True, exist_ok=True)
        blob, queue, table = self.ports
        command = [
            find_azurite(),
            "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
            "--location", str(self.location),
            "--blobHost", "127.0.0.1", "--blobPort", str(blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table),
        ]  # fmt: skip
        log = (self.location / "azurite.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not all(port_open(port) for port in self.ports):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Azurite exited with code {self.process.returncode}; "
                    f"see {self.location / 'azurite.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Azurite did not listen on {self.ports} within {timeout}s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
