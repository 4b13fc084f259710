#!/bin/sh
# Installs the Debian 12 packages handoff needs to build, test and benchmark.
# Idempotent; run as root (the README's quick start does).
set -eu
PKGS="cmake ninja-build gcc clang pkg-config python3 curl openssl
      libssl-dev libcmocka-dev libclang-rt-14-dev
      wrk nginx systemd valgrind libserver-starter-perl libuv1-dev libevent-dev mandoc haproxy gnuplot-nox
      starlet gunicorn util-linux
      libnghttp2-dev nghttp2-client python3-h2 h2o"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
