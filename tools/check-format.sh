#!/usr/bin/env bash
# check-format.sh: fails when a C++ file (tracked, or new and not ignored) differs from .clang-format (includes sorted
# too: clang-format sorts each block of #includes). Lists the files that differ and how to fix
# them. Run by ctest as `format_check` (so tools/test.sh fails on a difference).
#   check-format.sh         check every tracked .cc and .h
#   check-format.sh --fix   rewrite them in place instead
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang-format >/dev/null; then
  echo "check-format: clang-format is not installed (tools/install-deps.sh installs it)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.cc' '*.h' 2>/dev/null || find src tools tests bench \
  -name '*.cc' -o -name '*.h')
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
differ=()
for f in "${files[@]}"; do
  if ! clang-format "$f" | cmp -s - "$f"; then
    differ+=("$f")
  fi
done
if [ ${#differ[@]} -ne 0 ]; then
  echo "check-format: ${#differ[@]} file(s) differ from .clang-format:" >&2
  printf '  %s\n' "${differ[@]}" >&2
  echo "fix with: tools/check-format.sh --fix" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files match .clang-format"
