#!/bin/sh
# The whole test suite (CI runs it: .ci/run). Installs what it needs
# (scripts/deps.sh), then runs these stages, each timed:
#  gcc    gcc, warnings as errors: build, then every ctest case (unit,
#         integration, man page examples, the dependency check);
#  asan   clang, warnings as errors, ASan+UBSan: the same cases;
#  tsan   clang, ThreadSanitizer (the HTTP module is threaded): the same,
#         but the single-threaded supervisor's and real servers' cases;
#  lint   clang-tidy, cppcheck and the structure report (scripts/lint.sh);
#  memcheck  valgrind over the unit tests of the gcc build;
#  fuzz   every libFuzzer harness for HANDOFF_FUZZ_SECONDS (30) seconds;
#  install   an install into a temporary prefix, and a program built
#         against it with pkg-config alone.
# A failing stage does not stop the others; the summary at the end lists
# each stage's result and time, and the exit status is 1 if any failed.
# Usage: scripts/test.sh [quick]   (quick: the gcc stage only)
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
JOBS=$(nproc)
SUMMARY=$(mktemp /tmp/handoff-test-summary.XXXXXX)
trap 'rm -f "$SUMMARY"' EXIT
T0=$(date +%s)

stage() { # name, command...: runs it, records ok/FAILED and the time
    name=$1; shift
    echo "=== $name" >&2
    s=$(date +%s)
    if "$@"; then r=ok; else r=FAILED; fi
    t=$(( $(date +%s) - s ))
    printf '%-9s %-7s %3dm%02ds\n' "$name" "$r" $((t / 60)) $((t % 60)) >>"$SUMMARY"
}

finish() {
    t=$(( $(date +%s) - T0 ))
    echo "=== summary (stage, result, wall time; $JOBS CPUs)" >&2
    cat "$SUMMARY" >&2
    printf 'total              %3dm%02ds\n' $((t / 60)) $((t % 60)) >&2
    if grep -q FAILED "$SUMMARY"; then
        echo "some stages FAILED" >&2
        exit 1
    fi
    echo "all stages passed" >&2
    exit 0
}

suite() { # name, cmake args...: build, then every ctest case ($CTEST_ARGS: a filter)
    name=$1; shift
    # shellcheck disable=SC2086  # CTEST_ARGS is a list of words
    cmake -S . -B "build-$name" -G Ninja -DHANDOFF_WERROR=ON "$@" >/dev/null &&
        cmake --build "build-$name" -j "$JOBS" &&
        (cd "build-$name" && ctest --output-on-failure -j "$JOBS" --timeout 600 ${CTEST_ARGS:-})
}

# ThreadSanitizer looks for data races, and only the HTTP module (and the
# tests' own threads) run threads: the supervisor (tools/) is one thread,
# and the preload cases with real servers run third-party programs that
# are not instrumented. Those labels run in the gcc and ASan stages only,
# which keeps CI within its 40 minutes.
tsan_suite() (
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
    CTEST_ARGS="-LE it-supervisor|it-preload-servers"
    export TSAN_OPTIONS CTEST_ARGS
    suite tsan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHANDOFF_SANITIZE=thread
)

memcheck() {
    [ -d build-gcc/tests ] || return 1
    rc=0
    for t in build-gcc/tests/test-*; do
        [ -x "$t" ] || continue
        case "$t" in */test-alloc) continue ;; esac  # --wrap'd allocator: see the ASan stage
        if valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
            --track-fds=no "$t" >/dev/null; then
            echo "valgrind: $(basename "$t") clean" >&2
        else
            echo "valgrind: $(basename "$t") FAILED" >&2
            rc=1
        fi
    done
    return "$rc"
}

# shellcheck disable=SC2046  # the target names are plain words
fuzz() {
    cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DHANDOFF_FUZZ=ON \
        -DHANDOFF_FUZZ_SECONDS="${HANDOFF_FUZZ_SECONDS:-30}" >/dev/null &&
        cmake --build build-fuzz -j "$JOBS" --target $(ls fuzz/fuzz-*.c | sed 's|fuzz/||; s|\.c$||') &&
        (cd build-fuzz && ctest -L fuzz -j "$JOBS" --output-on-failure)
}

install_check() {
    [ -d build-gcc ] || return 1
    prefix=$(mktemp -d /tmp/handoff-prefix.XXXXXX)
    cmake --install build-gcc --prefix "$prefix" >/dev/null || return 1
    for f in include/handoff.h include/handoff/http.h bin/handoff share/man/man1/handoff.1 \
             share/man/man3/handoff.3 share/man/man3/handoff_listen.3 share/man/man3/handoff_http.3; do
        [ -e "$prefix/$f" ] || { echo "install: $f missing" >&2; return 1; }
    done
    "$prefix/bin/handoff" --help >/dev/null || return 1
    cat > "$prefix/consumer.c" <<'C'
#include <handoff.h>
#include <handoff/http.h>
#include <stdio.h>
static void hello(const handoff_http_request *req, handoff_http_response *res, void *ud) {
    (void)req; (void)ud;
    handoff_http_response_body(res, "hi", 2);
    handoff_http_response_end(res);
}
int main(void) {
    handoff_addr a;
    int r = handoff_addr_parse("127.0.0.1:8080", &a, NULL, 0);
    printf("%s %p\n", r == 0 ? "ok" : "fail", (void *)hello);
    return r != 0;
}
C
    PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig" \
        sh -c 'cc -Wall -Werror -o "$1/consumer" "$1/consumer.c" $(pkg-config --cflags --libs handoff-http handoff) -Wl,-rpath,"$(pkg-config --variable=libdir handoff)"' _ "$prefix" &&
        "$prefix/consumer"
    rc=$?
    rm -rf "$prefix"
    return "$rc"
}

stage gcc suite gcc -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo
[ "${1:-}" = quick ] && finish
stage asan suite asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DHANDOFF_SANITIZE=address,undefined
stage tsan tsan_suite
stage lint scripts/lint.sh
stage memcheck memcheck
stage fuzz fuzz
stage install install_check
finish
