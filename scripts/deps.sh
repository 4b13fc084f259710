#!/bin/sh
# Installs every Debian 12 package that building, testing (scripts/test.sh:
# the suites, lint, valgrind, the fuzzers), the demo and the benchmarks
# call. Idempotent: installs only what is missing. Run as root (the
# README's quick start does) on Debian 12 (bookworm); nothing else needs
# to be installed first.
set -eu
# build: compilers, CMake/Ninja, the libraries the code links with
BUILD="cmake ninja-build make gcc clang libclang-rt-14-dev binutils pkg-config
       libssl-dev libnghttp2-dev libuv1-dev libevent-dev"
# tests: cmocka, python3 (+ h2 for HTTP/2 clients), the tools the cases run
# (openssl, curl, wrk, h2load/nghttp, setpriv/unshare/prlimit, ss, pkill,
# systemd-socket-activate, start_server, man pages, setcap, sslscan), real
# servers under `handoff run` (Starlet, gunicorn, redis, lighttpd, h2o,
# memcached; nginx, below, too)
TEST="libcmocka-dev python3 python3-h2 openssl curl wrk nghttp2-client nghttp2-server
      util-linux iproute2 procps systemd libserver-starter-perl mandoc libcap2-bin
      starlet gunicorn redis-server redis-tools lighttpd h2o memcached sslscan"
# scripts/lint.sh and the memcheck step of scripts/test.sh
LINT="clang-tidy cppcheck valgrind"
# bench/: the peers and the plots
BENCH="nginx haproxy gnuplot-nox"
missing=""
for p in $BUILD $TEST $LINT $BENCH; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
