#!/usr/bin/env bash
# =============================================================================
# strongswan-netns.sh -- run strongSwan (charon, IKEv1) as a REAL third-party
# IPsec peer inside Linux network namespaces, for interoperability tests.
#
# Proven on Debian 12 (strongSwan 5.9.8-5+deb12u6) on a kernel WITHOUT
# CONFIG_INET_ESP: ESP is done in userspace by charon's kernel-libipsec plugin
# (TUN device "ipsec0" inside each namespace).  See NOTES.md next to this file.
#
# -----------------------------------------------------------------------------
# TOPOLOGY
# -----------------------------------------------------------------------------
#  NAT=0 (default, "direct"):
#
#    [left]  l-out 203.0.113.1/24  <==== veth ====>  r-out 203.0.113.2/24  [right]
#            lo    198.51.100.1/32                   lo    198.51.100.129/32
#            protected 198.51.100.0/25               protected 198.51.100.128/25
#
#  NAT=1 (a masquerading router namespace "nat" in between):
#
#    [left]  l-in 192.0.2.2/24 <== veth ==> n-in 192.0.2.1/24  [nat]  n-out 203.0.113.1/24
#                                                          <== veth ==> r-out 203.0.113.2/24 [right]
#    nat does "masquerade" (SNAT) of everything leaving n-out, so right sees
#    the left peer as 203.0.113.1 in BOTH topologies.  Left only has a route
#    for 203.0.113.0/24 via 192.0.2.1 (no default route).
#
#  BACKUP=1 (NAT=0 only) adds a third namespace "backup" with its own charon,
#  a second responder for the same protected network (a backup peer / `set peer`
#  list), reached from left over a second veth pair:
#
#    [left]  l-bak (no address; route 203.0.113.3/32 dev l-bak src 203.0.113.1)
#                  <==== veth ====>  b-out 203.0.113.3/24  [backup]
#                                    lo    198.51.100.129/32, protected 198.51.100.128/25
#
#  Same PSK, proposals and DPD settings as right, remote_addrs = %any.
#
#  Only documentation prefixes are used (192.0.2.0/24, 198.51.100.0/24,
#  203.0.113.0/24) and every address lives inside namespaces this script
#  creates, so nothing can leave the machine.  No namespace has a default route.
#
# -----------------------------------------------------------------------------
# WHO RUNS WHAT
# -----------------------------------------------------------------------------
#  right : RIGHT=strongswan (default) -> charon, configured to RESPOND (and
#          able to initiate) IKEv1 main mode + PSK, tunnel mode, ESP.
#          RIGHT=none -> nothing runs in "right" (namespace, addresses and routes
#          stay): put YOUR responder there (203.0.113.2, protecting
#          198.51.100.128/25), e.g. with LEFT=strongswan NAT=1 so that a NATed
#          strongSwan initiates to it (`initiate`); it sees left as 203.0.113.1.
#  left  : LEFT=strongswan (default)  -> a second charon, used to prove the
#                                        setup works (strongSwan <-> strongSwan)
#          LEFT=none                  -> nothing runs in "left"; put YOUR
#                                        implementation there, e.g.
#              ip netns exec left ./target/debug/my-ike --local 203.0.113.1 \
#                   --peer 203.0.113.2 --psk "$(cat $STATE/psk)" ...
#          (bind UDP 500 and 4500 on 203.0.113.1, or 192.0.2.2 with NAT=1,
#           protect 198.51.100.0/25 <-> 198.51.100.128/25, create your own TUN)
#
# -----------------------------------------------------------------------------
# WHY THE EXTRA PLUMBING (gotchas found while proving this)
# -----------------------------------------------------------------------------
#  * charon 5.9.8 hard-codes its pid file to /var/run/charon.pid (= /run).
#    Two charons on one host collide ("charon already running").  We start
#    each charon inside `ip netns exec` (which already gives a private mount
#    namespace) and bind-mount a per-instance directory over /run first.
#  * Each instance gets its own strongswan.conf via STRONGSWAN_CONF, its own
#    VICI socket (charon.plugins.vici.socket) and its own swanctl directory
#    (SWANCTL_DIR); swanctl talks to it with --uri unix://<socket>.
#  * We do NOT use /etc/strongswan.conf or /etc/strongswan.d: our config
#    lists the plugins explicitly ("load = ...") with kernel-libipsec BEFORE
#    kernel-netlink (the first registered kernel-ipsec backend wins).
#  * kernel-libipsec in 5.9.8 can only send ESP inside UDP (RFC 3948).  It
#    therefore fakes the NAT-D hashes (like encap=yes) so that even WITHOUT a
#    NAT the peer sees "NAT detected", IKE floats to UDP 4500 and ESP is
#    UDP-encapsulated.  A peer that does not implement NAT-T (RFC 3947 vendor
#    ID + NAT-D + port float + RFC 3948 ESP-in-UDP) cannot get ESP traffic
#    through this strongSwan.  Raw ESP (proto 50) needs >= 5.9.11 or a kernel
#    with CONFIG_INET_ESP.
#  * Everything this script writes goes under $STATE (default
#    /tmp/strongswan-netns), never next to the script: CI gets shared/
#    read-only.
#
# -----------------------------------------------------------------------------
# USAGE
# -----------------------------------------------------------------------------
#   strongswan-netns.sh install            # apt-get install what is needed
#   strongswan-netns.sh up                 # (re)create topology + start charon(s)
#   NAT=1 strongswan-netns.sh up           # ... with the NAT box in between
#   LEFT=none strongswan-netns.sh up       # only the strongSwan responder (right)
#   RIGHT=none NAT=1 strongswan-netns.sh up  # only the (NATed) strongSwan initiator
#   strongswan-netns.sh initiate           # left charon initiates (LEFT=strongswan)
#   strongswan-netns.sh ping               # ping protected->protected through ESP
#   strongswan-netns.sh status             # namespaces, pids, SAs, counters
#   strongswan-netns.sh swanctl right --list-sas   # any swanctl cmd on an instance
#   strongswan-netns.sh capture right r-out 20 [pcap-filter]  # bounded tshark
#   strongswan-netns.sh dissect FILE.pcap  # one line per packet, with ports
#   strongswan-netns.sh wait-child right 20  # wait until a CHILD_SA is INSTALLED
#   strongswan-netns.sh keys right         # SKEYID*, Ka, IV, ESP keys from the log
#                                          # (needs LOG_LEVELS with ike=4 chd=4)
#   strongswan-netns.sh kill right         # SIGKILL a charon (simulate dead peer)
#   BACKUP=1 LEFT=none strongswan-netns.sh up   # + backup responder 203.0.113.3
#   strongswan-netns.sh swanctl backup --list-sas  # the backup instance
#   strongswan-netns.sh start right        # (re)start one charon + load config
#   strongswan-netns.sh logs right [N]     # last N lines of that charon's log
#   strongswan-netns.sh selftest           # up + initiate + ping + list-sas
#   strongswan-netns.sh down               # stop charons, delete namespaces
#   strongswan-netns.sh clean              # down + remove $STATE
#
#  `up`/`selftest` remember NAT/LEFT etc. in $STATE/env so later sub-commands
#  (down, status, ...) use the same names without re-exporting them.
#
# -----------------------------------------------------------------------------
# TUNABLES (environment variables, defaults in brackets)
# -----------------------------------------------------------------------------
#   STATE          [/tmp/strongswan-netns]   configs, logs, sockets, pid dirs
#   NS_PREFIX      []        prefix for namespace names (avoid clashes when two
#                            test runs share a machine): ${NS_PREFIX}left ...
#   NAT            [0]       1 = put the masquerading "nat" namespace in between
#   BACKUP         [0]       1 = a second strongSwan responder ("backup",
#                            203.0.113.3) reachable from left (NAT=0 only)
#   LEFT           [strongswan]  strongswan | none
#   RIGHT          [strongswan]  strongswan | none (no charon in right)
#   IKE_PROPOSALS  [aes128-sha1-modp2048]    phase 1 (main mode) proposal(s)
#   ESP_PROPOSALS  [aes128-sha1]             phase 2 (quick mode); add a DH
#                                            group (aes128-sha1-modp2048) for PFS
#   PSK            [interop-test-psk-0123456789]  (written to $STATE/psk)
#   RIGHT_PSK      [= PSK]   a different key on the right (negative tests)
#   LEFT_ID        [<left IKE address>]  IKE identity (ID_IPV4_ADDR by default)
#   RIGHT_ID       [203.0.113.2]
#   RIGHT_REMOTE_ID [%any]   identity the right peer accepts from the initiator
#   RIGHT_REMOTE_ADDRS [%any] addresses right accepts IKE from (%any: respond
#                            to anyone; right then cannot initiate by itself)
#   RIGHT_IKE_PROPOSALS / RIGHT_ESP_PROPOSALS  [= IKE_/ESP_PROPOSALS]  what the
#                            right peer accepts; may be a comma separated list,
#                            e.g. aes128-sha1-modp2048,3des-sha1-modp1024
#   TS_PROTO       []        restrict both traffic selectors to one IP protocol,
#                            e.g. gre (GRE-over-IPsec as tunnel mode between
#                            the protected hosts; see NOTES.md, GRE section)
#   RIGHT_LOCAL_TS / RIGHT_REMOTE_TS  [198.51.100.128/25 / 198.51.100.0/25]
#                            right's traffic selectors, e.g. 203.0.113.2/32 and
#                            203.0.113.1/32 with TS_PROTO=gre: GRE between the
#                            IKE endpoints themselves (IOS tunnel protection)
#   PEER_TS        [0]       1 = allow a remote TS that is the IKE peer itself:
#                            kernel-libipsec.allow_peer_ts = yes, and charon's
#                            own packets (IKE, ESP-in-UDP) are marked 0x42 and
#                            skip the table-220 routes (kernel-netlink.fwmark =
#                            !0x42), so they do not loop into ipsec0
#   NAT_PORTS      [keep]    keep  = plain masquerade (source ports kept when
#                                    possible, so 500->500, 4500->4500)
#                            remap = UDP source ports rewritten to 40000-40999
#                                    (tests that the peer answers NATed ports)
#   DPD_DELAY      [0s]      e.g. 5s  (0 = DPD off)
#   DPD_TIMEOUT    [0s]      e.g. 15s (IKEv1 only).  0 = derived from the
#                            retransmit schedule: ~14 s with the retransmit_*
#                            values below, 165 s with charon's defaults.  The
#                            peer is declared dead dpd_timeout..dpd_timeout+
#                            dpd_delay after the last packet received from it.
#   DPD_ACTION     [clear]   clear | restart | trap (child dpd_action)
#   KEEPALIVE      [20s]     NAT keepalive interval (sent by the NATed side)
#   AGGRESSIVE     [no]      yes = IKEv1 Aggressive Mode (and allow it with PSK)
#   LOG_DEFAULT    [1]       charon default log level (-1..4)
#   LOG_LEVELS     [ike=2 net=2 enc=1 cfg=2 knl=1 esp=1 chd=2]  per subsystem;
#                            ike=4 chd=4 prints SKEYID*, Ka, ESP keys (see NOTES)
#   TIMEOUT        [20]      seconds bound for initiate / waits
# =============================================================================
set -euo pipefail

