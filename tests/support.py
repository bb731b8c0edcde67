"""What several test modules share: a free loopback port for a launched page."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on (an explicit one: Gradio's own search leaks a socket per busy port it tries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
