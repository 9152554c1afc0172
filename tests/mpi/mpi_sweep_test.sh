#!/usr/bin/env bash
# `kvsim sweep` under mpirun (issue 12): the sweep.csv of 2 ranks is byte-identical to one
# process's (sweep.json equal but for the run fields), a run killed mid-way resumes from its
# journal to the same bytes, and a rank that dies fails the job naming the units in flight.
# Usage: mpi_sweep_test.sh KVSIM MPIEXEC
set -euo pipefail
kvsim=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

mpi=("$mpiexec" -np 2 --oversubscribe)
if [ "$(id -u)" -eq 0 ]; then mpi+=(--allow-run-as-root); fi
fail() { echo "FAIL: $*" >&2; exit 1; }

for seed in 1 2 3; do
  "$kvsim" synth --shape stories260k --prompt 192 --decode 48 --seed "$seed" -o "t$seed.h5" >/dev/null
done
printf '# the study\nt1.h5\nt2.h5\nt3.h5\n' > traces.txt
sweep=(sweep --policy all --budget 16 --budget 48 --budget 0.5p --threads 1)

# Same run fields ignored: they describe the run, not its results (analysis/RESULTS_FORMAT.md).
same_json() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for d in (a, b):
    for key in ("threads", "ranks", "wall_seconds", "cells_resumed", "command"):
        d.pop(key)
sys.exit(0 if a == b else 1)
PY
}

mkdir one two
"$kvsim" "${sweep[@]}" --trace 't*.h5' --out one >/dev/null
"${mpi[@]}" "$kvsim" "${sweep[@]}" --trace traces.txt --out two > two.log 2>&1 || { cat two.log; fail "2-rank sweep"; }
cmp one/sweep.csv two/sweep.csv || fail "2 ranks: sweep.csv differs from one process"
same_json one/sweep.json two/sweep.json || fail "2 ranks: sweep.json differs beyond the run fields"
grep -q '"ranks": 2' two/sweep.json || fail "sweep.json does not record 2 ranks"
echo "ok: 2 ranks, byte-identical sweep.csv"

# Interrupted: rank 0 dies after journaling 2 units; the re-run finishes the rest.
mkdir resumed
if "${mpi[@]}" -x KVSIM_TEST_KILL_AFTER_UNITS=2 "$kvsim" "${sweep[@]}" --trace 't*.h5' \
    --cells-per-unit 5 --out resumed > resumed.log 2>&1; then
  fail "a run killed after 2 units exited 0"
fi
[ ! -e resumed/sweep.csv ] || fail "an interrupted run left sweep.csv"
units=$(ls resumed/sweep.journal | grep -c '^unit-')
[ "$units" -ge 2 ] || fail "the journal holds $units units, expected >= 2"
"${mpi[@]}" "$kvsim" "${sweep[@]}" --trace 't*.h5' --cells-per-unit 5 --out resumed > resumed2.log 2>&1 \
  || { cat resumed2.log; fail "resume"; }
grep -q "cells from the journal" resumed2.log || fail "the re-run did not read the journal"
cmp one/sweep.csv resumed/sweep.csv || fail "resumed sweep.csv differs"
echo "ok: resumed after an interrupted run ($units units kept)"

# A rank dies (rank 1 kills itself as it starts its 2nd unit).
mkdir killed
if "${mpi[@]}" -x KVSIM_TEST_KILL_RANK=1:2 "$kvsim" "${sweep[@]}" --trace 't*.h5' \
    --cells-per-unit 5 --out killed > killed.log 2>&1; then
  fail "a job whose rank died exited 0"
fi
grep -q "Units in flight" killed.log || { cat killed.log; fail "no message naming the units in flight"; }
grep -Eq "rank 1: t[123]\.h5 cells" killed.log || { cat killed.log; fail "the dead rank's unit is not named"; }
[ ! -e killed/sweep.csv ] || fail "a failed job left sweep.csv"
"${mpi[@]}" "$kvsim" "${sweep[@]}" --trace 't*.h5' --cells-per-unit 5 --out killed > killed2.log 2>&1 \
  || { cat killed2.log; fail "re-run after a dead rank"; }
cmp one/sweep.csv killed/sweep.csv || fail "sweep.csv after a dead rank differs"
echo "ok: a dead rank is named, the re-run completes"

# A corrupt trace fails the job with exit 2 naming it; --keep-going finishes the rest.
echo "not a trace" > t4.h5
mkdir corrupt
set +e
"${mpi[@]}" "$kvsim" "${sweep[@]}" --trace 't*.h5' --out corrupt > corrupt.log 2>&1
rc=$?
set -e
[ "$rc" -eq 2 ] || { cat corrupt.log; fail "corrupt trace: exit $rc, expected 2"; }
grep -q "t4.h5" corrupt.log || fail "the corrupt trace is not named"
[ ! -e corrupt/sweep.csv ] || fail "a failed sweep left sweep.csv"
echo "ok: a corrupt trace fails the job with exit 2"