# ---------------------------------------------------------------- settings --
STATE=${STATE:-/tmp/strongswan-netns}
SELF=$(readlink -f "$0")

# Re-use the settings of the last `up` (stored in $STATE/env) unless the
# caller overrides them explicitly in the environment.
if [[ -r "$STATE/env" && "${1:-}" != "up" && "${1:-}" != "selftest" ]]; then
	# shellcheck disable=SC1091
	while IFS='=' read -r k v; do
		if [[ -z "$k" || "$k" == \#* ]]; then continue; fi
		if [[ -z "${!k+x}" ]]; then export "$k=$v"; fi
	done < "$STATE/env"
fi

NS_PREFIX=${NS_PREFIX:-}
NAT=${NAT:-0}
LEFT=${LEFT:-strongswan}
RIGHT=${RIGHT:-strongswan}
NS_L=${NS_PREFIX}left
NS_R=${NS_PREFIX}right
NS_N=${NS_PREFIX}nat
NS_B=${NS_PREFIX}backup
BACKUP=${BACKUP:-0}

IKE_PROPOSALS=${IKE_PROPOSALS:-aes128-sha1-modp2048}
ESP_PROPOSALS=${ESP_PROPOSALS:-aes128-sha1}
PSK=${PSK:-interop-test-psk-0123456789}
DPD_DELAY=${DPD_DELAY:-0s}
DPD_TIMEOUT=${DPD_TIMEOUT:-0s}
DPD_ACTION=${DPD_ACTION:-clear}
KEEPALIVE=${KEEPALIVE:-20s}
LOG_DEFAULT=${LOG_DEFAULT:-1}
LOG_LEVELS=${LOG_LEVELS:-ike=2 net=2 enc=1 cfg=2 knl=1 esp=1 chd=2}
TIMEOUT=${TIMEOUT:-20}
CONN=lr             # connection name in swanctl.conf (both sides)
CHILD=net           # CHILD_SA name

# Addresses ------------------------------------------------------------------
RIGHT_OUT=203.0.113.2          # right's IKE/ESP address (both topologies)
BACKUP_OUT=203.0.113.3         # the backup responder (BACKUP=1)
LEFT_AS_SEEN=203.0.113.1       # how right sees left (both topologies)
if [[ "$NAT" == 1 ]]; then
	LEFT_OUT=192.0.2.2         # left's real address behind the NAT
	NAT_IN=192.0.2.1
	NAT_OUT=203.0.113.1
	L_IF=l-in
else
	LEFT_OUT=203.0.113.1
	L_IF=l-out
fi
R_IF=r-out
LEFT_NET=198.51.100.0/25      ; LEFT_HOST=198.51.100.1
RIGHT_NET=198.51.100.128/25   ; RIGHT_HOST=198.51.100.129
LEFT_ID=${LEFT_ID:-$LEFT_OUT}
RIGHT_ID=${RIGHT_ID:-$RIGHT_OUT}
RIGHT_REMOTE_ID=${RIGHT_REMOTE_ID:-%any}
RIGHT_REMOTE_ADDRS=${RIGHT_REMOTE_ADDRS:-%any}
RIGHT_IKE_PROPOSALS=${RIGHT_IKE_PROPOSALS:-$IKE_PROPOSALS}
RIGHT_ESP_PROPOSALS=${RIGHT_ESP_PROPOSALS:-$ESP_PROPOSALS}
NAT_PORTS=${NAT_PORTS:-keep}
RIGHT_PSK=${RIGHT_PSK:-$PSK}
RIGHT_LOCAL_TS=${RIGHT_LOCAL_TS:-$RIGHT_NET}
RIGHT_REMOTE_TS=${RIGHT_REMOTE_TS:-$LEFT_NET}
PEER_TS=${PEER_TS:-0}

CHARON=${CHARON:-/usr/lib/ipsec/charon}
SWANCTL=${SWANCTL:-/usr/sbin/swanctl}
PACKAGES="strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins nftables iproute2 iputils-ping"

# ----------------------------------------------------------------- helpers --
log()  { printf '[%s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }
now()  { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
need_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# instance name -> namespace
ns_of() { case $1 in left) echo "$NS_L";; right) echo "$NS_R";; nat) echo "$NS_N";; backup) echo "$NS_B";; *) die "unknown instance $1";; esac; }

