"""Pictures the app serves, each written whole under a name made from its content.

Gradio 6.31 turns a PIL image returned by a handler into a file with `processing_utils.save_pil_to_cache`:
a path named by the content's hash, written with a plain `write_bytes` (truncate, then write). Identical
pictures from concurrent requests (8 visitors classifying the same example) therefore rewrote the file
while it was being served, and a client sometimes got fewer bytes than declared (a blank preview).
The app hands Gradio a file path instead: `picture_file` writes the picture to a temporary file and renames
it into place (`checkpoints.atomic_write`), so a reader sees the old copy or the new one, both whole, and
equal since the name is their content's hash. Gradio serves a path inside its cache folder as it is, and
deletes it with its own copies (`delete_cache`). Lossless WebP: the enlarged 28×28 pixels stay sharp.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from kd_core.models.checkpoints import atomic_write

FOLDER = "kd-pictures"  # inside Gradio's cache folder


def folder(cache: str | Path) -> Path:
    """Where the app's pictures go, given Gradio's cache folder."""
    return Path(cache).resolve() / FOLDER


def encode(picture: Image.Image) -> bytes:
    with io.BytesIO() as buffer:
        picture.save(buffer, format="webp", lossless=True)
        return buffer.getvalue()


def file_name(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()[:32]}.webp"


def picture_file(picture: Image.Image, into: str | Path) -> Path:
    """`picture` as a lossless WebP file in `into`, named by its content, written whole (see the module)."""
    data = encode(picture)
    return atomic_write(Path(into) / file_name(data), lambda tmp: Path(tmp).write_bytes(data))
