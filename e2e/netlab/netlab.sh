#!/bin/sh
# The network lab: an "internet" and home networks behind NAT routers, all in network
# namespaces this script makes and removes again (also when the command fails or is
# interrupted). Nothing leaves the machine: the internet is 203.0.113.0/24 (TEST-NET-3)
# on a bridge inside its own namespace, the homes are 10.0.N.0/24 behind their routers.
#
#   e2e/netlab/netlab.sh COMMAND [ARG...]
#
# COMMAND runs inside the internet namespace, as the duet host 203.0.113.10 (so a duet it
# starts is on the internet, and it can reach it there). The homes:
#
#   home   router (WAN address)   NAT
#   eim1   203.0.113.21           endpoint-independent mapping (nftables masquerade,
#   eim2   203.0.113.22             which keeps the source port: a typical home router)
#   sym1   203.0.113.31           address-and-port-dependent mapping (masquerade
#   sym2   203.0.113.32             fully-random: a new port per destination, as many
#                                   mobile carriers)
#   block  203.0.113.41           as eim, and its firewall drops all UDP and all TCP
#                                   except to port 443 (hotel, corporate network)
#
# For each home the command gets an executable that runs Chromium inside it:
# $NETLAB_DIR/chromium-<home> (Playwright's executablePath: `ip netns exec` keeps the
# debugging pipe's descriptors). Environment for the command: NETLAB_DIR,
# NETLAB_DUET_IP, NETLAB_HOMES.
set -eu

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARG...]" >&2
  exit 2
fi
for tool in ip nft; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "netlab: $tool is missing (apt-get install iproute2 nftables; scripts/test does)" >&2
    exit 1
  }
done

CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
# Short, unique names: a lab per process, so two runs never share a namespace.
P="nl$$"
INET="${P}-inet"
DUET_IP=203.0.113.10
DIR=$(mktemp -d "${TMPDIR:-/tmp}/duet-netlab.XXXXXX")
MADE=""

teardown() {
  status=$?
  trap - EXIT INT TERM
  for ns in $MADE; do
    # Processes still in a namespace keep it alive: end them (they are this lab's own).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$DIR"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

netns() {
  ip netns add "$1"
  MADE="$1 $MADE"
  ip -n "$1" link set lo up
}

# The internet: one bridge, the duet host's address on it.
netns "$INET"
ip -n "$INET" link add br0 type bridge
ip -n "$INET" addr add "$DUET_IP/24" dev br0
ip -n "$INET" link set br0 up

# home NAME INDEX WAN_IP MODE: a router on the internet and a home behind it.
home() {
  name=$1 idx=$2 wan=$3 mode=$4
  r="${P}-r$idx" h="${P}-h$idx"
  netns "$r"
  netns "$h"
  # router WAN <-> internet bridge
  ip link add "${P}w$idx" type veth peer name "${P}W$idx"
  ip link set "${P}w$idx" netns "$r"
  ip link set "${P}W$idx" netns "$INET"
  ip -n "$INET" link set "${P}W$idx" master br0 up
  ip -n "$r" link set "${P}w$idx" name wan up
  ip -n "$r" addr add "$wan/24" dev wan
  # router LAN <-> home
  ip link add "${P}l$idx" type veth peer name "${P}L$idx"
  ip link set "${P}l$idx" netns "$r"
  ip link set "${P}L$idx" netns "$h"
  ip -n "$r" link set "${P}l$idx" name lan up
  ip -n "$r" addr add "10.0.$idx.1/24" dev lan
  ip -n "$h" link set "${P}L$idx" name eth0 up
  ip -n "$h" addr add "10.0.$idx.2/24" dev eth0
  ip -n "$h" route add default via "10.0.$idx.1"
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
  case $mode in
    eim) nat="masquerade" ;;
    sym) nat="masquerade fully-random" ;;
    block) nat="masquerade" ;;
  esac
  # Like a real router's firewall, drop what nobody inside asked for. Dropped in the
  # filter hook, the packet leaves no conntrack entry behind; an unanswered entry would
  # make masquerade pick another port for the home's own packets to that peer (a clash
  # with the entry's reply direction), which breaks the endpoint-independent mapping
  # that hole punching needs.
  forward=""
  if [ "$mode" = block ]; then
    forward='iifname "lan" meta l4proto udp drop
    iifname "lan" tcp dport != 443 drop'
  fi
  ip netns exec "$r" nft -f - <<EOF
table ip nat {
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    oifname "wan" $nat
  }
}
table inet fw {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "wan" ct state new drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "wan" ct state new drop
    $forward
  }
}
EOF
  cat >"$DIR/chromium-$name" <<EOF
#!/bin/sh
exec ip netns exec $h $CHROMIUM "\$@"
EOF
  chmod +x "$DIR/chromium-$name"
}

home eim1 1 203.0.113.21 eim
home eim2 2 203.0.113.22 eim
home sym1 3 203.0.113.31 sym
home sym2 4 203.0.113.32 sym
home block 5 203.0.113.41 block

export NETLAB_DIR="$DIR" NETLAB_DUET_IP="$DUET_IP" NETLAB_HOMES="eim1 eim2 sym1 sym2 block"
# Not exec: the trap must run after the command.
ip netns exec "$INET" "$@"