# pid of the charon of an instance (from charon's own pid file), or empty
charon_pid() {
	local f="$STATE/$1/run/charon.pid" pid
	[[ -r "$f" ]] || return 0
	pid=$(tr -dc '0-9' < "$f")
	[[ -n "$pid" && -d /proc/$pid ]] || return 0
	[[ "$(cat /proc/$pid/comm 2>/dev/null)" == charon ]] || return 0
	echo "$pid"
}

# swanctl against one instance: sw <instance> <swanctl args...>
sw() {
	local inst=$1; shift
	STRONGSWAN_CONF="$STATE/$inst/strongswan.conf" SWANCTL_DIR="$STATE/$inst/swanctl" \
		timeout "$((TIMEOUT + 5))" "$SWANCTL" "$@" --uri "unix://$STATE/$inst/charon.vici"
}

# ------------------------------------------------------------ config files --
# strongswan.conf for one instance.  $1 = instance (left|right)
write_strongswan_conf() {
	local inst=$1 d="$STATE/$1" lv
	# swanctl --load-all scans these credential dirs; create them (empty) to
	# avoid 'opening directory ... failed' noise
	mkdir -p "$d/run" "$d"/swanctl/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
	{
	cat <<EOF
# generated by strongswan-netns.sh for instance '$inst' -- do not edit
charon {
	# Explicit plugin list (no /etc/strongswan.d modular loading).
	# kernel-libipsec MUST come before kernel-netlink: the first plugin that
	# registers the kernel-ipsec interface wins; kernel-netlink then only
	# provides the networking part (addresses, routes, ip rules).
	# openssl provides 3DES/DES (legacy provider) and all DH groups.
	load = random nonce openssl aes sha1 sha2 md5 hmac gmp kernel-libipsec kernel-netlink socket-default vici

	port = 500
	port_nat_t = 4500
	# NAT keepalive interval (only the side that is behind a NAT sends them)
	keep_alive = $KEEPALIVE
	# Aggressive Mode with PSK sends a hash an eavesdropper can attack offline;
	# charon refuses it unless told otherwise (tests only).
	i_dont_care_about_security_and_use_aggressive_mode_psk = ${AGGRESSIVE:-no}
	# quick failure in tests instead of the 165 s default retransmit schedule
	retransmit_timeout = 2.0
	retransmit_base = 1.4
	retransmit_tries = 3
	# routes to the remote subnet via the TUN device go into table 220
	install_routes = yes
	install_virtual_ip = no
	# reuse the IKE socket for ESP-in-UDP (libipsec does it anyway)
	plugins {
		vici {
			socket = unix://$d/charon.vici
		}
EOF
	if [[ "$PEER_TS" == 1 ]]; then
	cat <<EOF
		# PEER_TS=1: a TS may be the IKE peer (GRE between the IKE endpoints). The
		# route to it goes into ipsec0; charon's own packets carry mark 0x42 and the
		# table-220 rule skips them, so IKE and ESP-in-UDP still leave directly.
		kernel-libipsec {
			allow_peer_ts = yes
		}
		socket-default {
			fwmark = 0x42
		}
		kernel-netlink {
			fwmark = !0x42
		}
EOF
	fi
	cat <<EOF
		openssl {
			load_legacy = yes
		}
	}
	filelog {
		main {
			path = $d/charon.log
			time_format = %H:%M:%S
			time_add_ms = yes
			ike_name = yes
			append = no
			flush_line = yes
			default = $LOG_DEFAULT
EOF
	for lv in $LOG_LEVELS; do printf '\t\t\t%s = %s\n' "${lv%%=*}" "${lv#*=}"; done
	cat <<EOF
		}
	}
	# no syslog daemon in the namespaces: disable the default syslog logger
	syslog {
		daemon {
			default = -1
		}
	}
}
swanctl {
	# swanctl reads this file too (STRONGSWAN_CONF): default socket, and a
	# plugin list that exists on Debian (silences 'plugin ... failed to load')
	socket = unix://$d/charon.vici
	load = random openssl pem pkcs1 x509 pubkey
}
EOF
	} > "$d/strongswan.conf"
}

