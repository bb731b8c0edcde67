"""The vendored onnxruntime-web: which release, which two files, and how they are re-created from npm.

The Predict tab runs the KD student in the visitor's browser with onnxruntime-web, from files the app serves
itself (no CDN, so it works offline and on Spaces): the ESM bundle `ort.wasm.bundle.min.mjs` (the wasm build
with its Emscripten glue inlined, 77 kB) and the single-threaded-capable SIMD WebAssembly binary, stored
gzipped (`ort-wasm-simd-threaded.wasm.gz`, 3.8 MB; the page inflates it with `DecompressionStream`). Both are
committed under `kd_core/publish/web/onnxruntime-web/` with `NOTICE.txt` (the MIT licence of ONNX Runtime).

`vendor()` re-creates them byte for byte from the pinned npm release: `npm pack` fetches the tarball, its
SHA-512 must equal the pinned `dist.integrity` (else `IntegrityError`, nothing written), and the gzip stream is
written with a fixed timestamp and no file name, so the output depends on the tarball alone.
`scripts/vendor_onnxruntime_web.py` is its command line.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from kd_core.models.checkpoints import atomic_write

PACKAGE, VERSION = "onnxruntime-web", "1.31.1"
# npm's dist.integrity of onnxruntime-web-1.31.1.tgz (`npm view onnxruntime-web@1.31.1 dist.integrity`)
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
ASSETS = Path(__file__).resolve().parent / "web" / PACKAGE  # inside the package: no top-level folder of its own
BUNDLE, WASM = "ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm.gz"
# vendored name -> (member of the npm tarball, gzipped?)
MEMBERS = {BUNDLE: ("package/dist/ort.wasm.bundle.min.mjs", False),
           WASM: ("package/dist/ort-wasm-simd-threaded.wasm", True)}
NOTICE = "NOTICE.txt"
MIT = """MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class IntegrityError(ValueError):
    """The tarball is not the pinned release: its SHA-512 differs from npm's dist.integrity."""


def present(folder: Path = ASSETS) -> bool:
    """Whether the two files the page loads are there (the panel is hidden otherwise)."""
    return all((folder / name).is_file() for name in MEMBERS)


def how_to_vendor() -> str:
    return (f"The in-browser student needs onnxruntime-web {VERSION}'s files in kd_core/publish/web/{PACKAGE}/: run "
            f"`python scripts/vendor_onnxruntime_web.py` (uses npm).")


def integrity(path: str | Path) -> str:
    """npm's Subresource-Integrity form of a file's SHA-512: 'sha512-<base64>'."""
    return "sha512-" + base64.b64encode(hashlib.sha512(Path(path).read_bytes()).digest()).decode()


def check_integrity(tarball: str | Path, expected: str | None = None) -> None:
    """IntegrityError unless the tarball's SHA-512 is `expected` (default: the pinned INTEGRITY)."""
    expected = expected or INTEGRITY
    found = integrity(tarball)
    if found != expected:
        raise IntegrityError(f"{tarball} is not {PACKAGE}@{VERSION}: its integrity is {found}, npm's is {expected}")


def npm_pack(into: Path) -> Path:
    """The pinned release's tarball, fetched by `npm pack` into `into` (ValueError in one line if npm fails)."""
    try:
        done = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(into)],
                              capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ValueError(f"npm pack {PACKAGE}@{VERSION} failed: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"npm pack {PACKAGE}@{VERSION} failed: {last}")
    return into / json.loads(done.stdout)[0]["filename"]


def vendor(tarball: str | Path | None = None, out: Path = ASSETS) -> dict[str, str]:
    """Write the two files and the notice into `out` from `tarball` (default: fetched with npm), after the
    integrity check; returns {name: sha256} of what was written."""
    with tempfile.TemporaryDirectory() as scratch:
        tarball = Path(tarball) if tarball else npm_pack(Path(scratch))
        check_integrity(tarball)
        with tarfile.open(tarball, "r:gz") as archive:
            contents = {name: archive.extractfile(member).read() for name, (member, _) in MEMBERS.items()}
    for name, (_, zipped) in MEMBERS.items():
        data = gzip.compress(contents[name], compresslevel=9, mtime=0) if zipped else contents[name]
        atomic_write(out / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
    notice = f"{PACKAGE} {VERSION} (npm, {INTEGRITY}), files {', '.join(MEMBERS)}\n\n{MIT}"
    atomic_write(out / NOTICE, lambda tmp: Path(tmp).write_text(notice, encoding="utf-8"))
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in (*MEMBERS, NOTICE)}
