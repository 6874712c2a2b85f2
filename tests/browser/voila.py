"""A Voilà server on 127.0.0.1 for one notebook, with a random token, stopped on exit."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def serve_voila(notebook: Path, log_path: Path, start_timeout: float = 60):
    """Yields the URL of ``notebook`` rendered by Voilà (its kernel runs in quick mode).

    The kernel starts in the notebook's folder and inherits this environment (DPEDU_QUICK=1,
    TQDM_DISABLE=1 from the root conftest). Raises ``TimeoutError`` if the server does not
    listen within ``start_timeout`` seconds; the server's log is in ``log_path``.
    """
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}",
        "--Voila.ip=127.0.0.1", f"--token={token}",
    ]
    env = dict(os.environ, DPEDU_QUICK=os.environ.get("DPEDU_QUICK", "1"))
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=notebook.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout
            while not _port_open(port):
                if server.poll() is not None:
                    raise RuntimeError(f"voila exited with {server.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"voila did not listen within {start_timeout:.0f} s; see {log_path}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/?token={token}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
