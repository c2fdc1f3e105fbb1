# Sourced by lab-up, lab-down and build-root: where the lab lives and how it is reached.
# inventories/lab/hosts.yml holds the same address (tests/ansible checks that they agree).
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
lab="$repo/var/lab"
# The veth pair ${lab_veth}0 (this machine's end) / ${lab_veth}1 (the lab's eth0), on a private /30 used by nothing
# else on this machine.
lab_veth=copierlab
lab_host_ip=10.213.7.1
lab_ip=10.213.7.2
lab_prefix=30
# IPv6 too, as a VPS has it: a unique-local /64 on the same pair.
lab_host_ip6=fd7c:213:7::1
lab_ip6=fd7c:213:7::2
lab_prefix6=64
# Debian mirrors for the root filesystem; override to use a closer mirror.
lab_mirror="${LAB_MIRROR:-http://deb.debian.org/debian}"
lab_security_mirror="${LAB_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
