#!/usr/bin/env bash
# Interop suite: our `ipsec ike connect` against strongSwan 5.9.8 (kernel-libipsec) in
# network namespaces, with and without a real NAT (nftables masquerade) in between.
# Every scenario is bounded in time, cleans up after itself, and prints both sides' logs
# when it fails. Needs root. Usage: run.sh [SCENARIO...]   (default: all)
#
# strongSwan here carries ESP only as UDP-encapsulated tunnel mode and fakes NAT-D, so
# every scenario floats to 4500 and uses ESP-in-UDP (see strongswan-netns.sh).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
IPSEC=${IPSEC:-$ROOT/target/debug/ipsec}
SS="$HERE/strongswan-netns.sh"
export STATE=${STATE:-/tmp/ipsec-rs-interop}
export NS_PREFIX=${NS_PREFIX:-irs-}
export TIMEOUT=20
LOGDIR=${LOGDIR:-$STATE-logs}
mkdir -p "$LOGDIR"
L="${NS_PREFIX}left"
R="${NS_PREFIX}right"
LNET=198.51.100.0/25
RNET=198.51.100.128/25
KEYLOG_LEVELS="ike=4 chd=4 enc=1 net=1 cfg=2 knl=1 esp=1"
pass=0
fail=0
failed=()

cleanup() { "$SS" down >/dev/null 2>&1 || true; }
trap cleanup EXIT

psk() { cat "$STATE/psk"; }

# ours LOCAL PEER [args...]: run our side in the left namespace (30 s bound).
ours() {
	local local_ip=$1 peer=$2
	shift 2
	ip netns exec "$L" timeout 40 "$IPSEC" ike connect --local "$local_ip" --peer "$peer" \
		--psk "$(psk)" --local-net "$LNET" --remote-net "$RNET" --timeout 30 "$@"
}

# right_sas: strongSwan's view, one line.
right_sas() { "$SS" swanctl right --list-sas --raw 2>/dev/null | grep 'list-sa event' || true; }

expect() { # expect FILE PATTERN...
	local f=$1
	shift
	for p in "$@"; do
		grep -q -- "$p" "$f" || { echo "   missing: $p"; return 1; }
	done
}

# keys_match KEYLOG: our ESP keys equal the ones charon logged (ike=4 chd=4).
keys_match() {
	local ours_f=$1 theirs
	theirs=$("$SS" keys right 2>/dev/null)
	local ie ia re ra
	ie=$(awk '/^encryption initiator key/{print $4}' <<<"$theirs" | tail -1)
	ia=$(awk '/^integrity initiator key/{print $4}' <<<"$theirs" | tail -1)
	re=$(awk '/^encryption responder key/{print $4}' <<<"$theirs" | tail -1)
	ra=$(awk '/^integrity responder key/{print $4}' <<<"$theirs" | tail -1)
	[[ -n "$ie" && -n "$re" ]] || { echo "   charon logged no ESP keys"; return 1; }
	# "initiator key" protects initiator->responder traffic.
	local role=$2 out_enc out_auth in_enc in_auth
	if [[ $role == initiator ]]; then
		out_enc=$ie out_auth=$ia in_enc=$re in_auth=$ra
	else
		out_enc=$re out_auth=$ra in_enc=$ie in_auth=$ia
	fi
	# Phase 1: SKEYID_d/a/e as charon logged them (ike=4).
	local d a e
	d=$(awk '/^SKEYID_d /{print $2}' <<<"$theirs" | tail -1)
	a=$(awk '/^SKEYID_a /{print $2}' <<<"$theirs" | tail -1)
	e=$(awk '/^SKEYID_e /{print $2}' <<<"$theirs" | tail -1)
	grep -q "skeyid_d=$d skeyid_a=$a skeyid_e=$e" "$ours_f" ||
		{ echo "   SKEYID_d/a/e differ:"; grep '^ike' "$ours_f"; echo "$theirs" | grep SKEYID; return 1; }
	echo "   phase-1 keys SKEYID_d/a/e equal charon's: d=${d:0:16}... a=${a:0:16}... e=${e:0:16}..."
	grep -q "esp out .* enc=$out_enc auth=$out_auth" "$ours_f" &&
		grep -q "esp in .* enc=$in_enc auth=$in_auth" "$ours_f" ||
		{ echo "   ESP keys differ:"; cat "$ours_f"; echo "$theirs" | grep -E 'key'; return 1; }
	echo "   ESP keys equal charon's: out enc=$out_enc in enc=$in_enc"
}

