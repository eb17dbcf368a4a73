#!/usr/bin/env bash
# Checks scripts/loadbench.sh against the real binaries, briefly: a bad
# LOADBENCH_REPEAT exits 2 naming it; LOADBENCH_REPEAT=2 gives a row per run
# of every server (memory mode and with storage) and a median row that is
# the middle of the runs' numbers (for two runs, their mean) and the higher
# peak RSS; beside busy loops, a row is flagged noisy with the share other
# processes took during each of its loads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fails=0
for bad in 0 -1 x 1.5 1000; do
	rc=0
	out=$(LOADBENCH_REPEAT=$bad ./scripts/loadbench.sh 2>&1) || rc=$?
	if [ "$rc" -ne 2 ] || [[ $out != *"LOADBENCH_REPEAT must be"*"'$bad'"* ]]; then
		echo "loadbench.sh with LOADBENCH_REPEAT=$bad: exit $rc, output: $out" >&2
		fails=1
	fi
done

err=$(mktemp)
burners=() # the busy loops of the last check, while they run
trap 'kill "${burners[@]}" 2>/dev/null || true; rm -f "$err"' EXIT
rc=0
out=$(LOADBENCH_DURATION=1s LOADBENCH_BATCHES=10 LOADBENCH_REPEAT=2 ./scripts/loadbench.sh 2>"$err") || rc=$?
if [ "$rc" -ne 0 ]; then
	printf 'loadbench.sh with LOADBENCH_REPEAT=2 exited %d; its output:\n%s\n%s\n' "$rc" "$out" "$(cat "$err")" >&2
	exit 1
fi
mapfile -t rows < <(grep -E '^\| 10[ ,]' <<<"$out")
if [ "${#rows[@]}" -ne 3 ] || [[ ${rows[0]} != "| 10 (run 1) |"* || ${rows[1]} != "| 10 (run 2) |"* ||
	${rows[2]} != "| 10, median of 2 |"* ]]; then
	printf 'loadbench.sh with LOADBENCH_REPEAT=2: want rows for run 1, run 2 and their median, got:\n%s\n' "$out" >&2
	exit 1
fi
# Every cell of the median row against the runs' (rounded as printed).
if ! awk -F'|' -v r1="${rows[0]}" -v r2="${rows[1]}" -v m="${rows[2]}" 'BEGIN {
	n = split(r1, a, "|"); split(r2, b, "|"); split(m, c, "|")
	if (n != 13) { print "want 11 columns, got " n - 2 > "/dev/stderr"; exit 1 }
	for (i = 3; i < n; i++) {
		want = i == 8 ? (a[i] > b[i] ? a[i] : b[i]) : (a[i] + b[i]) / 2
		# one unit of the last printed digit: a, b and c are each rounded
		gsub(/ /, "", c[i])
		tol = index(c[i], ".") ? 10 ^ -(length(c[i]) - index(c[i], ".")) : 1
		if (c[i] - want > tol || want - c[i] > tol) {
			printf "median row column %d: %s, want %s from %s and %s\n", i - 1, c[i], want, a[i], b[i] > "/dev/stderr"
			bad = 1
		}
	}
	exit bad
}'; then
	printf '%s\n' "$out" >&2
	fails=1
fi
# Two busy loops beside the loads: every load, the one with storage
# included, shares the machine with them, and the row is flagged with each
# load's share.
for _ in 1 2; do
	(while :; do :; done) &
	burners+=($!)
done
rc=0
out=$(LOADBENCH_DURATION=1s LOADBENCH_BATCHES=10 ./scripts/loadbench.sh 2>"$err") || rc=$?
kill "${burners[@]}"
wait "${burners[@]}" 2>/dev/null || true
burners=()
noisy='^note: batch 10: other processes used [0-9]+% of the machine during the nullsink load and [0-9]+% during the agentmeter load and ([0-9]+)% during the load with storage: this row is noisy$'
if [ "$rc" -ne 0 ] || ! grep -Eq "$noisy" <<<"$out" ||
	[ "$(grep -E "$noisy" <<<"$out" | sed -E "s/$noisy/\1/")" -le 5 ]; then
	printf 'loadbench.sh beside two busy loops: exit %d, want a note with each load'"'"'s share (storage > 5%%); its output:\n%s\n%s\n' \
		"$rc" "$out" "$(cat "$err")" >&2
	fails=1
fi
[ "$fails" -eq 0 ] && echo "loadbench.sh runs, medians and noise notes ok"