# swanctl.conf for one instance.
# $1 instance, $2 local IKE addr, $3 remote IKE addr, $4 local id, $5 remote id,
# $6 local subnet, $7 remote subnet, $8 IKE proposals, $9 ESP proposals,
# $10 pre-shared key
write_swanctl_conf() {
	local inst=$1 laddr=$2 raddr=$3 lid=$4 rid=$5 lnet=$6 rnet=$7 ikep=$8 espp=$9 psk=${10}
	local d="$STATE/$inst/swanctl"
	mkdir -p "$d"
	cat > "$d/swanctl.conf" <<EOF
# generated by strongswan-netns.sh for instance '$inst' -- do not edit
connections {
	$CONN {
		version = 1                 # IKEv1 (ISAKMP)
		aggressive = ${AGGRESSIVE:-no}  # no = main mode (identity protection)
		local_addrs = $laddr
		remote_addrs = $raddr       # %any = respond to anyone (cannot initiate)
		proposals = $ikep           # phase 1 (main mode) SA payload
		dpd_delay = $DPD_DELAY      # R_U_THERE interval when idle (RFC 3706)
		dpd_timeout = $DPD_TIMEOUT  # IKEv1 only: declare peer dead after this
		encap = no                  # (libipsec forces UDP encapsulation anyway)
		mobike = no
		fragmentation = yes
		unique = no
		keyingtries = 1
		local {
			auth = psk
			id = $lid
		}
		remote {
			auth = psk
			id = $rid
		}
		children {
			$CHILD {
				mode = tunnel
				local_ts = $lnet${TS_PROTO:+[$TS_PROTO]}    # e.g. 198.51.100.0/25[gre]
				remote_ts = $rnet${TS_PROTO:+[$TS_PROTO]}
				esp_proposals = $espp  # quick mode; add -modpXXXX for PFS
				dpd_action = $DPD_ACTION
				start_action = none
				close_action = none
			}
		}
	}
}
secrets {
	# In IKEv1 main mode the responder must pick the PSK BEFORE it learns the
	# initiator's ID (MM5 is already encrypted with it): charon looks it up via
	# the config matched by IP addresses and its local/remote id.  A secret
	# that names only our own id matches any peer.
	ike-interop {
		id-self = $lid
		secret = "$psk"
	}
}
EOF
}

