"""Re-create kd_core/publish/web/onnxruntime-web/ (the in-browser student's runtime) from the pinned npm release.

    python scripts/vendor_onnxruntime_web.py                 # npm pack onnxruntime-web@VERSION, check, write
    python scripts/vendor_onnxruntime_web.py --tarball T.tgz # the same from a tarball already downloaded

The tarball's SHA-512 must equal npm's pinned dist.integrity (kd_core.publish.web_runtime), else exit 2 and nothing
is written. The output is byte for byte the committed files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # kd_core, run from anywhere

from kd_core.publish import web_runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", help=f"a local {web_runtime.PACKAGE}-{web_runtime.VERSION}.tgz instead of npm")
    parser.add_argument("--out", default=str(web_runtime.ASSETS), help="where the files go")
    args = parser.parse_args(argv)
    try:
        written = web_runtime.vendor(args.tarball, Path(args.out))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, digest in written.items():
        print(f"{digest}  {Path(args.out) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
