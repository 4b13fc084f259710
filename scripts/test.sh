#!/bin/sh
# The whole test suite: installs what it needs, then builds and tests
#  1. gcc, warnings as errors;
#  2. clang, warnings as errors, ASan+UBSan;
#  3. clang, ThreadSanitizer (the HTTP module is threaded);
#  4. clang-tidy and cppcheck (scripts/lint.sh), then valgrind memcheck
#     over the unit tests;
#  5. every libFuzzer harness for 60 s (HANDOFF_FUZZ_SECONDS);
#  6. an install into a temporary prefix, and a program built against it
#     with pkg-config alone.
# Usage: scripts/test.sh [quick]   (quick: step 1 only)
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
JOBS=$(nproc)
run_suite() { # name, cmake args...
    name=$1; shift
    echo "=== $name" >&2
    cmake -S . -B "build-$name" -G Ninja -DHANDOFF_WERROR=ON "$@" >/dev/null
    cmake --build "build-$name" -j "$JOBS"
    (cd "build-$name" && ctest --output-on-failure -j "$JOBS" --timeout 600)
}
run_suite gcc -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo
[ "${1:-}" = quick ] && exit 0
run_suite asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DHANDOFF_SANITIZE=address,undefined
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    run_suite tsan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DHANDOFF_SANITIZE=thread

echo "=== lint (clang-tidy, cppcheck)" >&2
scripts/lint.sh

echo "=== valgrind memcheck (unit tests)" >&2
for t in build-gcc/tests/test-*; do
    [ -x "$t" ] || continue
    case "$t" in */test-alloc) continue ;; esac  # --wrap'd allocator: see ASan run
    valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
        --track-fds=no "$t" >/dev/null
    echo "valgrind: $(basename "$t") clean" >&2
done

echo "=== fuzz (libFuzzer, ${HANDOFF_FUZZ_SECONDS:-60} s per harness)" >&2
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DHANDOFF_FUZZ=ON \
    -DHANDOFF_FUZZ_SECONDS="${HANDOFF_FUZZ_SECONDS:-60}" >/dev/null
cmake --build build-fuzz -j "$JOBS" --target $(ls fuzz/fuzz-*.c | sed 's|fuzz/||; s|\.c$||')
(cd build-fuzz && ctest -L fuzz -j "$JOBS" --output-on-failure)

echo "=== install + pkg-config" >&2
prefix=$(mktemp -d /tmp/handoff-prefix.XXXXXX)
cmake --install build-gcc --prefix "$prefix" >/dev/null
for f in include/handoff.h include/handoff/http.h bin/handoff share/man/man1/handoff.1 \
         share/man/man3/handoff.3 share/man/man3/handoff_listen.3 share/man/man3/handoff_http.3; do
    [ -e "$prefix/$f" ] || { echo "install: $f missing" >&2; exit 1; }
done
"$prefix/bin/handoff" --help >/dev/null
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
    sh -c 'cc -Wall -Werror -o "$1/consumer" "$1/consumer.c" $(pkg-config --cflags --libs handoff-http handoff) -Wl,-rpath,"$(pkg-config --variable=libdir handoff)"' _ "$prefix"
"$prefix/consumer"
rm -rf "$prefix"
echo "all suites passed" >&2