# --------------------------------------------------------------- topology --
topology_up() {
	local t0; t0=$(now)
	ip netns add "$NS_L"
	ip netns add "$NS_R"
	# loopback up in every namespace; protected host addresses live on lo
	nsx "$NS_L" ip link set lo up
	nsx "$NS_R" ip link set lo up
	nsx "$NS_L" ip addr add "$LEFT_HOST/32" dev lo
	nsx "$NS_R" ip addr add "$RIGHT_HOST/32" dev lo
	if [[ "$NAT" == 1 ]]; then
		ip netns add "$NS_N"
		nsx "$NS_N" ip link set lo up
		# veth ends are created directly inside the namespaces (no name clash
		# with the host or with other test runs)
		ip link add l-in netns "$NS_L" type veth peer name n-in netns "$NS_N"
		ip link add n-out netns "$NS_N" type veth peer name r-out netns "$NS_R"
		nsx "$NS_L" ip addr add "$LEFT_OUT/24" dev l-in
		nsx "$NS_N" ip addr add "$NAT_IN/24" dev n-in
		nsx "$NS_N" ip addr add "$NAT_OUT/24" dev n-out
		nsx "$NS_R" ip addr add "$RIGHT_OUT/24" dev r-out
		nsx "$NS_L" ip link set l-in up
		nsx "$NS_N" ip link set n-in up
		nsx "$NS_N" ip link set n-out up
		nsx "$NS_R" ip link set r-out up
		# left reaches the "internet" 203.0.113.0/24 only via the NAT box
		nsx "$NS_L" ip route add 203.0.113.0/24 via "$NAT_IN"
		# NAT box: forward + masquerade everything leaving n-out
		nsx "$NS_N" sysctl -qw net.ipv4.ip_forward=1
		# NAT_PORTS=remap: rewrite UDP source ports (500/4500 -> 40000-40999)
		local remap=""
		[[ "$NAT_PORTS" == remap ]] && remap='oifname "n-out" meta l4proto udp masquerade to :40000-40999 random'
		nsx "$NS_N" nft -f - <<EOF
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		$remap
		oifname "n-out" masquerade
	}
}
EOF
	else
		ip link add l-out netns "$NS_L" type veth peer name r-out netns "$NS_R"
		nsx "$NS_L" ip addr add "$LEFT_OUT/24" dev l-out
		nsx "$NS_R" ip addr add "$RIGHT_OUT/24" dev r-out
		nsx "$NS_L" ip link set l-out up
		nsx "$NS_R" ip link set r-out up
	fi
	if [[ "$BACKUP" == 1 ]]; then
		[[ "$NAT" == 0 ]] || die "BACKUP=1 needs NAT=0"
		ip netns add "$NS_B"
		nsx "$NS_B" ip link set lo up
		nsx "$NS_B" ip addr add "$RIGHT_HOST/32" dev lo
		ip link add l-bak netns "$NS_L" type veth peer name b-out netns "$NS_B"
		nsx "$NS_B" ip addr add "$BACKUP_OUT/24" dev b-out
		nsx "$NS_L" ip link set l-bak up
		nsx "$NS_B" ip link set b-out up
		# left keeps its one address; the backup is reached over l-bak by a host
		# route (more specific than the /24 on l-out), with left's address as source
		nsx "$NS_L" ip route add "$BACKUP_OUT/32" dev l-bak src "$LEFT_OUT"
		nsx "$NS_B" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
		nsx "$NS_B" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	fi
	# Decrypted packets arrive on the TUN device; make sure strict reverse
	# path filtering does not drop them.
	local ns
	# IPv6 is switched off in all namespaces: nothing here uses it, and link-
	# local router solicitations would otherwise show up in logs/captures.
	for ns in "$NS_L" "$NS_R"; do
		nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
	done
	for ns in "$NS_L" "$NS_R" $([[ "$NAT" == 1 ]] && echo "$NS_N"); do
		nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	done
	log "topology up (NAT=$NAT BACKUP=$BACKUP) in $(since "$t0") s"
}

