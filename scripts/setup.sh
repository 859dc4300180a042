#!/usr/bin/env bash
# Install what genrestream needs into ./.venv (idempotent).
#   scripts/setup.sh            serving only: stream/ and dashboard/ (no TensorFlow)
#   scripts/setup.sh train test also the extras for training/export and the test suite
# System packages (Debian/Ubuntu) are installed with apt-get when missing and when
# we may (root, or sudo without a password): PortAudio for microphones; for tests
# also redis-server, icecast2, Chromium, ffmpeg (an Icecast source client), openssl
# (HTTPS test certificates) and PulseAudio (a virtual microphone).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=("$@")

need=(libportaudio2)
for extra in "${extras[@]}"; do
  [ "$extra" = test ] && need+=(redis-server icecast2 chromium ffmpeg openssl pulseaudio pulseaudio-utils libasound2-plugins)
done
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "setup: installing ${missing[*]} with apt-get" >&2
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || echo "setup: could not install ${missing[*]}; tests that need them will be skipped" >&2
  else
    echo "setup: not a Debian/Ubuntu system; install ${missing[*]} yourself" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "setup: genrestream needs Python 3.11 or newer ($python is $($python -V 2>&1))" >&2; exit 1; }
  "$python" -m venv .venv
fi
spec="."
if [ "${#extras[@]}" -gt 0 ]; then
  spec=".[$(IFS=,; echo "${extras[*]}")]"
fi
stamp=".venv/.installed-$(echo "$spec" | tr -c 'a-z' '_')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$spec"
  touch "$stamp"
fi
