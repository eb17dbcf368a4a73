#!/usr/bin/env bash
# Checks scripts/fuzz.sh's verdicts with a stand-in `go` on PATH: a bare
# "context deadline exceeded" at the -fuzztime boundary is run again once
# (golang/go#75804); twice is a failure; a run that wrote a failing input
# fails at once; a clean run passes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cat >"$dir/go" <<'FAKE'
#!/usr/bin/env bash
if [[ "$*" == *"-list"* ]]; then printf 'FuzzX\nok example.com/p 0.1s\n'; exit 0; fi
n=$(($(cat "$FAKE_STATE" 2>/dev/null || echo 0) + 1))
echo "$n" >"$FAKE_STATE"
case "$FAKE_MODE:$n" in
flake:1 | flake2:*) printf -- '--- FAIL: FuzzX (5.0s)\n    context deadline exceeded\n'; exit 1 ;;
crash:*) printf -- '--- FAIL: FuzzX (1.0s)\n    x_test.go:12: boom\n    Failing input written to testdata/fuzz/FuzzX/abc\n    context deadline exceeded\n'; exit 1 ;;
*) echo PASS ;;
esac
FAKE
chmod +x "$dir/go"

fails=0
check() { # MODE WANT_RC WANT_RUNS
	local rc=0
	rm -f "$dir/state"
	PATH="$dir:$PATH" FAKE_STATE="$dir/state" FAKE_MODE=$1 ./scripts/fuzz.sh 1s >"$dir/out" 2>&1 || rc=$?
	local runs
	runs=$(cat "$dir/state")
	if [ "$rc" -ne "$2" ] || [ "$runs" -ne "$3" ]; then
		echo "fuzz.sh with $1: exit $rc after $runs runs, want exit $2 after $3" >&2
		fails=1
	fi
}
check pass 0 1
check flake 0 2
check flake2 1 2
check crash 1 1
[ "$fails" -eq 0 ] && echo "fuzz.sh verdicts ok"
exit "$fails"