# --- scenarios ---------------------------------------------------------------------

# Our side initiates Main Mode + Quick Mode, pings through, keys equal charon's.
initiate() { # initiate IKE ESP [extra ours args]
	local ike=$1 esp=$2
	shift 2
	IKE_PROPOSALS=$ike ESP_PROPOSALS=$esp LEFT=none LOG_LEVELS="$KEYLOG_LEVELS" "$SS" up || return 1
	rm -f "$STATE/keylog"
	ours 203.0.113.1 203.0.113.2 --ike "$ike" --esp "$esp" --ping 198.51.100.129 \
		--ping-src 198.51.100.1 --count 3 --keylog "$STATE/keylog" "$@" > "$STATE/ours.out" 2>&1
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] || return 1
	expect "$STATE/ours.out" "phase 1 established" "encap udp 4500->4500" "ping: 3/3 replies" || return 1
	local sas; sas=$(right_sas)
	echo "   strongSwan: $(grep -o 'state=INSTALLED mode=TUNNEL protocol=ESP encap=yes' <<<"$sas") $(grep -o 'packets-in=[0-9]*' <<<"$sas") $(grep -o 'packets-out=[0-9]*' <<<"$sas")"
	grep -q "state=INSTALLED mode=TUNNEL protocol=ESP encap=yes" <<<"$sas" || return 1
	grep -q "packets-in=3 " <<<"$sas" || return 1
	keys_match "$STATE/keylog" initiator
}

# strongSwan initiates, we respond; strongSwan pings through us.
respond() { # respond IKE ESP
	local ike=$1 esp=$2
	IKE_PROPOSALS=$ike ESP_PROPOSALS=$esp LEFT=none RIGHT_REMOTE_ADDRS=203.0.113.1 \
		RIGHT_REMOTE_ID=203.0.113.1 LOG_LEVELS="$KEYLOG_LEVELS" "$SS" up || return 1
	rm -f "$STATE/keylog"
	ours 203.0.113.1 203.0.113.2 --ike "$ike" --esp "$esp" --respond --answer 3 \
		--keylog "$STATE/keylog" > "$STATE/ours.out" 2>&1 &
	local pid=$!
	sleep 0.3
	"$SS" swanctl right --initiate --child net --timeout 20 > "$STATE/initiate.out" 2>&1
	tail -3 "$STATE/initiate.out"
	ip netns exec "$R" ping -c 3 -W 2 -I 198.51.100.129 198.51.100.1 | tail -2
	wait $pid
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] || return 1
	expect "$STATE/ours.out" "phase 1 established" "answered echo request 3" || return 1
	keys_match "$STATE/keylog" responder
}

mm_init_aes128() { initiate aes128-sha1-modp2048 aes128-sha1; }
mm_init_aes256_pfs() { initiate aes256-sha256-modp2048 aes256-sha256-modp2048; }
mm_init_3des() { initiate 3des-sha1-modp1024 3des-sha1; }
mm_resp_aes128() { respond aes128-sha1-modp2048 aes128-sha1; }
mm_resp_aes256_pfs() { respond aes256-sha256-modp2048 aes256-sha256-modp2048; }
mm_resp_3des() { respond 3des-sha1-modp1024 3des-sha1; }
am_init() { AGGRESSIVE=yes initiate aes128-sha1-modp2048 aes128-sha1 --aggressive; }
am_resp() { AGGRESSIVE=yes respond aes128-sha1-modp2048 aes128-sha1; }

# We DELETE: strongSwan removes both the CHILD_SA and the IKE_SA.
delete_ours() {
	LEFT=none "$SS" up || return 1
	ours 203.0.113.1 203.0.113.2 --ping 198.51.100.129 --ping-src 198.51.100.1 --delete \
		> "$STATE/ours.out" 2>&1 || { cat "$STATE/ours.out"; return 1; }
	cat "$STATE/ours.out"
	sleep 1
	local sas; sas=$(right_sas)
	echo "   strongSwan after our DELETE: ${sas:-no SAs}"
	[[ -z "$sas" ]] || return 1
	grep -E "received DELETE|deleting IKE_SA|closing CHILD_SA" "$STATE/right/charon.log" | tail -3
}

