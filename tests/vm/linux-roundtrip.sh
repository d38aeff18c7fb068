#!/bin/sh
# Runs INSIDE the VM (see run-in-vm.sh and README.md): the wgmesh-linux crate's root
# tests (platform/linux/tests/root.rs) against a kernel that has WireGuard, so that
# kernel_backend_roundtrip really runs instead of printing "SKIPPED ...".
#
# The one extra file must be that test binary, as
#   cargo test -p wgmesh-linux --features root-tests --no-run
# prints it (target/debug/deps/root-<hash>); it lands in /usr/local/bin/root-<hash>.
#   kernel-backend-roundtrip  the test ran, printed no SKIPPED line and passed
set -eu

IP=/usr/bin/ip

fail() { echo "VM-FAIL: $*"; exit 1; }

grep -q '^wireguard ' /proc/modules || fail "wireguard module not loaded"
bin=
for f in /usr/local/bin/root-*; do
    [ -x "$f" ] || continue
    [ -z "$bin" ] || fail "more than one root test binary: $bin $f"
    bin=$f
done
[ -n "$bin" ] || fail "no /usr/local/bin/root-<hash> (pass the wgmesh-linux root test binary)"

# The tests run `ip netns add`; busybox's `ip` applet cannot, the real one is here.
export WGMESH_TEST_IP=$IP
export RUST_BACKTRACE=1

echo "root test binary: $bin"
list=$("$bin" --list --include-ignored) || fail "$bin --list failed"
echo "$list"
echo "$list" | grep -q '^kernel_backend_roundtrip: test$' || fail "no kernel_backend_roundtrip in the test list"

rc=0
"$bin" --include-ignored --nocapture --test-threads 1 >/tmp/root-tests.log 2>&1 || rc=$?
cat /tmp/root-tests.log
[ "$rc" -eq 0 ] || fail "root tests failed (exit $rc)"
grep -q 'SKIPPED' /tmp/root-tests.log && fail "a test was skipped: $(grep SKIPPED /tmp/root-tests.log)"
grep -q '^test kernel_backend_roundtrip \.\.\. ok$' /tmp/root-tests.log \
    || fail "kernel_backend_roundtrip did not report ok"
grep -q '^test result: ok\. [0-9]* passed; 0 failed; 0 ignored' /tmp/root-tests.log \
    || fail "not every root test passed: $(grep '^test result' /tmp/root-tests.log)"
# Nothing left behind: every test deletes its namespace.
left=$($IP netns list)
[ -z "$left" ] || fail "namespaces left behind: $left"
echo "VM-PASS: kernel-backend-roundtrip"