# ------------------------------------------------------------ charon start --
# start_charon <instance>: starts charon in its namespace, waits for VICI,
# loads the swanctl config.
start_charon() {
	local inst=$1 ns d pid t0 i
	ns=$(ns_of "$inst"); d="$STATE/$inst"
	[[ -z "$(charon_pid "$inst")" ]] || die "charon for $inst already running (pid $(charon_pid "$inst"))"
	rm -f "$d/run/charon.pid" "$d/charon.vici"
	t0=$(now)
	# `ip netns exec` unshares a mount namespace (slave propagation); inside
	# it we bind-mount $d/run over /run so /var/run/charon.pid is per
	# instance.  `exec` keeps one process: the pid in $d/run/charon.pid.
	# setsid+nohup: charon survives this script and ignores our terminal.
	STRONGSWAN_CONF="$d/strongswan.conf" setsid nohup ip netns exec "$ns" \
		sh -c 'mount --bind "$1" /run && exec "$2"' \
		sh "$d/run" "$CHARON" > "$d/charon.stdout" 2>&1 < /dev/null &
	# wait (bounded) until the VICI socket answers
	for i in $(seq 1 100); do
		if [[ -S "$d/charon.vici" ]] && sw "$inst" --stats > /dev/null 2>&1; then break; fi
		sleep 0.1
	done
	pid=$(charon_pid "$inst")
	[[ -n "$pid" ]] || { tail -20 "$d/charon.stdout" "$d/charon.log" >&2 || true; die "charon for $inst did not start"; }
	log "charon[$inst] pid $pid up in $(since "$t0") s"
	t0=$(now)
	sw "$inst" --load-all --noprompt > "$d/load-all.out" 2>&1 || { cat "$d/load-all.out" >&2; die "swanctl --load-all failed for $inst"; }
	log "charon[$inst] config loaded in $(since "$t0") s"
}

