#!/usr/bin/env bash
# The configuration reference is generated from the option definitions: the committed
# docs/configuration.md must equal `perennial docs config` (regenerate it with
# `build/bin/perennial docs config > docs/configuration.md`). The messages docs/troubleshooting.md
# quotes are ones the code or the programs produce (docs_messages.py).
# usage: docs_test.sh PERENNIAL SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
. "$src/tests/cli/lib.sh"
t=$(mktemp)
trap 'rm -f "$t"' EXIT
"$bin" docs config >"$t"
diff -u "$src/docs/configuration.md" "$t" >&2 ||
  fail "docs/configuration.md differs from the option definitions: run build/bin/perennial docs config > docs/configuration.md"
echo "PASS: docs/configuration.md matches the option definitions"
/usr/bin/python3 "$src/tests/cli/docs_messages.py" "$bin" "$src" || fail "docs/troubleshooting.md quotes messages nothing produces"
