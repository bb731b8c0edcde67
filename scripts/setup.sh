#!/usr/bin/env bash
# Create .venv/ in the repo root and install KD Playground into it; idempotent, safe to re-run.
#   bash scripts/setup.sh        runtime packages (the app, the CLI): requirements.txt, what a Space installs
#   bash scripts/setup.sh --dev  plus the test tools (pytest, ruff, playwright) and Chromium
# KD_VENV=PATH puts the environment there instead (.ci/run builds a runtime-only one beside .venv/).
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package when apt is available (offline);
# elsewhere torchvision downloads it on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_install() {  # apt_install PACKAGE...: only what is missing, only where we may
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "note: no apt-get; skipping ${missing[*]}" >&2; return 0; }
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null
}
apt_install dataset-fashion-mnist
[ $dev -eq 1 ] && apt_install chromium

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
venv=${KD_VENV:-.venv}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if [ $dev -eq 1 ]; then
  "$venv/bin/python" -m pip install -q -r requirements-dev.txt
else
  "$venv/bin/python" -m pip install -q -r requirements.txt
fi
