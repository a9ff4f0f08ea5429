#!/usr/bin/env bash
# Interop suite for the daemon (`ipsec up`, issue 8) against strongSwan 5.9.8
# (kernel-libipsec) in network namespaces. Our daemon runs in the left namespace with a
# config written here; strongSwan responds (or initiates) in the right one (`rebind`
# swaps them: strongSwan initiates from behind the NAT, our daemon responds in right).
#
#   sudo ports/std/tests/interop/daemon.sh [SCENARIO...]     (default: all)
#   sudo MAP=dynamic ports/std/tests/interop/daemon.sh rebind  (dynamic crypto map entry)
#
# Needs root, strongSwan (strongswan-netns.sh install), tshark for `nat` and `rebind`,
# conntrack for `rebind`, python3 for `tcp`. Every wait is bounded; on failure it prints our daemon's log and charon's log;
# the topology is torn down on exit. Scenarios (issue 8, section 4):
#   init_aes128 resp_aes128 init_3des resp_3des init_aes256_pfs resp_aes256_pfs   (a, b)
#   nat (d)  idle (e)  tcp (f)  sigterm (g)  raw_esp (our daemon on both sides)
#   gre (a GRE tunnel with tunnel protection and keepalives; peer endpoint gre-echo.py tun)
#   gre_transport (the same in transport mode, our daemon on both sides).
#   rebind (strongSwan behind the NAT gets a new NAT mapping: our responder follows it
#   on its next DPD R-U-THERE, PeerMoved, same SPIs, ESP to the new port).
#   DPD (c) belongs to the DPD work (issue 5).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
IPSEC=${IPSEC:-$ROOT/target/debug/ipsec}
SS="$HERE/strongswan-netns.sh"
export STATE=${STATE:-/tmp/ipsec-rs-daemon}
export NS_PREFIX=${NS_PREFIX:-ird-}
export TIMEOUT=20
L="${NS_PREFIX}left"
R="${NS_PREFIX}right"
CFG="$STATE/ours.toml"
CTL="$STATE/ours.sock"
LOG="$STATE/ours.log"
OURS_PID=
pass=0
fail=0
failed=()
SCENARIO_T0=0

cleanup() {
	stop_gre_peer >/dev/null 2>&1
	stop_capture >/dev/null 2>&1
	stop_ours >/dev/null 2>&1
	"$SS" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || { echo "daemon.sh: must run as root"; exit 2; }
[[ -x "$IPSEC" ]] || { echo "daemon.sh: $IPSEC missing: cargo build -p ipsec-std"; exit 2; }
mkdir -p "$STATE"

psk() { cat "$STATE/psk"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
ours() { ip netns exec "$L" "$IPSEC" "$@"; }
show() { ours show "$@" --control "$CTL"; }
right_sas() { "$SS" swanctl right --list-sas --raw 2>/dev/null | grep 'list-sa event' || true; }

# write_cfg LOCAL IKE ESP [IDLE] [NAT_KEEPALIVE]: our config for strongSwan proposals.
write_cfg() {
	local local_ip=$1 ike=$2 esp=$3 idle=${4:-} natk=${5:-20}
	local enc hash group esp_enc esp_auth pfs=""
	IFS=- read -r enc hash group <<<"$ike"
	case $enc in aes128) enc=aes ;; aes256) enc=aes-256 ;; 3des) enc=3des ;; esac
	case $hash in sha1) hash=sha ;; esac
	case $group in modp768) group=1 ;; modp1024) group=2 ;; modp1536) group=5 ;; modp2048) group=14 ;; esac
	IFS=- read -r esp_enc esp_auth esp_group <<<"$esp-"
	case $esp_enc in aes128) esp_enc=esp-aes ;; aes256) esp_enc=esp-aes-256 ;; 3des) esp_enc=esp-3des ;; esac
	case $esp_auth in sha1) esp_auth=esp-sha-hmac ;; sha256) esp_auth=esp-sha256-hmac ;; md5) esp_auth=esp-md5-hmac ;; esac
	case ${esp_group:-} in modp1024) pfs='pfs = "group2"' ;; modp2048) pfs='pfs = "group14"' ;; esac
	cat >"$CFG" <<EOF