# strongSwan DELETEs: we remove the SA pair.
delete_theirs() {
	LEFT=none "$SS" up || return 1
	ours 203.0.113.1 203.0.113.2 --ping 198.51.100.129 --ping-src 198.51.100.1 --wait-delete \
		> "$STATE/ours.out" 2>&1 &
	local pid=$!
	"$SS" wait-child right 20 >/dev/null 2>&1
	sleep 2
	"$SS" swanctl right --terminate --child net --timeout 10 | tail -2
	wait $pid
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] && expect "$STATE/ours.out" "child sa deleted .* reason PeerDelete"
}

# A wrong PSK fails cleanly on both sides: nothing installed.
wrong_psk() {
	LEFT=none RIGHT_PSK=not-the-same-key "$SS" up || return 1
	ip netns exec "$L" timeout 40 "$IPSEC" ike connect --local 203.0.113.1 --peer 203.0.113.2 \
		--psk interop-test-psk-0123456789 --local-net "$LNET" --remote-net "$RNET" --timeout 30 \
		--retransmit-ms 500 \
		> "$STATE/ours.out" 2>&1
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc != 0 ]] || return 1
	expect "$STATE/ours.out" "negotiation failed" || return 1
	[[ -z "$(right_sas | grep INSTALLED)" ]] || return 1
	grep -E "decryption failed|could not decrypt|PLD_MAL|AUTH" "$STATE/right/charon.log" | tail -2
}

# No common proposal: NO-PROPOSAL-CHOSEN on our side, "no proposal found" on theirs.
no_proposal() {
	LEFT=none RIGHT_IKE_PROPOSALS=aes256-sha256-modp3072 "$SS" up || return 1
	ours 203.0.113.1 203.0.113.2 --ike aes128-sha1-modp2048 > "$STATE/ours.out" 2>&1
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc != 0 ]] || return 1
	expect "$STATE/ours.out" "negotiation failed.*NoProposalChosen" || return 1
	grep -E "no proposal found|NO_PROPOSAL" "$STATE/right/charon.log" | tail -2
}

# Our side behind a real NAT (masquerade, optionally with port remapping).
nat_init() { # nat_init keep|remap
	NAT=1 NAT_PORTS=$1 LEFT=none KEEPALIVE=5s "$SS" up || return 1
	ours 192.0.2.2 203.0.113.2 --ping 198.51.100.129 --ping-src 198.51.100.1 > "$STATE/ours.out" 2>&1
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] || return 1
	expect "$STATE/ours.out" "nat local=true" "ping: 3/3 replies" || return 1
	local sas; sas=$(right_sas)
	echo "   strongSwan sees: $(grep -o 'remote-host=[0-9.]* remote-port=[0-9]*' <<<"$sas") $(grep -o 'encap=yes' <<<"$sas") $(grep -o 'packets-in=[0-9]*' <<<"$sas")"
	grep -q "remote-host=203.0.113.1" <<<"$sas" && grep -q "encap=yes" <<<"$sas"
}
nat_init_keep() { nat_init keep; }
nat_init_remap() { nat_init remap; }

# Behind the NAT, our side sends NAT keepalives when idle; tshark on the inside link
# sees them (single 0xFF byte to 4500), and ESP-in-UDP leaving for the peer.
nat_keepalive() {
	command -v tshark >/dev/null || { echo "tshark missing"; return 1; }
	NAT=1 LEFT=none "$SS" up || return 1
	"$SS" capture left l-in 12 "udp port 4500 or udp port 500" > "$STATE/pcapname" &
	local cap=$!
	sleep 1.5
	ours 192.0.2.2 203.0.113.2 --ping 198.51.100.129 --ping-src 198.51.100.1 \
		--nat-keepalive 2 --linger 7 > "$STATE/ours.out" 2>&1 || { cat "$STATE/ours.out"; return 1; }
	cat "$STATE/ours.out"
	wait $cap
	local f; f=$(cat "$STATE/pcapname")
	"$SS" dissect "$f" > "$STATE/dissect.txt"
	grep -E "UDPENCAP|NAT-keepalive|ESP" "$STATE/dissect.txt" | head -12
	local ka esp
	ka=$(grep -c "192.0.2.2:4500 .*NAT-keepalive" "$STATE/dissect.txt")
	esp=$(grep -c "192.0.2.2:4500 .* ESP " "$STATE/dissect.txt")
	echo "   tshark on the inside link: $ka NAT keepalives and $esp ESP-in-UDP packets from our side"
	[[ $ka -ge 2 && $esp -ge 3 ]]
}

