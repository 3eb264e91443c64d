#!/usr/bin/env bash
# `make test`: the suite in two pytest processes side by side.
#
# The suite mostly waits (about 350 s of CPU against 887 s when run serially), and the
# multi-site test the most: it holds one site's link cut for two minutes. It and the rig's own
# tests run in a pytest process of their own beside the rest (617 s and 196 s side by side,
# 623 s in all, instead of 887 s in one, on 2 cores). Each process has its own test database
# and Temporal dev server (tests/conftest.py), and only the side run makes network namespaces.
# The main run keeps the serial run's order: with the durability and alarm-outbox files moved
# out too, the Sparkplug demo test that follows them found no action to propose (its first
# alarm was CUSUM's, estimating the 6σ step at 3.6σ, below the action's 4σ: a timing race
# between the detectors that the serial order has so far lost to the EWMA's alarm). The side
# run's report is printed after the main one's; either failing fails `make test`.
#
# `make test PYTEST_ARGS=...` (one file, `-k`, `-x`) runs those arguments in one process instead.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=.venv/bin/pytest

if [[ -n "${PYTEST_ARGS:-}" ]]; then
    # The caller's arguments as the shell would read them typed: -k "a or b" stays one.
    eval "exec \"\$PYTEST\" $PYTEST_ARGS"
fi

SIDE=(tests/integration/test_multi_site.py tests/integration/test_netns_rig.py)
mkdir -p test-artifacts
side_log=test-artifacts/side-run.log

# Its own process group, so a Ctrl-C or a failure here stops it and its children, and pytest's
# own SIGINT handling still runs the fixtures' clean-up (namespaces, edges, simulators).
set -m
"$PYTEST" "${SIDE[@]}" >"$side_log" 2>&1 &
side=$!
set +m
stop_side() {
    if kill -0 "$side" 2>/dev/null; then
        kill -INT -- "-$side" 2>/dev/null
        wait "$side" 2>/dev/null
    fi
}
trap 'stop_side; exit 130' INT TERM

echo "make test: the network-namespace tests run beside the rest (${SIDE[*]}); their report follows, and is in $side_log"
ignores=()
for f in "${SIDE[@]}"; do ignores+=("--ignore=$f"); done
"$PYTEST" "${ignores[@]}"
main_rc=$?

if kill -0 "$side" 2>/dev/null; then
    echo "make test: waiting for the side run to finish"
fi
wait "$side"
side_rc=$?
trap - INT TERM
echo
echo "================ the side run (${SIDE[*]}) ================"
cat "$side_log"

if ((main_rc != 0 || side_rc != 0)); then
    echo "make test: failed (main run exit $main_rc, side run exit $side_rc)" >&2
    exit 1
fi