# stop_charon <instance>...: SIGTERM all given charons at once (a charon
# needs ~1-2 s to shut down: it deletes its SAs, sending DELETEs), wait up to
# 5 s, then SIGKILL.  Only PIDs from our own pid files are signalled.
stop_charon() {
	local inst pid i pids=() names=()
	for inst in "$@"; do
		pid=$(charon_pid "$inst")
		[[ -n "$pid" ]] || continue
		kill -TERM "$pid" 2>/dev/null || true
		pids+=("$pid"); names+=("$inst")
	done
	((${#pids[@]})) || return 0
	for i in $(seq 1 50); do
		local alive=0
		for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for i in "${!pids[@]}"; do
		pid=${pids[$i]}
		if [[ -d /proc/$pid ]]; then
			log "charon[${names[$i]}] pid $pid ignored SIGTERM, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "charon[${names[$i]}] pid $pid stopped"
	done
}

# --------------------------------------------------------------- commands --
cmd_install() {
	need_root
	local missing=() p t0
	for p in $PACKAGES; do dpkg -s "$p" > /dev/null 2>&1 || missing+=("$p"); done
	if ((${#missing[@]} == 0)); then log "all packages present"; return 0; fi
	t0=$(now)
	export DEBIAN_FRONTEND=noninteractive
	# no systemd here: policy-rc.d / invoke-rc.d refuse to start the
	# strongswan-starter service that the packages pull in -- that is fine,
	# we never use starter/ipsec.conf.
	timeout 600 apt-get update -qq
	timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}"
	log "installed ${missing[*]} in $(since "$t0") s"
	[[ -x "$CHARON" ]] || die "$CHARON missing"
	[[ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ]] || die "kernel-libipsec plugin missing"
}

cmd_down() {
	need_root
	stop_charon left right backup
	local ns
	for ns in "$NS_L" "$NS_R" "$NS_N" "$NS_B"; do
		# deleting a namespace also deletes the veth ends and nft tables in it
		if ns_exists "$ns"; then
			# refuse to leave processes of ours behind in the namespace
			local pids; pids=$(ip netns pids "$ns" 2>/dev/null || true)
			[[ -z "$pids" ]] || log "WARNING: processes still in $ns: $pids (not killed -- not ours?)"
			ip netns del "$ns" && log "deleted netns $ns"
		fi
	done
	rm -f "$STATE"/*/charon.vici
}

cmd_up() {
	need_root
	[[ -x "$CHARON" ]] || die "$CHARON not found -- run '$0 install' first"
	local t0; t0=$(now)
	cmd_down
	mkdir -p "$STATE"
	# remember the settings for later sub-commands
	cat > "$STATE/env" <<EOF
NS_PREFIX=$NS_PREFIX
NAT=$NAT
BACKUP=$BACKUP
LEFT=$LEFT
RIGHT=$RIGHT
IKE_PROPOSALS=$IKE_PROPOSALS
ESP_PROPOSALS=$ESP_PROPOSALS
DPD_DELAY=$DPD_DELAY
DPD_TIMEOUT=$DPD_TIMEOUT
DPD_ACTION=$DPD_ACTION
KEEPALIVE=$KEEPALIVE
AGGRESSIVE=${AGGRESSIVE:-no}
NAT_PORTS=$NAT_PORTS
TS_PROTO=${TS_PROTO:-}
RIGHT_REMOTE_ADDRS=$RIGHT_REMOTE_ADDRS
RIGHT_REMOTE_ID=$RIGHT_REMOTE_ID
RIGHT_IKE_PROPOSALS=$RIGHT_IKE_PROPOSALS
RIGHT_ESP_PROPOSALS=$RIGHT_ESP_PROPOSALS
LOG_DEFAULT=$LOG_DEFAULT
LOG_LEVELS=$LOG_LEVELS
RIGHT_LOCAL_TS=$RIGHT_LOCAL_TS
RIGHT_REMOTE_TS=$RIGHT_REMOTE_TS
PEER_TS=$PEER_TS
EOF
	printf '%s' "$RIGHT_PSK" > "$STATE/psk"     # the key the right peer expects
	topology_up
	if [[ "$RIGHT" == strongswan ]]; then
		# right: responder for whatever comes from left
		write_strongswan_conf right
		write_swanctl_conf right "$RIGHT_OUT" "$RIGHT_REMOTE_ADDRS" "$RIGHT_ID" "$RIGHT_REMOTE_ID" \
			"$RIGHT_LOCAL_TS" "$RIGHT_REMOTE_TS" "$RIGHT_IKE_PROPOSALS" "$RIGHT_ESP_PROPOSALS" "$RIGHT_PSK"
		start_charon right
	else
		# no stale log of an earlier run's right charon
		rm -f "$STATE/right/charon.log"
		log "RIGHT=$RIGHT: no charon in $NS_R -- start your responder there:"
		log "  ip netns exec $NS_R <your-ike> local=$RIGHT_OUT peer=$LEFT_AS_SEEN psk=\$(cat $STATE/psk)"
		log "  TS: $RIGHT_NET <-> $LEFT_NET (hosts $RIGHT_HOST, $LEFT_HOST on lo)"
	fi
	if [[ "$BACKUP" == 1 ]]; then
		# a second responder for the same protected network: the backup peer
		write_strongswan_conf backup
		write_swanctl_conf backup "$BACKUP_OUT" "$RIGHT_REMOTE_ADDRS" "$BACKUP_OUT" "$RIGHT_REMOTE_ID" \
			"$RIGHT_NET" "$LEFT_NET" "$RIGHT_IKE_PROPOSALS" "$RIGHT_ESP_PROPOSALS" "$RIGHT_PSK"
		start_charon backup
	fi
	if [[ "$LEFT" == strongswan ]]; then
		write_strongswan_conf left
		write_swanctl_conf left "$LEFT_OUT" "$RIGHT_OUT" "$LEFT_ID" "$RIGHT_ID" \
			"$LEFT_NET" "$RIGHT_NET" "$IKE_PROPOSALS" "$ESP_PROPOSALS" "$PSK"
		start_charon left
	else
		log "LEFT=$LEFT: no charon in $NS_L -- start your implementation there:"
		log "  ip netns exec $NS_L <your-ike> local=$LEFT_OUT peer=$RIGHT_OUT psk=\$(cat $STATE/psk)"
		log "  right accepts IKE: $RIGHT_IKE_PROPOSALS  ESP: $RIGHT_ESP_PROPOSALS"
		log "  TS: $LEFT_NET <-> $RIGHT_NET (hosts $LEFT_HOST, $RIGHT_HOST on lo)"
		log "  right sees you as $LEFT_AS_SEEN; capture on $NS_L:$L_IF or $NS_R:$R_IF"
	fi
	log "up done in $(since "$t0") s (state in $STATE)"
}

cmd_start() { need_root; start_charon "${1:?instance}"; }

cmd_initiate() {
	[[ "$LEFT" == strongswan ]] || die "LEFT=$LEFT: nothing to initiate with (use your implementation)"
	local t0 rc; t0=$(now)
	set +e
	sw left --initiate --child "$CHILD" --timeout "$TIMEOUT" > "$STATE/left/initiate.out" 2>&1
	rc=$?
	set -e
	cat "$STATE/left/initiate.out"
	log "initiate rc=$rc in $(since "$t0") s"
	return $rc
}

cmd_ping() {
	# bounded: 3 packets, 2 s per reply
	nsx "$NS_L" ping -c "${1:-3}" -W 2 -I "$LEFT_HOST" "$RIGHT_HOST"
}

cmd_status() {
	local inst ns
	echo "== settings: NAT=$NAT LEFT=$LEFT RIGHT=$RIGHT STATE=$STATE"
	for inst in left nat right backup; do
		ns=$(ns_of "$inst")
		ns_exists "$ns" || { echo "== $ns: (absent)"; continue; }
		echo "== $ns: addresses"
		nsx "$ns" ip -brief addr
		if [[ $inst != nat ]]; then
			echo "== $ns: charon pid: $(charon_pid "$inst")"
			[[ -n "$(charon_pid "$inst")" ]] && sw "$inst" --list-sas 2>&1 | sed 's/^/   /'
		fi
	done
}

cmd_swanctl() { local inst=${1:?instance}; shift; sw "$inst" "$@"; }

cmd_capture() {
	# capture <instance> <iface> <seconds> [pcap filter]
	local inst=${1:?instance} ifc=${2:?iface} secs=${3:-10} filter=${4:-udp port 500 or udp port 4500 or esp}
	local ns; ns=$(ns_of "$inst")
	command -v tshark > /dev/null || die "tshark not installed (apt-get install tshark)"
	mkdir -p "$STATE/pcap"
	local out
	out="$STATE/pcap/$inst-$ifc-$(date +%H%M%S).pcap"
	# -a duration bounds the time, -c the packet count, -q keeps it quiet;
	# the pcap is written with -w and dissected afterwards with -r.
	timeout $((secs + 10)) ip netns exec "$ns" tshark -q -i "$ifc" -f "$filter" -a "duration:$secs" -c 500 -w "$out" 2> /dev/null
	echo "$out"
}

cmd_dissect() {
	# one line per packet: no, time, src:port -> dst:port, protocol, length, info
	local f=${1:?pcap file}
	tshark -r "$f" -T fields -E separator=/t -e frame.number -e frame.time_relative \
		-e ip.src -e udp.srcport -e ip.dst -e udp.dstport -e _ws.col.Protocol \
		-e frame.len -e _ws.col.Info 2> /dev/null |
	awk -F'\t' '{printf "%4s %8.3f %15s:%-5s -> %15s:%-5s %-8s len=%-4s %s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9}'
}

cmd_keys() {
	# keys <instance>: print the key material charon logged (needs LOG_LEVELS
	# with ike=4 and chd=4) as "label hex", one line each, e.g.
	#   SKEYID bcb1bb4c...   encryption key Ka f0d7...   initial IV ef0c...
	#   encryption initiator key 17eb...   integrity responder key 9589...
	# (ike=3 adds HASH_I/HASH_R and their input "HASH_I data")
	local f="$STATE/${1:?instance}/charon.log"
	python3 - "$f" <<'PY'
import re, sys
label, buf, want = None, [], re.compile(
    r"(shared Diffie Hellman secret|SKEYID(_[dae])?|encryption key Ka|initial IV|"
    r"HASH_[IR]|(encryption|integrity) (initiator|responder) key|"
    r"(initiator|responder) SA seed|DH secret|natd_hash) => \d+ bytes")
def flush():
    if label: print(label, "".join(buf).lower())
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"\] (<[^>]*> )?(.*)$", line.rstrip("\n"))
    if not m: continue
    text = m.group(2)
    h = re.match(r"\s*\d+: ((?:[0-9A-F]{2} ){1,16})", text)
    if h and label:
        buf.append(h.group(1).replace(" ", "")); continue
    flush(); label, buf = None, []
    w = want.match(text)
    if w: label = text.split(" => ")[0]
flush()
PY
}

cmd_wait_child() {
	# wait (bounded) until <instance> has an INSTALLED CHILD_SA
	local inst=${1:?instance} secs=${2:-$TIMEOUT} i
	for i in $(seq 1 $((secs * 5))); do
		sw "$inst" --list-sas 2> /dev/null | grep -q INSTALLED && { log "$inst: CHILD_SA installed"; return 0; }
		sleep 0.2
	done
	log "$inst: no CHILD_SA after $secs s"; return 1
}

cmd_kill() {
	local inst=${1:?instance} pid
	pid=$(charon_pid "$inst")
	[[ -n "$pid" ]] || die "no charon running for $inst"
	kill -KILL "$pid"
	for _ in $(seq 1 20); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
	rm -f "$STATE/$inst/run/charon.pid" "$STATE/$inst/charon.vici"   # stale after SIGKILL
	log "SIGKILLed charon[$inst] pid $pid"
}

cmd_logs() { tail -n "${2:-40}" "$STATE/${1:?instance}/charon.log"; }

cmd_selftest() {
	local t0; t0=$(now)
	cmd_up
	cmd_initiate
	cmd_ping 3
	echo "== left SAs";  sw left --list-sas
	echo "== right SAs"; sw right --list-sas
	log "selftest OK in $(since "$t0") s"
}

cmd_clean() { cmd_down; rm -rf "$STATE"; log "removed $STATE"; }

main() {
	local c=${1:-}
	[[ -n "$c" ]] || { sed -n '/^# USAGE/,/^# TUNABLES/p' "$SELF" | sed 's/^#//'; exit 2; }
	shift
	case "$c" in
		install|up|down|clean|start|initiate|ping|status|swanctl|capture|dissect|keys|kill|logs|selftest)
			"cmd_$c" "$@";;
		wait-child) cmd_wait_child "$@";;
		*) die "unknown command '$c' (try without arguments for help)";;
	esac
}
main "$@"