# strongSwan behind the NAT initiates to our side in front of it, and pings through us.
nat_resp() {
	NAT=1 LEFT=strongswan "$SS" up || return 1
	"$SS" kill right >/dev/null 2>&1 # we take right's place
	sleep 0.5
	ip netns exec "$R" timeout 40 "$IPSEC" ike connect --local 203.0.113.2 --peer 203.0.113.1 \
		--psk "$(psk)" --local-net "$RNET" --remote-net "$LNET" --respond --answer 3 --timeout 30 \
		> "$STATE/ours.out" 2>&1 &
	local pid=$!
	sleep 0.3
	"$SS" initiate | tail -3 || true
	"$SS" ping | tail -2
	wait $pid
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] && expect "$STATE/ours.out" "nat local=false remote=true" "answered echo request 3"
}

# DPD both ways (RFC 3706): strongSwan probes the idle tunnel every 3 s of silence
# (DPD_DELAY=3s DPD_TIMEOUT=10s) and we answer; we send periodic keepalives every 5 s
# (longer than strongSwan's delay, so its own requests are not suppressed by ours)
# and it answers. Both sides' logs show R-U-THERE and R-U-THERE-ACK in both directions.
dpd_both_ways() {
	DPD_DELAY=3s DPD_TIMEOUT=10s LEFT=none "$SS" up || return 1
	ours 203.0.113.1 203.0.113.2 --ping 198.51.100.129 --ping-src 198.51.100.1 \
		--dpd 5,1,3 --dpd-periodic --linger 12 > "$STATE/ours.out" 2>&1
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] || return 1
	expect "$STATE/ours.out" "capabilities \[D K" "dpd: R-U-THERE sent to 203.0.113.2" \
		"dpd: R-U-THERE-ACK received from 203.0.113.2" \
		"dpd: R-U-THERE from 203.0.113.2 answered with R-U-THERE-ACK" || return 1
	! grep -q "declared dead" "$STATE/ours.out" || return 1
	local log="$STATE/right/charon.log" ok=0
	grep -E "sending DPD request|N\(DPD(_ACK)?\)" "$log" | sed 's/^/   strongSwan: /' | tail -8
	grep -q "sending DPD request" "$log" &&
		grep -qE "parsed INFORMATIONAL_V1 request [0-9]+ \[ HASH N\(DPD_ACK\) \]" "$log" &&
		grep -qE "parsed INFORMATIONAL_V1 request [0-9]+ \[ HASH N\(DPD\) \]" "$log" &&
		grep -qE "generating INFORMATIONAL_V1 request [0-9]+ \[ HASH N\(DPD_ACK\) \]" "$log" && ok=1
	[[ $ok == 1 ]] || { echo "   strongSwan's log lacks a DPD exchange in one direction"; return 1; }
	echo "   strongSwan: $(grep -c 'sending DPD request' "$log") DPD requests sent and answered by us, $(grep -cE 'parsed INFORMATIONAL_V1 request [0-9]+ \[ HASH N\(DPD\) \]' "$log") of ours answered"
}

# strongSwan dies (SIGKILL): our on-demand DPD (keepalive 3 1, 3 R-U-THEREs, with
# echo requests every 0.5 s as the outbound traffic) declares it dead and the crypto map
# fails over to the backup peer (a second strongSwan, BACKUP=1), a ping passes.
# Bound after the kill: interval 3 s + one ping interval 0.5 s + 3 x 1 s = 6.5 s.
dpd_dead_backup() {
	LEFT=none BACKUP=1 "$SS" up || return 1
	ours 203.0.113.1 203.0.113.2 --backup-peer 203.0.113.3 --ping 198.51.100.129 \
		--ping-src 198.51.100.1 --dpd 3,1,3 --keep-pinging --ping-interval-ms 500 \
		--until-backup > "$STATE/ours.out" 2>&1 &
	local pid=$! i
	for i in $(seq 1 75); do
		grep -q "ping: reply 3 from 198.51.100.129" "$STATE/ours.out" && break
		sleep 0.2
	done
	grep -q "ping: reply 3 from 198.51.100.129" "$STATE/ours.out" ||
		{ kill "$pid"; wait "$pid"; cat "$STATE/ours.out"; return 1; }
	sleep 1
	local killed; killed=$(date +%s.%N)
	"$SS" kill right
	wait "$pid"
	local rc=$?
	cat "$STATE/ours.out"
	[[ $rc == 0 ]] || return 1
	expect "$STATE/ours.out" "capabilities \[D K" "dpd: peer 203.0.113.2 declared dead" \
		"child sa deleted .* reason DpdDead" "fails over from 203.0.113.2 to 203.0.113.3" \
		"phase 1 established conn [0-9]* local 203.0.113.1:4500 peer 203.0.113.3" \
		"dpd: backup peer 203.0.113.3 up" || return 1
	local dead took
	dead=$(grep -o 'declared dead at unix=[0-9.]*' "$STATE/ours.out" | cut -d= -f2)
	took=$(awk -v a="$killed" -v b="$dead" 'BEGIN{printf "%.2f", b - a}')
	echo "   dpd: strongSwan killed, declared dead after $took s (bound 6.5 s: interval 3 + ping 0.5 + 3 x 1)"
	awk -v t="$took" 'BEGIN{exit !(t >= 2.5 && t <= 6.5)}' || { echo "   out of bounds"; return 1; }
	local sas; sas=$("$SS" swanctl backup --list-sas --raw 2>/dev/null | grep 'list-sa event' || true)
	echo "   strongSwan backup: $(grep -o 'state=INSTALLED mode=TUNNEL protocol=ESP encap=yes' <<<"$sas") $(grep -o 'packets-in=[0-9]*' <<<"$sas")"
	grep -q "state=INSTALLED" <<<"$sas" && grep -qE "packets-in=([3-9]|[1-9][0-9]+) " <<<"$sas"
}

