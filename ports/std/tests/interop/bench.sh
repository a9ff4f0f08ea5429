#!/usr/bin/env bash
# Throughput bench (not run in CI): iperf3 TCP between the protected hosts 198.51.100.1
# (left) and 198.51.100.129 (right), in one run, over
#   1. our daemon (left) <-> strongSwan kernel-libipsec (right)
#   2. strongSwan <-> strongSwan (kernel-libipsec both sides), the reference
#   3. our daemon <-> our daemon (raw ESP, no NAT-T: strongSwan is not involved)
# all with aes128-sha1 (phase 1 aes128-sha1-modp2048), on the same namespaces, and
# reports Mbit/s and the ratio ours / strongSwan. Needs root, strongSwan, iperf3
# (installed if missing), and a release build (built if missing):
#
#   sudo ports/std/tests/interop/bench.sh [SECONDS]
#
# Numbers depend on the machine and on whatever else runs on it; compare within a run.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
SECS=${1:-8}
IPSEC=${IPSEC:-$ROOT/target/release/ipsec}
SS="$HERE/strongswan-netns.sh"
export STATE=${STATE:-/tmp/ipsec-rs-bench}
export NS_PREFIX=${NS_PREFIX:-irb-}
export TIMEOUT=20
L="${NS_PREFIX}left"
R="${NS_PREFIX}right"
PIDS=()

cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	"$SS" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || { echo "bench.sh: must run as root"; exit 2; }
command -v iperf3 >/dev/null || {
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends iperf3 >/dev/null ||
		{ echo "bench.sh: cannot install iperf3"; exit 2; }
}
if [[ ! -x "$IPSEC" ]]; then
	(cd "$ROOT" && cargo build --release -p ipsec-std) || exit 2
fi
mkdir -p "$STATE"

# cfg NAME LOCAL PEER LNET RNET SRC: a daemon config (aes128-sha1, group 14).
cfg() {
	cat >"$STATE/$1.toml" <<EOF
hostname = "$1"
[control]
socket = "$STATE/$1.sock"
[interface]
address = "$2"
mtu = 1400
source = "$6"
[[isakmp.policy]]
priority = 10
encryption = "aes"
hash = "sha"
group = 14
authentication = "pre-share"
[[isakmp.key]]
key = "$(cat "$STATE/psk")"
address = "$3"
[[transform_set]]
name = "AES-SHA"
esp = ["esp-aes", "esp-sha-hmac"]
[[crypto_map]]
name = "vpn"
seq = 10
peers = ["$3"]
transform_sets = ["AES-SHA"]
match = { local = "$4", remote = "$5" }
EOF
}

# daemon NS NAME: start our daemon, wait for its control socket.
daemon() {
	timeout 300 ip netns exec "$1" "$IPSEC" up --config "$STATE/$2.toml" >"$STATE/$2.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 1 50); do [[ -S "$STATE/$2.sock" ]] && return 0; sleep 0.1; done
	echo "daemon $2 did not start"; cat "$STATE/$2.log"; return 1
}

# iperf [-R]: Mbit/s received, left -> right (or right -> left with -R).
iperf() {
	ip netns exec "$R" timeout $((SECS + 20)) iperf3 -s -1 -B 198.51.100.129 >/dev/null 2>&1 &
	local srv=$!
	sleep 0.5
	ip netns exec "$L" ping -c 2 -W 2 -I 198.51.100.1 198.51.100.129 >/dev/null 2>&1 # SA up first
	ip netns exec "$L" timeout $((SECS + 15)) iperf3 -c 198.51.100.129 -B 198.51.100.1 -t "$SECS" -J "$@" 2>/dev/null |
		python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f" % (d["end"]["sum_received"]["bits_per_second"]/1e6))' 2>/dev/null ||
		echo 0
	wait $srv 2>/dev/null
}

stop_daemons() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	PIDS=()
}

echo "== 1. ours (left) <-> strongSwan (right), aes128-sha1, ${SECS} s each"
LEFT=none "$SS" up >/dev/null 2>&1 || exit 1
cfg left 203.0.113.1 203.0.113.2 198.51.100.0/25 198.51.100.128/25 198.51.100.1
daemon "$L" left || exit 1
o_fwd=$(iperf)
o_rev=$(iperf -R)
echo "   left->right $o_fwd Mbit/s, right->left $o_rev Mbit/s"
stop_daemons

echo "== 2. strongSwan <-> strongSwan (kernel-libipsec), aes128-sha1"
LEFT=strongswan "$SS" up >/dev/null 2>&1 || exit 1
"$SS" initiate >/dev/null 2>&1 || { echo "strongSwan initiate failed"; exit 1; }
s_fwd=$(iperf)
s_rev=$(iperf -R)
echo "   left->right $s_fwd Mbit/s, right->left $s_rev Mbit/s"

echo "== 3. ours <-> ours (raw ESP: no NAT, no strongSwan), aes128-sha1"
LEFT=none "$SS" up >/dev/null 2>&1 || exit 1
"$SS" kill right >/dev/null 2>&1
cfg left 203.0.113.1 203.0.113.2 198.51.100.0/25 198.51.100.128/25 198.51.100.1
cfg right 203.0.113.2 203.0.113.1 198.51.100.128/25 198.51.100.0/25 198.51.100.129
daemon "$L" left || exit 1
daemon "$R" right || exit 1
b_fwd=$(iperf)
b_rev=$(iperf -R)
echo "   left->right $b_fwd Mbit/s, right->left $b_rev Mbit/s"
stop_daemons

echo
python3 - "$o_fwd" "$o_rev" "$s_fwd" "$s_rev" "$b_fwd" "$b_rev" <<'PY'
import sys
of, orr, sf, sr, bf, br = map(float, sys.argv[1:])
ratio = lambda a, b: "%.2f" % (a / b) if b else "n/a"
print("bench (iperf3 TCP, aes128-sha1, Mbit/s)      left->right  right->left")
print("  ours <-> strongSwan                      %11.0f  %11.0f" % (of, orr))
print("  strongSwan <-> strongSwan (reference)    %11.0f  %11.0f" % (sf, sr))
print("  ours <-> ours (raw ESP)                  %11.0f  %11.0f" % (bf, br))
print("  ratio ours<->strongSwan / reference      %11s  %11s" % (ratio(of, sf), ratio(orr, sr)))
PY