# written by daemon.sh
hostname = "left"
[control]
socket = "$CTL"
[interface]
name = "l-out"
address = "$local_ip"
tun = "ipsec0"
mtu = 1400
source = "198.51.100.1"
[isakmp]
nat_keepalive = $natk
${DPD:+keepalive = { interval = ${DPD%,*}, retry = ${DPD#*,} \}}
[[isakmp.policy]]
priority = 10
encryption = "$enc"
hash = "$hash"
group = $group
authentication = "pre-share"
[[isakmp.key]]
key = "$(psk)"
address = "203.0.113.2"
[ipsec]
df_bit = "copy"
${idle:+idle_time = $idle}
[[transform_set]]
name = "TS"
esp = ["$esp_enc", "$esp_auth"]
[[crypto_map]]
name = "vpn"
seq = 10
peers = ["203.0.113.2"]
transform_sets = ["TS"]
match = { local = "198.51.100.0/25", remote = "198.51.100.128/25" }
reverse_route = true
$pfs
EOF
}

# start_ours [NS]: runs the daemon (bounded to 120 s) in NS (default: left) and waits
# for its control socket.
start_ours() {
	rm -f "$CTL"
	timeout 120 ip netns exec "${1:-$L}" "$IPSEC" up --config "$CFG" --debug isakmp,ipsec >"$LOG" 2>&1 &
	OURS_PID=$!
	local i
	# Ready once its event loop runs ("up on ..."): the control socket alone appears
	# before the TUN, the routes and GRE interfaces exist.
	for i in $(seq 1 100); do
		[[ -S "$CTL" ]] && grep -q ": up on " "$LOG" && return 0
		kill -0 "$OURS_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "   daemon did not start:"
	tail -5 "$LOG" | sed 's/^/   | /'
	return 1
}

# stop_ours: SIGTERM (timeout forwards it), wait up to 5 s, return the exit status.
stop_ours() {
	[[ -n "$OURS_PID" ]] || return 0
	local pid=$OURS_PID rc
	OURS_PID=
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		echo "   daemon ignored SIGTERM"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid"
	rc=$?
	return $rc
}

expect() { # expect TEXT PATTERN...: each extended regexp must match
	local text=$1
	shift
	for p in "$@"; do
		grep -Eq -- "$p" <<<"$text" || { echo "   missing: $p"; return 1; }
	done
}

# no_leftovers: no route into ipsec0, no ipsec0 link in the left namespace.
no_leftovers() {
	local r l
	r=$(ip -n "$L" route show | grep ipsec0 || true)
	l=$(ip -n "$L" link show ipsec0 2>/dev/null || true)
	[[ -z "$r" && -z "$l" ]] || { echo "   left behind: ${r:-} ${l:-}"; return 1; }
	echo "   after SIGTERM: exit 0, no route into ipsec0, no ipsec0"
}

# ping_left N: bounded ping from our protected host to strongSwan's.
ping_left() { ip netns exec "$L" ping -c "${1:-3}" -W 2 -I 198.51.100.1 198.51.100.129; }

# check_route: the route to the remote network points into our TUN with our source.
check_route() {
	local r
	r=$(ip -n "$L" route show 198.51.100.128/25)
	echo "   route: $(head -1 <<<"$r")"
	expect "$r" "dev ipsec0 .*src 198\.51\.100\.1"
}

# stop_and_check: SIGTERM, exit 0, DELETE seen by charon, nothing left behind.
stop_and_check() {
	stop_ours || { echo "   daemon exit status $?"; return 1; }
	no_leftovers || return 1
	sleep 0.3
	grep -q "received DELETE for ESP CHILD_SA" "$STATE/right/charon.log" ||
		{ echo "   charon saw no DELETE"; return 1; }
	echo "   charon: $(grep -m1 -o 'received DELETE for ESP CHILD_SA with SPI [0-9a-f]*' "$STATE/right/charon.log")"
}

# ---------------------------------------------------------------- scenarios --

# (a)/(b): we initiate, triggered by a ping into our TUN.
initiate() { # initiate IKE ESP
	local ike=$1 esp=$2 out sas
	IKE_PROPOSALS=$ike ESP_PROPOSALS=$esp LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	write_cfg 203.0.113.1 "$ike" "$esp"
	start_ours || return 1
	check_route || return 1
	out=$(ping_left 3)
	echo "   $(grep 'packets transmitted' <<<"$out")"
	expect "$out" " 3 received" || return 1
	sas=$(right_sas)
	echo "   strongSwan: $(grep -o 'state=INSTALLED mode=TUNNEL protocol=ESP encap=yes' <<<"$sas") $(grep -o 'packets-in=[0-9]*' <<<"$sas")"
	expect "$sas" "state=INSTALLED mode=TUNNEL protocol=ESP encap=yes" || return 1
	check_show || return 1
	stop_and_check
}

# (a)/(b): strongSwan initiates, its host pings ours.
respond() { # respond IKE ESP
	local ike=$1 esp=$2 out
	IKE_PROPOSALS=$ike ESP_PROPOSALS=$esp LEFT=none RIGHT_REMOTE_ADDRS=203.0.113.1 \
		RIGHT_REMOTE_ID=203.0.113.1 "$SS" up >/dev/null 2>&1 || return 1
	write_cfg 203.0.113.1 "$ike" "$esp"
	start_ours || return 1
	"$SS" swanctl right --initiate --child net --timeout 20 >"$STATE/initiate.out" 2>&1 ||
		{ tail -5 "$STATE/initiate.out"; return 1; }
	echo "   $(grep -m1 -o 'CHILD_SA .* established.*' "$STATE/initiate.out" | cut -c1-90)"
	out=$(ip netns exec "$R" ping -c 3 -W 2 -I 198.51.100.129 198.51.100.1)
	echo "   $(grep 'packets transmitted' <<<"$out")"
	expect "$out" " 3 received" || return 1
	expect "$(show isakmp-sa)" "Responder" "QM_IDLE" || return 1
	expect "$(show ipsec-sa)" "#pkts decaps: [3-9]," "#pkts encaps: [3-9]," || return 1
	stop_and_check
}

# `ipsec show ...` while the tunnel is up (text and JSON).
check_show() {
	local t
	t=$(show isakmp-sa)
	expect "$t" "203\.0\.113\.2 +203\.0\.113\.1 +QM_IDLE +1 ACTIVE" "psk +[0-9]+ +[0-9]+:[0-9]{2}:[0-9]{2} +D N" || { echo "$t"; return 1; }
	t=$(show ipsec-sa)
	expect "$t" "Crypto map tag: vpn, local addr 203\.0\.113\.1" "current_peer 203\.0\.113\.2 port 4500" \
		"#pkts encaps: [3-9]," "#pkts decaps: [3-9]," "#pkts verify failed: 0" "Tunnel UDP-Encaps" "Status: ACTIVE" || { echo "$t"; return 1; }
	t=$(show interfaces)
	expect "$t" "ipsec0 is up" "198\.51\.100\.128/25 dev ipsec0 src 198\.51\.100\.1 metric 10 \(reverse-route" \
		"metric 1024 \(acquire" || { echo "$t"; return 1; }
	t=$(show ha)
	expect "$t" "redundancy: not configured" || return 1
	show ipsec-sa --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sa = d["sas"][0]
assert sa["pkts_decaps"] >= 3 and sa["pkts_encaps"] >= 3 and sa["udp_encap"]["remote_port"] == 4500, sa
print("   show --json: in %s out %s spi in %s out %s" % (sa["pkts_decaps"], sa["pkts_encaps"], sa["inbound_spi"], sa["outbound_spi"]))
' || return 1
	echo "   show isakmp-sa / ipsec-sa / interfaces / ha: OK"
}

init_aes128() { initiate aes128-sha1-modp2048 aes128-sha1; }
resp_aes128() { respond aes128-sha1-modp2048 aes128-sha1; }
init_3des() { initiate 3des-sha1-modp1024 3des-sha1; }
resp_3des() { respond 3des-sha1-modp1024 3des-sha1; }
init_aes256_pfs() { initiate aes256-sha256-modp2048 aes256-sha256-modp2048; }
resp_aes256_pfs() { respond aes256-sha256-modp2048 aes256-sha256-modp2048; }

# (d) our side behind a masquerading NAT; tshark on the right sees ESP in UDP 4500 from
# the NAT's address, and our NAT keepalives.
nat() {
	command -v tshark >/dev/null || { echo "   tshark missing: apt-get install -y -qq --no-install-recommends tshark"; return 1; }
	NAT=1 LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	write_cfg 192.0.2.2 aes128-sha1-modp2048 aes128-sha1 "" 5
	start_ours || return 1
	"$SS" capture right r-out 11 >"$STATE/pcapname" &
	local cap=$! out d
	sleep 1.5
	out=$(ping_left 3)
	echo "   $(grep 'packets transmitted' <<<"$out")"
	wait $cap
	d=$("$SS" dissect "$(cat "$STATE/pcapname")")
	{ grep -E " ESP " <<<"$d" | head -2; grep -m1 "NAT-keepalive" <<<"$d"; } | sed 's/^/   /'
	expect "$out" " 3 received" || return 1
	expect "$d" "203\.0\.113\.1:4500 +-> +203\.0\.113\.2:4500 +ESP" "203\.0\.113\.1:4500 +-> +203\.0\.113\.2:4500 .*NAT-keepalive" || { echo "$d"; return 1; }
	expect "$(show isakmp-sa)" "NAT: local behind NAT yes" || return 1
	grep -q "local host is behind NAT" "$STATE/right/charon.log" || grep -q "remote host is behind NAT" "$STATE/right/charon.log" ||
		{ echo "   charon did not detect the NAT"; return 1; }
	stop_ours || return 1
}

# (e) idle_time = 5: after 5-7 s without traffic we DELETE and strongSwan drops its SA.
idle() {
	LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	write_cfg 203.0.113.1 aes128-sha1-modp2048 aes128-sha1 5
	start_ours || return 1
	local out t0 t i
	out=$(ping_left 3)
	expect "$out" " 3 received" || return 1
	t0=$(now)
	for i in $(seq 1 100); do
		grep -q "received DELETE for ESP CHILD_SA" "$STATE/right/charon.log" && break
		sleep 0.1
	done
	t=$(since "$t0")
	grep "idle for" "$LOG" | sed 's/^.*IPSEC/   IPSEC/'
	echo "   charon got the DELETE ${t} s after the last ping reply: $(grep -m1 -o 'received DELETE for ESP CHILD_SA with SPI [0-9a-f]*' "$STATE/right/charon.log")"
	awk -v t="$t" 'BEGIN{exit !(t >= 4.5 && t <= 7.5)}' || { echo "   expected 5-7 s"; return 1; }
	sleep 0.3
	local sas; sas=$(right_sas)
	grep -q "child-sas {}" <<<"$sas" || ! grep -q "state=INSTALLED" <<<"$sas" ||
		{ echo "   strongSwan still has the CHILD_SA: $sas"; return 1; }
	echo "   strongSwan's CHILD_SA is gone"
	# Traffic brings it back (a new Quick Mode on the kept IKE SA).
	out=$(ping_left 3)
	echo "   after idle: $(grep 'packets transmitted' <<<"$out")"
	expect "$out" " [23] received" || return 1
	stop_ours || return 1
}

# (c) DPD: strongSwan killed -> our daemon declares it dead within the bound
# (interval + retries x retry + traffic gaps) and its RRI route disappears.
dpd() {
	LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	DPD=10,2 write_cfg 203.0.113.1 aes128-sha1-modp2048 aes128-sha1
	start_ours || return 1
	local out t0 t i rri
	out=$(ping_left 3)
	expect "$out" " [23] received" || return 1
	rri=$(ip -n "$L" route show 198.51.100.128/25 | grep "metric 10 " || true)
	echo "   RRI route while up: ${rri:-none}"
	[[ -n "$rri" ]] || return 1
	"$SS" kill right >/dev/null 2>&1
	t0=$(now)
	# On-demand DPD needs traffic to send: keep pinging (bounded).
	ip netns exec "$L" ping -c 60 -i 0.5 -W 1 -I 198.51.100.1 198.51.100.129 >/dev/null 2>&1 &
	local pinger=$!
	for i in $(seq 1 320); do
		grep -q "DPD: peer 203.0.113.2 is dead" "$LOG" && break
		sleep 0.1
	done
	t=$(since "$t0")
	kill "$pinger" 2>/dev/null; wait "$pinger" 2>/dev/null
	grep -m1 "is dead" "$LOG" | sed 's/^.*ISAKMP/   ISAKMP/'
	echo "   declared dead ${t} s after strongSwan was killed (bound: 10 s idle + 5 x 2 s retries + 1 s)"
	awk -v t="$t" 'BEGIN{exit !(t >= 18 && t <= 22)}' || { echo "   outside the bound"; return 1; }
	sleep 0.3
	rri=$(ip -n "$L" route show 198.51.100.128/25 | grep "metric 10 " || true)
	echo "   RRI route after: ${rri:-gone}"
	[[ -z "$rri" ]] || return 1
	stop_ours || return 1
}

# (f) 1 MB over TCP through the tunnel arrives intact (SHA-256 compared).
tcp() {
	LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	write_cfg 203.0.113.1 aes128-sha1-modp2048 aes128-sha1
	start_ours || return 1
	head -c 1048576 /dev/urandom >"$STATE/tcp.in"
	ping_left 1 >/dev/null # bring the SA up first (strongSwan's install race)
	timeout 40 ip netns exec "$R" python3 - "$STATE/tcp.out" <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.129", 5001)); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30)
with open(sys.argv[1], "wb") as f:
    while True:
        b = c.recv(65536)
        if not b: break
        f.write(b)
PY
	local srv=$! t0
	sleep 0.5
	t0=$(now)
	timeout 40 ip netns exec "$L" python3 - "$STATE/tcp.in" <<'PY' || { echo "   client failed"; return 1; }
import socket, sys
s = socket.create_connection(("198.51.100.129", 5001), timeout=30, source_address=("198.51.100.1", 0))
s.sendall(open(sys.argv[1], "rb").read()); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
PY
	wait $srv || { echo "   server failed"; return 1; }
	local a b
	a=$(sha256sum <"$STATE/tcp.in" | cut -c1-64)
	b=$(sha256sum <"$STATE/tcp.out" | cut -c1-64)
	echo "   1 MiB in $(since "$t0") s, sha256 sent $a, received $b ($(stat -c %s "$STATE/tcp.out") bytes)"
	[[ "$a" == "$b" ]] || return 1
	expect "$(show ipsec-sa)" "#pkts verify failed: 0" "#pkts replay failed \(rcv\): 0" || return 1
	stop_ours || return 1
}

# (g) SIGTERM while IKE is still negotiating (the peer does not answer).
sigterm() {
	LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	"$SS" kill right >/dev/null 2>&1
	write_cfg 203.0.113.1 aes128-sha1-modp2048 aes128-sha1
	start_ours || return 1
	ping_left 1 >/dev/null 2>&1
	local t
	t=$(show isakmp-sa)
	echo "   $(grep -E 'MM_NO_STATE|NEGOTIATING' <<<"$t" | head -1)"
	expect "$t" "MM_NO_STATE" || return 1
	stop_ours || { echo "   daemon exit status $?"; return 1; }
	no_leftovers
}

# Our daemon on both sides (charon stopped): no NAT-D faking, so raw ESP (protocol 50)
# through the raw sockets instead of ESP-in-UDP.
raw_esp() {
	LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	"$SS" kill right >/dev/null 2>&1
	write_cfg 203.0.113.1 aes128-sha1-modp2048 aes128-sha1
	sed -e 's/hostname = "left"/hostname = "right"/' -e "s|$CTL|$STATE/right.sock|" \
		-e 's/address = "203.0.113.1"/address = "203.0.113.2"/' -e 's/source = "198.51.100.1"/source = "198.51.100.129"/' \
		-e '/\[\[isakmp.key\]\]/,/^address/s/address = "203.0.113.2"/address = "203.0.113.1"/' \
		-e 's/peers = \["203.0.113.2"\]/peers = ["203.0.113.1"]/' \
		-e 's|local = "198.51.100.0/25", remote = "198.51.100.128/25"|local = "198.51.100.128/25", remote = "198.51.100.0/25"|' \
		"$CFG" >"$STATE/right.toml"
	rm -f "$STATE/right.sock"
	timeout 60 ip netns exec "$R" "$IPSEC" up --config "$STATE/right.toml" >"$STATE/right.log" 2>&1 &
	local rpid=$! out t
	for _ in $(seq 1 100); do [[ -S "$STATE/right.sock" ]] && grep -q ": up on " "$STATE/right.log" && break; sleep 0.1; done
	start_ours || return 1
	out=$(ping_left 3)
	echo "   $(grep 'packets transmitted' <<<"$out")"
	t=$(show ipsec-sa)
	kill -TERM $rpid; wait $rpid
	expect "$out" " 3 received" || { cat "$STATE/right.log"; return 1; }
	expect "$t" "in use settings =\{Tunnel, \}" "#pkts decaps: [3-9]," || { echo "$t"; return 1; }
	echo "   in use settings ={Tunnel, } (raw ESP, protocol 50) both ways"
	stop_ours || return 1
	no_leftovers
}

# gre: a GRE tunnel protected by IPsec, like IOS `interface Tunnel0 / tunnel source /
# tunnel destination / tunnel protection ipsec profile P / keepalive 2 3`. strongSwan's
# CHILD_SA is tunnel mode (libipsec has no transport mode) restricted to GRE between the
# two IKE endpoints (PEER_TS=1 lets charon route that into its ipsec0); the kernel has no
# GRE, so gre-echo.py terminates the tunnel onto a TUN gre1 (172.16.68.2/30) in the
# right namespace. Shows: the SA comes up at start, a ping over the tunnel, keepalives
# answered (the right kernel forwards them back), `show interfaces`, and line protocol
# going down within (retries + 1) x period once the peer's GRE endpoint is stopped.
GRE_PID=
write_gre_cfg() {
	cat >"$CFG" <<EOF
# written by daemon.sh (gre)
hostname = "left"
[control]
socket = "$CTL"
[interface]
name = "l-out"
address = "203.0.113.1"
tun = "ipsec0"
mtu = 1400
[isakmp]
nat_keepalive = 20
[[isakmp.policy]]
priority = 10
encryption = "aes"
hash = "sha"
group = 14
authentication = "pre-share"
[[isakmp.key]]
key = "$(psk)"
address = "203.0.113.2"
[[transform_set]]
name = "TS"
esp = ["esp-aes", "esp-sha-hmac"]
mode = "tunnel"
[[ipsec_profile]]
name = "GRE-PROT"
transform_sets = ["TS"]
[[tunnel]]
name = "Tunnel0"
address = "172.16.68.1/30"
source = "203.0.113.1"
destination = "203.0.113.2"
protection = "GRE-PROT"
keepalive = { period = 2, retries = 3 }
mtu = 1400
EOF
}

stop_gre_peer() {
	[[ -n "$GRE_PID" ]] || return 0
	kill -TERM "$GRE_PID" 2>/dev/null
	wait "$GRE_PID" 2>/dev/null
	GRE_PID=
}

gre() {
	TS_PROTO=gre RIGHT_LOCAL_TS=203.0.113.2/32 RIGHT_REMOTE_TS=203.0.113.1/32 PEER_TS=1 LEFT=none \
		"$SS" up >/dev/null 2>&1 || return 1
	# The keepalive's inner packet (203.0.113.2 -> 203.0.113.1) arrives on gre1 with a
	# local source address: forwarding, and accepting a local source, are needed.
	ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.accept_local=1 || return 1
	timeout 90 ip netns exec "$R" python3 "$HERE/gre-echo.py" tun --local 203.0.113.2 --peer 203.0.113.1 \
		--dev gre1 --address 172.16.68.2/30 --seconds 80 >"$STATE/gre-peer.log" 2>&1 &
	GRE_PID=$!
	local i out t t0 sas txt down
	for i in $(seq 1 30); do ip -n "$R" link show gre1 >/dev/null 2>&1 && break; sleep 0.1; done
	ip -n "$R" link show gre1 >/dev/null 2>&1 || { echo "   gre-echo.py tun did not start"; cat "$STATE/gre-peer.log"; return 1; }
	write_gre_cfg
	start_ours || return 1
	# Tunnel protection comes up at start, without traffic.
	"$SS" wait-child right 15 >/dev/null 2>&1 || { echo "   no CHILD_SA at strongSwan within 15 s"; return 1; }
	sas=$(right_sas)
	echo "   strongSwan: $(grep -o 'state=INSTALLED mode=TUNNEL protocol=ESP encap=yes' <<<"$sas") $(grep -Eo 'local-ts=\[[^ }]* remote-ts=\[[^ }]*' <<<"$sas")"
	expect "$sas" "state=INSTALLED mode=TUNNEL protocol=ESP encap=yes" "local-ts=\[203\.0\.113\.2/32\[gre\]\] remote-ts=\[203\.0\.113\.1/32\[gre\]\]" || { echo "$sas"; return 1; }
	echo "   route: $(ip -n "$L" route show 172.16.68.0/30)"
	out=$(ip netns exec "$L" ping -c 3 -W 2 -I 172.16.68.1 172.16.68.2)
	echo "   $(grep 'packets transmitted' <<<"$out")"
	expect "$out" " 3 received" || return 1
	# A keepalive every 2 s: wait (bounded) until one has come back.
	for i in $(seq 1 50); do
		txt=$(show interfaces)
		grep -Eq "keepalives sent, [1-9][0-9]* returned" <<<"$txt" && break
		sleep 0.1
	done
	grep -A12 "^Tunnel0" <<<"$txt" | sed 's/^/   | /'
	expect "$txt" "Tunnel0 is up, line protocol is up \(TUN tunnel0\)" "Internet address is 172\.16\.68\.1/30" \
		"Tunnel source 203\.0\.113\.1, destination 203\.0\.113\.2" "Keepalive set \(2 sec\), retries 3" \
		" [3-9] packets input" " [3-9] packets output" "keepalives sent, [1-9][0-9]* returned" || return 1
	expect "$(show ipsec-sa)" "interface: Tunnel0" "Crypto map tag: Tunnel0-head-0" "\(203\.0\.113\.1/255\.255\.255\.255/47/0\)" || { show ipsec-sa; return 1; }
	show interfaces --json | python3 -c '
import json, sys
t = json.load(sys.stdin)["tunnels"][0]
c = t["counters"]
assert t["line_protocol_up"] and c["packets_in"] >= 3 and c["packets_out"] >= 3 and c["keepalives_returned"] >= 1, t
print("   show interfaces --json: line_protocol_up %s, packets in %d out %d, keepalives sent %d returned %d" % (
    t["line_protocol_up"], c["packets_in"], c["packets_out"], c["keepalives_sent"], c["keepalives_returned"]))
' || return 1
	# The peer's GRE endpoint goes away: keepalives stop coming back.
	stop_gre_peer
	t0=$(now)
	sed 's/^/   peer: /' "$STATE/gre-peer.log"
	grep -Eq "\(([1-9][0-9]*) keepalives of the peer\)" "$STATE/gre-peer.log" || { echo "   the peer forwarded no keepalive"; return 1; }
	for i in $(seq 1 120); do
		grep -q "Line protocol on Interface Tunnel0, changed state to down" "$LOG" && break
		sleep 0.1
	done
	t=$(since "$t0")
	down=$(grep -m1 "changed state to down" "$LOG" | sed 's/^.*%LINEPROTO/%LINEPROTO/')
	echo "   ${down:-no line protocol change} ${t} s after the peer's endpoint stopped (bound: (3 + 1) x 2 s + 1 s)"
	[[ -n "$down" ]] || return 1
	awk -v t="$t" 'BEGIN{exit !(t >= 5.5 && t <= 9.0)}' || { echo "   outside the bound"; return 1; }
	txt=$(show interfaces)
	expect "$txt" "Tunnel0 is up, line protocol is down" "1 line protocol transitions" || { echo "$txt"; return 1; }
	out=$(ip -n "$L" route show 172.16.68.0/30)
	echo "   route: $out; link: $(ip -n "$L" -brief link show tunnel0)"
	expect "$out" "linkdown" || return 1
	out=$(ip netns exec "$L" ping -c 1 -W 1 172.16.68.2 2>&1)
	echo "   ping while down: $(grep -Eo 'Network is unreachable|[0-9]+ received' <<<"$out" | head -1); $(show interfaces | grep -Eo '[0-9]+ output drops \([0-9]+ while line protocol down\)')"
	expect "$out" "Network is unreachable" || return 1
	# The peer's endpoint comes back: the next keepalive returns, line protocol is up.
	timeout 30 ip netns exec "$R" python3 "$HERE/gre-echo.py" tun --local 203.0.113.2 --peer 203.0.113.1 \
		--dev gre1 --address 172.16.68.2/30 --seconds 20 >"$STATE/gre-peer.log" 2>&1 &
	GRE_PID=$!
	t0=$(now)
	for i in $(seq 1 60); do
		grep -q "Line protocol on Interface Tunnel0, changed state to up" "$LOG" && break
		sleep 0.1
	done
	t=$(since "$t0")
	grep -q "changed state to up" "$LOG" || { echo "   line protocol stayed down"; return 1; }
	echo "   line protocol up again ${t} s after the peer's endpoint restarted (next keepalive: <= 2 s)"
	out=$(ip netns exec "$L" ping -c 3 -W 2 172.16.68.2)
	echo "   $(grep 'packets transmitted' <<<"$out"); route: $(ip -n "$L" route show 172.16.68.0/30)"
	expect "$out" " 3 received" || return 1
	expect "$(show interfaces)" "line protocol is up" "2 line protocol transitions" || return 1
	stop_gre_peer
	stop_ours || { echo "   daemon exit status $?"; return 1; }
	[[ -z "$(ip -n "$L" link show tunnel0 2>/dev/null)" ]] || { echo "   tunnel0 left behind"; return 1; }
	echo "   after SIGTERM: exit 0, tunnel0 gone"
}

# gre_transport: GRE tunnel protection in transport mode, our daemon on both sides
# (strongSwan's libipsec has no transport mode; charon is stopped as in raw_esp). Both
# sides bring the protection up at start; a ping crosses the tunnel, keepalives come
# back both ways, `show ipsec-sa` says Transport, and when the right daemon stops the
# left's line protocol goes down within (retries + 1) x period.
gre_transport() {
	LEFT=none "$SS" up >/dev/null 2>&1 || return 1
	"$SS" kill right >/dev/null 2>&1
	write_gre_cfg
	sed -i -e 's/^mode = "tunnel"/mode = "transport"/' "$CFG"
	sed -e 's/hostname = "left"/hostname = "right"/' -e "s|$CTL|$STATE/right.sock|" \
		-e 's/address = "203.0.113.1"/address = "203.0.113.2"/' \
		-e '/\[\[isakmp.key\]\]/,/^address/s/address = "203.0.113.2"/address = "203.0.113.1"/' \
		-e 's|address = "172.16.68.1/30"|address = "172.16.68.2/30"|' \
		-e 's/source = "203.0.113.1"/source = "203.0.113.2"/' -e 's/destination = "203.0.113.2"/destination = "203.0.113.1"/' \
		"$CFG" >"$STATE/right.toml"
	rm -f "$STATE/right.sock"
	timeout 60 ip netns exec "$R" "$IPSEC" up --config "$STATE/right.toml" --debug isakmp,ipsec >"$STATE/right.log" 2>&1 &
	local rpid=$! out t t0 i txt
	for _ in $(seq 1 100); do [[ -S "$STATE/right.sock" ]] && grep -q ": up on " "$STATE/right.log" && break; sleep 0.1; done
	start_ours || { kill -TERM $rpid; wait $rpid; return 1; }
	for i in $(seq 1 50); do
		show ipsec-sa | grep -q "Status: ACTIVE" && break
		sleep 0.1
	done
	out=$(ip netns exec "$L" ping -c 3 -W 2 -I 172.16.68.1 172.16.68.2)
	echo "   $(grep 'packets transmitted' <<<"$out")"
	for i in $(seq 1 50); do
		txt=$(show interfaces)
		grep -Eq "keepalives sent, [1-9][0-9]* returned, [1-9][0-9]* forwarded" <<<"$txt" && break
		sleep 0.1
	done
	t=$(show ipsec-sa)
	grep -E "interface:|ident \(|in use settings" <<<"$t" | sort -u | sed 's/^ */   /'
	grep -E "Tunnel0 is|keepalives sent" <<<"$txt" | sed 's/^ */   /'
	expect "$out" " 3 received" || { tail -20 "$STATE/right.log"; kill -TERM $rpid; wait $rpid; return 1; }
	expect "$t" "in use settings =\{Transport, \}" "\(203\.0\.113\.1/255\.255\.255\.255/47/0\)" || { echo "$t"; kill -TERM $rpid; wait $rpid; return 1; }
	expect "$txt" "line protocol is up" "keepalives sent, [1-9][0-9]* returned, [1-9][0-9]* forwarded" || { kill -TERM $rpid; wait $rpid; return 1; }
	kill -TERM $rpid; wait $rpid
	t0=$(now)
	for i in $(seq 1 120); do
		grep -q "Line protocol on Interface Tunnel0, changed state to down" "$LOG" && break
		sleep 0.1
	done
	t=$(since "$t0")
	echo "   line protocol down ${t} s after the right daemon stopped (bound: (3 + 1) x 2 s + 1 s)"
	grep -q "changed state to down" "$LOG" || return 1
	awk -v t="$t" 'BEGIN{exit !(t >= 5.5 && t <= 9.0)}' || { echo "   outside the bound"; return 1; }
	stop_ours || return 1
	no_leftovers
}

# rebind: strongSwan initiates from behind the NAT (NAT_PORTS=remap) to our daemon, the
# responder in the right namespace (RIGHT=none). The NAT then forgets its mappings (its
# UDP conntrack entries are flushed and its port pool moved to 41000-41999, like a NAT
# box that reboots): strongSwan's next authenticated IKE message, a DPD R-U-THERE,
# arrives from a new port, and our daemon follows the peer (PeerMoved) without a new
# Quick Mode. Shows: a ping before, our ESP to the old port going nowhere right after the
# flush, the PeerMoved line, `ipsec show` with the new port, a ping after with the same
# SPIs on both sides, tshark's view of our ESP leaving for the old, then the new port;
# last, a Quick Mode strongSwan starts on the moved IKE SA gives a pair at the new port.
# MAP=dynamic: our side answers with a dynamic crypto map entry (and a wildcard key)
# instead of a static entry whose peer is the NAT's public address.
write_rebind_cfg() {
	local entry='peers = ["203.0.113.1"]
match = { local = "198.51.100.128/25", remote = "198.51.100.0/25" }' key=203.0.113.1
	[[ ${MAP:-static} == dynamic ]] && entry="dynamic = true" && key=0.0.0.0
	cat >"$CFG" <<EOF
# written by daemon.sh (rebind): our responder in the right namespace
hostname = "right"
[control]
socket = "$CTL"
[interface]
name = "r-out"
address = "203.0.113.2"
tun = "ipsec0"
mtu = 1400
source = "198.51.100.129"
[isakmp]
nat_keepalive = 20
[[isakmp.policy]]
priority = 10
encryption = "aes"
hash = "sha"
group = 14
authentication = "pre-share"
[[isakmp.key]]
key = "$(psk)"
address = "$key"
[[transform_set]]
name = "TS"
esp = ["esp-aes", "esp-sha-hmac"]
[[crypto_map]]
name = "vpn"
seq = 10
transform_sets = ["TS"]
$entry
reverse_route = true
EOF
}

# ping_right N [WAIT]: bounded ping from the right protected host to the left one.
ping_right() { ip netns exec "$R" ping -c "${1:-3}" -W "${2:-2}" -I 198.51.100.129 198.51.100.1; }

# sa_spis: "in SPI out SPI port PORT" of our first SA pair (show ipsec-sa --json).
sa_spis() {
	show ipsec-sa --json | python3 -c '
import json, sys
sa = json.load(sys.stdin)["sas"][0]
print("in %s out %s port %s" % (sa["inbound_spi"], sa["outbound_spi"], (sa["udp_encap"] or {}).get("remote_port")))'
}

# left_spis: strongSwan's CHILD_SA(s) as "spi-in=.. spi-out=.." (swanctl --list-sas --raw).
left_spis() { "$SS" swanctl left --list-sas --raw 2>/dev/null | grep -Eo 'spi-in=[0-9a-f]+ spi-out=[0-9a-f]+' | tr '\n' ' '; }

CAP_PID=
stop_capture() {
	[[ -n "$CAP_PID" ]] || return 0
	kill -TERM "$CAP_PID" 2>/dev/null
	wait "$CAP_PID" 2>/dev/null
	CAP_PID=
}

rebind() {
	command -v tshark >/dev/null || { echo "   tshark missing: apt-get install -y -qq --no-install-recommends tshark"; return 1; }
	command -v conntrack >/dev/null || { echo "   conntrack missing: apt-get install -y -qq --no-install-recommends conntrack"; return 1; }
	local N="${NS_PREFIX}nat" out t t0 i p1 p2 before after lbefore lafter d qm pcap="$STATE/rebind.pcap"
	NAT=1 NAT_PORTS=remap RIGHT=none DPD_DELAY=7s "$SS" up >/dev/null 2>&1 || return 1
	write_rebind_cfg
	start_ours "$R" || return 1
	"$SS" initiate >"$STATE/initiate.out" 2>&1 || { tail -5 "$STATE/initiate.out"; return 1; }
	echo "   strongSwan: $(grep -m1 -o 'CHILD_SA .* established.*' "$STATE/initiate.out" | cut -c1-90)"
	out=$(ping_right 3)
	echo "   before: $(grep 'packets transmitted' <<<"$out")"
	expect "$out" " 3 received" || return 1
	t=$(show isakmp-sa)
	p1=$(grep -Eo '203\.0\.113\.1:[0-9]+' <<<"$t" | head -1)
	p1=${p1#*:}
	before=$(sa_spis)
	lbefore=$(left_spis)
	echo "   ours: IKE peer 203.0.113.1:$p1, SA $before; strongSwan: $lbefore"
	expect "$t" "Responder" "QM_IDLE" "peer behind NAT yes" || { echo "$t"; return 1; }
	[[ "$before" == *" port $p1" ]] || { echo "   SA not at the IKE peer's port $p1"; return 1; }
	# Capture on right's outside link (bounded), from before the change to the end.
	rm -f "$pcap"
	timeout 40 ip netns exec "$R" tshark -q -i r-out -f "udp port 4500 or udp port 500 or icmp" \
		-a duration:35 -c 500 -w "$pcap" 2>/dev/null &
	CAP_PID=$!
	sleep 1.5
	out=$(ping_right 2)
	expect "$out" " 2 received" || return 1
	# The NAT forgets every UDP mapping and takes new ports from another range.
	ip netns exec "$N" nft flush chain ip nat postrouting || return 1
	ip netns exec "$N" nft add rule ip nat postrouting oifname n-out meta l4proto udp masquerade to :41000-41999 random || return 1
	ip netns exec "$N" nft add rule ip nat postrouting oifname n-out masquerade || return 1
	ip netns exec "$N" conntrack -D -p udp >"$STATE/conntrack.out" 2>&1
	echo "   nat: $(grep -m1 -Eo 'src=192\.0\.2\.2 .*sport=4500 dport=40[0-9]+' "$STATE/conntrack.out") deleted ($(grep -Eo '[0-9]+ flow entries' "$STATE/conntrack.out"))"
	# Until strongSwan says something, our ESP still goes to the old mapping: lost.
	t0=$(now)
	out=$(ping_right 1 1)
	echo "   right after the change: $(grep 'packets transmitted' <<<"$out")"
	expect "$out" " 0 received" || return 1
	# strongSwan's DPD (7 s after it last heard from us, so well after the ping above)
	# comes through a new mapping.
	for i in $(seq 1 150); do
		grep -q "peer's NAT mapping changed" "$LOG" && break
		sleep 0.1
	done
	t=$(grep -m1 "peer's NAT mapping changed" "$LOG" | sed 's/^.*ISAKMP/ISAKMP/')
	echo "   ${t:-no PeerMoved} ($(since "$t0") s after the change)"
	[[ -n "$t" ]] || return 1
	echo "   strongSwan: $(grep -c 'sending DPD request' "$STATE/left/charon.log") DPD request(s) sent"
	echo "   nat: $(ip netns exec "$N" conntrack -L -p udp 2>/dev/null | grep -Eo 'src=192\.0\.2\.2 .*dport=41[0-9]+' | head -1)"
	t=$(show isakmp-sa)
	p2=$(grep -Eo '203\.0\.113\.1:[0-9]+' <<<"$t" | head -1)
	p2=${p2#*:}
	expect "$t" "QM_IDLE" || { echo "$t"; return 1; }
	[[ -n "$p2" && "$p2" != "$p1" ]] || { echo "   IKE peer still at port ${p2:-?}"; return 1; }
	out=$(ping_right 3)
	echo "   after: $(grep 'packets transmitted' <<<"$out")"
	after=$(sa_spis)
	lafter=$(left_spis)
	echo "   ours: IKE peer 203.0.113.1:$p2, SA $after; strongSwan: $lafter"
	expect "$out" " 3 received" || return 1
	t=$(show ipsec-sa)
	echo "   show isakmp-sa: $(grep -E '^[0-9]+ +203\.0\.113\.2:' <<<"$(show isakmp-sa)" | tr -s ' ' | cut -d' ' -f1-5)"
	echo "   show ipsec-sa: $(grep -m1 -o 'current_peer .*' <<<"$t")"
	expect "$t" "current_peer 203\.0\.113\.1 port $p2" || { echo "$t"; return 1; }
	[[ "$after" == "${before% port *} port $p2" ]] || { echo "   our SPIs changed"; return 1; }
	[[ -n "$lbefore" && "$lafter" == "$lbefore" ]] || { echo "   strongSwan's SPIs changed"; return 1; }
	qm=$(grep -c "CHILD_SA net{[0-9]*} established" "$STATE/left/charon.log")
	echo "   strongSwan established $qm CHILD_SA in all (no new Quick Mode)"
	[[ $qm == 1 ]] || return 1
	sleep 0.5
	stop_capture
	d=$("$SS" dissect "$pcap")
	local spi
	spi=$(sed -E 's/.* out 0x([0-9A-Fa-f]+) .*/\1/' <<<"$before" | tr 'A-F' 'a-f')
	echo "   tshark on r-out (our outbound SPI is 0x$spi):"
	head -40 <<<"$d" | sed 's/^/   | /'
	expect "$d" "203\.0\.113\.2:4500 +-> +203\.0\.113\.1:$p1 +ESP .*SPI=0x$spi" \
		"203\.0\.113\.1:$p2 +-> +203\.0\.113\.2:4500 +ISAKMP" "203\.0\.113\.2:4500 +-> +203\.0\.113\.1:$p2 +ESP .*SPI=0x$spi" || return 1
	# Once we sent to the new port, nothing more goes to the old one.
	awk -v p1="203.0.113.1:$p1" -v p2="203.0.113.1:$p2" '$5 == p2 && !s { s = $1 } $5 == p1 && s { bad = 1 } END { exit bad }' <<<"$d" ||
		{ echo "   ESP to the old port after the move"; echo "$d"; return 1; }
	# A new Quick Mode on the moved IKE SA (strongSwan rekeys): the new pair is at the new
	# port from the start.
	"$SS" swanctl left --rekey --child net >/dev/null 2>&1 || { echo "   swanctl --rekey failed"; return 1; }
	for i in $(seq 1 50); do
		[[ $(show ipsec-sa --json | grep -Ec '"installed": *true') -ge 2 ]] && break
		sleep 0.1
	done
	out=$(ping_right 3)
	t=$(show ipsec-sa --json | python3 -c '
import json, sys
for sa in json.load(sys.stdin)["sas"]:
    print("in %s out %s port %s" % (sa["inbound_spi"], sa["outbound_spi"], (sa["udp_encap"] or {}).get("remote_port")))')
	echo "   after strongSwan's rekey: $(grep 'packets transmitted' <<<"$out"); pairs: $(tr '\n' ';' <<<"$t")"
	expect "$out" " 3 received" || return 1
	[[ $(grep -c " port $p2\$" <<<"$t") == 2 ]] || { echo "   expected two pairs at port $p2"; return 1; }
	stop_ours || return 1
}

ALL="init_aes128 resp_aes128 init_3des resp_3des init_aes256_pfs resp_aes256_pfs nat dpd idle tcp sigterm raw_esp gre gre_transport rebind"
T0=$(now)
for s in ${@:-$ALL}; do
	echo "== $s"
	SCENARIO_T0=$(now)
	: >"$LOG"
	if "$s"; then
		pass=$((pass + 1))
		echo "   PASS ($(since "$SCENARIO_T0") s)"
	else
		fail=$((fail + 1))
		failed+=("$s")
		echo "   FAIL ($(since "$SCENARIO_T0") s); our daemon's log:"
		tail -40 "$LOG" | sed 's/^/     | /'
		echo "   charon's log (right):"
		tail -40 "$STATE/right/charon.log" 2>/dev/null | sed 's/^/     | /'
		if [[ $s == rebind ]]; then
			echo "   charon's log (left, behind the NAT):"
			tail -40 "$STATE/left/charon.log" 2>/dev/null | sed 's/^/     | /'
		fi
		if [[ $s == gre && -s "$STATE/gre-peer.log" ]]; then
			echo "   gre-echo.py tun (right):"
			tail -10 "$STATE/gre-peer.log" | sed 's/^/     | /'
		fi
	fi
	stop_gre_peer >/dev/null 2>&1
	stop_capture >/dev/null 2>&1
	stop_ours >/dev/null 2>&1
	"$SS" down >/dev/null 2>&1
done
echo
echo "daemon interop took $(since "$T0") s${failed[*]:+ (failed: ${failed[*]})}"
echo "daemon: $pass passed, $fail failed"
((fail == 0))
