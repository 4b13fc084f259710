#!/bin/sh
# Static analysis with the checked-in configuration: cppcheck and
# clang-tidy (.clang-tidy) over the library, the HTTP module, the tool and
# the examples, then the structure (scripts/check-structure.py: the layers
# of src/, src/shared/, src/http/ and tools/, cycles between files, files
# over 600 lines without a reason). Exits non-zero on any finding.
set -eu
cd "$(dirname "$0")/.."
b=build-lint
cmake -S . -B "$b" -G Ninja -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build "$b" >/dev/null   # generated headers/config, and proof it builds
files=$(ls src/*.c src/shared/*.c src/http/*.c src/preload/*.c tools/*.c examples/*.c 2>/dev/null)
echo "=== cppcheck" >&2
cppcheck --project="$b/compile_commands.json" --enable=warning,style,performance,portability \
    --inline-suppr --quiet --error-exitcode=1 --suppress=missingIncludeSystem \
    --suppress=variableScope --suppress=unusedStructMember \
    -i"$PWD/tests" -i"$PWD/fuzz" -i"$PWD/docs"
echo "=== clang-tidy" >&2
# One clang-tidy per file, $(nproc) at a time, each into its own file (no
# interleaved lines). Its exit status does not reflect every diagnostic:
# judge by the output instead.
tidy=$(mktemp -d /tmp/handoff-tidy.XXXXXX)
trap 'rm -rf "$tidy"' EXIT
# shellcheck disable=SC2086,SC2016
printf '%s\n' $files | xargs -P "$(nproc)" -I{} sh -c \
    'clang-tidy --quiet -p "$1" "$2" >"$3/$(echo "$2" | tr / _).out" 2>&1 || true' sh "$b" {} "$tidy"
out=$(cat "$tidy"/*.out | grep -E "(error|warning):" || true)
if [ -n "$out" ]; then
    echo "$out" >&2
    exit 1
fi
echo "=== structure (scripts/check-structure.py)" >&2
# The structure check fails lint: no cycle between files or directories,
# no file over 600 lines without a reason at its top (issue 9). Set it to 0
# only to see the report without failing.
STRUCTURE_MUST_PASS=1
if ! scripts/check-structure.py --build "$b"; then
    if [ "$STRUCTURE_MUST_PASS" = 1 ]; then
        exit 1
    fi
    echo "lint: cppcheck and clang-tidy clean; the structure is not (above), which does not fail lint until STRUCTURE_MUST_PASS=1" >&2
    exit 0
fi
echo "lint: clean" >&2
