#!/bin/sh
# Static analysis with the checked-in configuration: cppcheck and
# clang-tidy (.clang-tidy) over the library, the HTTP module, the tool and
# the examples. Exits non-zero on any finding.
set -eu
cd "$(dirname "$0")/.."
b=build-lint
cmake -S . -B "$b" -G Ninja -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build "$b" >/dev/null   # generated headers/config, and proof it builds
files=$(ls src/*.c src/shared/*.c src/http/*.c tools/*.c examples/*.c 2>/dev/null)
echo "=== cppcheck" >&2
cppcheck --project="$b/compile_commands.json" --enable=warning,style,performance,portability \
    --inline-suppr --quiet --error-exitcode=1 --suppress=missingIncludeSystem \
    --suppress=variableScope --suppress=unusedStructMember \
    -i"$PWD/tests" -i"$PWD/fuzz" -i"$PWD/docs"
echo "=== clang-tidy" >&2
# clang-tidy's exit status does not reflect every diagnostic: judge by its
# output instead.
# shellcheck disable=SC2086
out=$(clang-tidy --quiet -p "$b" $files 2>&1 | grep -E "(error|warning):" || true)
if [ -n "$out" ]; then
    echo "$out" >&2
    exit 1
fi
echo "lint: clean" >&2
