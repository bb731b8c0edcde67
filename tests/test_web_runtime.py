"""The vendored onnxruntime-web (kd_core.publish.web_runtime, scripts/vendor_onnxruntime_web.py): the integrity check
refuses a tampered tarball, the output is the same bytes every time, and the committed files are the pinned
release's (slow: fetches it from npm)."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kd_core.publish import web_runtime

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "vendor_onnxruntime_web.py"


def fake_release(path: Path) -> Path:
    """A tarball with the two members the vendoring takes (made-up content)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, (member, _) in web_runtime.MEMBERS.items():
            data = f"content of {name}\n".encode() * 100
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_vendoring_twice_writes_the_same_bytes(tmp_path, monkeypatch):
    tarball = fake_release(tmp_path / "release.tgz")
    monkeypatch.setattr(web_runtime, "INTEGRITY", web_runtime.integrity(tarball))
    first, second = web_runtime.vendor(tarball, tmp_path / "a"), web_runtime.vendor(tarball, tmp_path / "b")
    assert first == second == digests(tmp_path / "a") == digests(tmp_path / "b")
    assert sorted(first) == sorted([*web_runtime.MEMBERS, web_runtime.NOTICE])
    wasm = gzip.decompress((tmp_path / "a" / web_runtime.WASM).read_bytes())
    assert wasm == f"content of {web_runtime.WASM}\n".encode() * 100  # inflated, it is the tarball's member
    assert web_runtime.present(tmp_path / "a") and not web_runtime.present(tmp_path)


def test_a_tampered_tarball_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    tarball = fake_release(tmp_path / "release.tgz")
    monkeypatch.setattr(web_runtime, "INTEGRITY", web_runtime.integrity(tarball))
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    tarball.write_bytes(bytes(data))
    with pytest.raises(web_runtime.IntegrityError, match="is not onnxruntime-web@1.31.1: its integrity is sha512-"):
        web_runtime.vendor(tarball, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_script_exits_2_with_one_line_on_a_wrong_tarball(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--tarball", str(fake_release(tmp_path / "x.tgz")),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "npm's is sha512-5GeH+bWQ" in done.stderr and not (tmp_path / "out").exists()


def test_the_committed_files_are_there_with_their_notice():
    assert web_runtime.present()
    notice = (web_runtime.ASSETS / web_runtime.NOTICE).read_text(encoding="utf-8")
    assert notice.startswith(f"onnxruntime-web {web_runtime.VERSION} (npm, {web_runtime.INTEGRITY})")
    assert "MIT License" in notice and "Copyright (c) Microsoft Corporation" in notice


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm and the npm registry")
def test_the_script_recreates_the_committed_files_byte_for_byte(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert digests(tmp_path) == digests(web_runtime.ASSETS)
