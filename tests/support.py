"""What several test modules share: a free loopback port for a launched page."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on (an explicit one: Gradio's own search leaks a socket per busy port it tries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, seconds: float = 60.0, every: float = 0.02) -> bool:
    """Whether `condition()` became true within `seconds` (checked every `every` seconds)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()
