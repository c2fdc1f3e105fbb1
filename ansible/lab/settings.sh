# Sourced by lab-up, lab-down and build-root: where the lab lives and how it is reached.
# inventories/lab/hosts.yml holds the same address (tests/ansible checks that they agree).
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
lab="$repo/var/lab"
# The host end of the veth pair is ${lab_ns}0; the pair carries a private /30 used by nothing else on this machine.
lab_ns=copierlab
lab_host_ip=10.213.7.1
lab_ip=10.213.7.2
lab_prefix=30
# Debian mirrors for the root filesystem; override to use a closer mirror.
lab_mirror="${LAB_MIRROR:-http://deb.debian.org/debian}"
lab_security_mirror="${LAB_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