# GRE over IPsec with a real peer: a tunnel-mode SA restricted to GRE (strongSwan's
# TS 198.51.100.0/25[gre]); our GRE tunnel's packets cross it, a userspace GRE endpoint
# on strongSwan's side (gre-echo.py: the kernel has no GRE) echoes them back.
gre_echo() {
	TS_PROTO=gre LEFT=none "$SS" up || return 1
	ip netns exec "$R" timeout 40 python3 "$HERE/gre-echo.py" echo --local 198.51.100.129 --seconds 25 \
		> "$STATE/gre-echo.out" 2>&1 &
	local echo_pid=$!
	ours 203.0.113.1 203.0.113.2 --protocol 47 --ping 198.51.100.129 --ping-src 198.51.100.1 \
		--gre-echo 3 > "$STATE/ours.out" 2>&1
	local rc=$?
	cat "$STATE/ours.out"
	kill "$echo_pid" 2>/dev/null; wait "$echo_pid" 2>/dev/null
	sed 's/^/   strongSwan side: /' "$STATE/gre-echo.out" | head -4
	[[ $rc == 0 ]] || return 1
	expect "$STATE/ours.out" "gre: echo 3 back through the SA: protocol 0x0800, .* payload intact" || return 1
	local sas; sas=$(right_sas)
	echo "   strongSwan: $(grep -o 'local-ts=\[[^]]*\]' <<<"$sas") $(grep -o 'packets-in=[0-9]*' <<<"$sas")"
	grep -Eq "packets-in=([3-9]|[1-9][0-9]+) " <<<"$sas"
}

ALL=(mm_init_aes128 mm_init_aes256_pfs mm_init_3des mm_resp_aes128 mm_resp_aes256_pfs
	mm_resp_3des am_init am_resp delete_ours delete_theirs wrong_psk no_proposal
	nat_init_keep nat_init_remap nat_keepalive nat_resp gre_echo dpd_both_ways dpd_dead_backup)

[[ -x "$IPSEC" ]] || { echo "build first: cargo build -p ipsec-std ($IPSEC missing)"; exit 1; }
start=$(date +%s)
for s in "${@:-${ALL[@]}}"; do
	echo "=== $s"
	t0=$(date +%s)
	if (set -e; "$s") > "$LOGDIR/$s.log" 2>&1; then
		sed 's/^/   /' "$LOGDIR/$s.log" | grep -E 'ike:|ping:|strongSwan|keys|DELETE|dpd' | grep -v 'ping: reply' | head -24
		echo "--- PASS $s ($(( $(date +%s) - t0 )) s)"
		pass=$((pass + 1))
	else
		sed 's/^/   /' "$LOGDIR/$s.log" | tail -40
		echo "   --- charon (right) log tail:"
		tail -40 "$STATE/right/charon.log" 2>/dev/null | sed 's/^/   /'
		echo "--- FAIL $s ($(( $(date +%s) - t0 )) s)"
		fail=$((fail + 1))
		failed+=("$s")
	fi
	cleanup
done
echo
echo "interop suite took $(( $(date +%s) - start )) s${failed[*]:+; failed: ${failed[*]}}"
echo "interop: $pass passed, $fail failed"
[[ $fail == 0 ]]
