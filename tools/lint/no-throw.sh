#!/usr/bin/env bash
# No exception escapes a library (CONTRIBUTING.md, "Errors"). Lists calls in libs/ that throw or
# abort on bad input unless the line, or the line above it, says why it cannot:
#   // nothrow: <reason>
# Flagged: nlohmann's dump() (use metadata::DumpJson) and throwing parse(); std::sto*; .value() on
# a Result or optional (aborts or throws when empty); throwing std::filesystem calls (pass a
# std::error_code); `throw` statements. Exit status 1 when anything is flagged.
#   tools/lint/no-throw.sh [ROOT]
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
cd "$root"
patterns=(
  '\.dump\('
  '[Jj]son::parse\('
  'std::sto(i|l|ul|ull|ll|f|d|ld)\('
  '\.value\(\)'
  '(fs|std::filesystem)::(exists|create_directories|create_directory|remove|remove_all|file_size|rename|copy_file|copy|is_directory|is_regular_file|is_symlink|permissions|resize_file|canonical|weakly_canonical|status|symlink_status|last_write_time|read_symlink|space|directory_iterator|recursive_directory_iterator)\('
  '(^|[^_[:alnum:]])throw([[:space:];(]|$)'
)
found=0
while IFS= read -r -d '' file; do
  for p in "${patterns[@]}"; do
    while IFS=: read -r line text; do
      [ -n "$line" ] || continue
      # Calls that take a std::error_code cannot throw; the nothrow form of parse neither.
      if grep -qE '(, ec\)|, ec,|error_code|ec\.value\(\)|nullptr, false|allow_exceptions=\*/ *false)' <<<"$text"; then
        continue
      fi
      if grep -q '// nothrow:' <<<"$text"; then continue; fi
      prev=$((line - 1))
      if [ "$prev" -gt 0 ] && sed -n "${prev}p" "$file" | grep -q '// nothrow:'; then continue; fi
      # Comments mentioning the calls are fine.
      if grep -qE '^[[:space:]]*//' <<<"$text"; then continue; fi
      echo "$file:$line: $(sed -E 's/^[[:space:]]+//' <<<"$text")"
      found=1
    done < <(grep -nP "$p" "$file" || true)
  done
done < <(find libs \( -name '*.cpp' -o -name '*.hpp' \) ! -path 'libs/common/include/upkeep/common/result.hpp' |
  sort | tr '\n' '\0')
if [ "$found" -ne 0 ]; then
  echo "no-throw: the calls above can throw or abort in a library; handle the failure as a" \
       "Result, or add '// nothrow: <reason>' where it cannot happen" >&2
  exit 1
fi
echo "no-throw: no unguarded throwing calls in libs/"
