# Helpers shared by the CLI test scripts (sourced).
fail() { echo "FAIL: $*" >&2; exit 1; }
# json FILE KEY: prints a top-level value of a JSON file.
json() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
