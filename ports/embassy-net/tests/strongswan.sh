#!/usr/bin/env bash
# The embassy-net port against strongSwan 5.9.8 (kernel-libipsec) in network namespaces:
# examples/embassy_tap.rs (embassy std executor, embassy-net on a TAP device through
# embassy-net-tuntap) as the initiator. Needs root.
# Usage: ports/embassy-net/tests/strongswan.sh   (from anywhere)
#
# Topology (built on ports/std/tests/interop/strongswan-netns.sh with LEFT=none):
#
#   [left netns]                                         [right netns]
#   embassy_tap (embassy-net owns 203.0.113.1)            charon (strongSwan)
#     |  TAP smol0                                          r-out 203.0.113.2
#     +--[ br0 ]-- l-out (address flushed) <=== veth ===>   lo 198.51.100.129
#   inner embassy-net stack 198.51.100.1 on the channel TunnelDevice
#
# The kernel of the left namespace only bridges Ethernet frames between the TAP and
# the veth: it holds no address, so it never answers for 203.0.113.1 and never sees
# UDP 500/4500. embassy-net (smoltcp) answers ARP itself (Ethernet medium).
#
# Checks: phase 1 + quick mode with strongSwan (NAT-T: strongSwan fakes NAT-D, so ESP
# is in UDP 4500); embassy-net's PingManager echo through ESP, replies decrypted
# (ping: 3/N); strongSwan's host pings the inner stack through the tunnel (auto echo
# reply); strongSwan's SA counters non-zero.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
SS="$ROOT/ports/std/tests/interop/strongswan-netns.sh"
EX=${EX:-$ROOT/target/debug/examples/embassy_tap}
export STATE=${STATE:-/tmp/ipsec-embassy-interop}
export NS_PREFIX=${NS_PREFIX:-iemb-}
L="${NS_PREFIX}left"
R="${NS_PREFIX}right"
LOG="$STATE-example.log"
pass=0
fail=0

cleanup() {
	[ -n "${PID:-}" ] && kill "$PID" 2>/dev/null
	"$SS" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

check() { # check NAME COMMAND...
	local name=$1
	shift
	if "$@"; then
		echo "PASS $name"
		pass=$((pass + 1))
	else
		echo "FAIL $name"
		fail=$((fail + 1))
	fi
}

if [ -z "${NO_BUILD:-}" ]; then
	(cd "$ROOT" && cargo build -q -p ipsec-embassy-net --example embassy_tap) || exit 1
fi
"$SS" install >/dev/null 2>&1 || true

LEFT=none "$SS" up >/dev/null || { echo "strongswan-netns.sh up failed"; exit 1; }

# Hand 203.0.113.1 to embassy-net: bridge a TAP with the veth and take the kernel's address off.
ip -n "$L" addr flush dev l-out
ip -n "$L" link add br0 type bridge
ip -n "$L" tuntap add dev smol0 mode tap
ip -n "$L" link set l-out master br0
ip -n "$L" link set smol0 master br0
for d in br0 smol0 l-out; do ip -n "$L" link set "$d" up; done

echo "== embassy_tap in $L (initiator) against strongSwan in $R"
ip netns exec "$L" timeout 60 "$EX" --tap smol0 --local 203.0.113.1/24 --peer 203.0.113.2 \
	--psk "$(cat "$STATE/psk")" --local-net 198.51.100.0/25 --remote-net 198.51.100.128/25 \
	--inner 198.51.100.1 --ping 198.51.100.129 --count 3 --timeout 30 --linger 8 >"$LOG" 2>&1 &
PID=$!

"$SS" wait-child right 25 >/dev/null 2>&1
check "strongSwan installed the CHILD_SA" "$SS" wait-child right 1
# The other direction: strongSwan's protected host pings the inner embassy-net stack.
sleep 1
ip netns exec "$R" ping -c 3 -W 2 -I 198.51.100.129 198.51.100.1 >"$STATE-rping.log" 2>&1
check "strongSwan side pings embassy-net through the tunnel (3/3)" grep -q " 0% packet loss" "$STATE-rping.log"
SAS=$("$SS" swanctl right --list-sas 2>/dev/null)
wait "$PID"
rc=$?
PID=
cat "$LOG"
echo "== strongSwan: swanctl --list-sas (while the tunnel was up)"
echo "$SAS"
echo "== right ping"
cat "$STATE-rping.log"
check "embassy_tap exited 0" test "$rc" -eq 0
check "phase 1 established" grep -q "^ike: phase 1 established" "$LOG"
check "tunnel up with ESP in UDP 4500" grep -q "^ike: tunnel up .* encap udp 4500" "$LOG"
check "embassy-net ICMP echo through ESP: 3 replies" grep -qE "^ping: 3/[0-9]+ replies" "$LOG"
check "strongSwan counted ESP both ways" bash -c "grep -qE 'in  +[0-9a-f]+, +[1-9][0-9]* bytes' <<<\"\$0\" && grep -qE 'out +[0-9a-f]+, +[1-9][0-9]* bytes' <<<\"\$0\"" "$SAS"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
