"""Drive the lab host from tests: make targets, provisioning runs, SSH commands, and what the lab leaves behind."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import support
import yaml

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = REPO / "var" / "lab"
VAULT_PASSWORD_FILE = Path(__file__).with_name("lab-vault-password")
LAB_INVENTORY = REPO / "inventories" / "lab"


def _settings() -> dict[str, str]:
    """The lab's names and addresses, from the file the lab scripts source."""
    text = (REPO / "ansible" / "lab" / "settings.sh").read_text()
    return dict(re.findall(r"^(lab_\w+)=([\w.:]+)$", text, re.MULTILINE))


SETTINGS = _settings()
LAB_IP = SETTINGS["lab_ip"]
HOST_IP = SETTINGS["lab_host_ip"]
LAB_IP6 = SETTINGS["lab_ip6"]
HOST_IP6 = SETTINGS["lab_host_ip6"]
VETH = SETTINGS["lab_veth"] + "0"

RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


def make(target: str, *args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), target, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False)


@dataclass(frozen=True)
class Provisioning:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                for m in RECAP.finditer(self.output)}

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (for a readable failure)."""
        tasks, current = [], None
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.rstrip("* ")
            elif line.startswith("changed:") and current and current not in tasks:
                tasks.append(current)
        return tasks


def _extra_vars_file(extra: dict) -> Path:
    """Extra variables for ansible-playbook as a file (-e @file): typed values, no shell quoting through make."""
    path = LAB_DIR / f"extra-vars-{hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:12]}.json"
    path.write_text(json.dumps(extra))
    return path


def provision(commit: str, *args: str, extra: dict | None = None) -> Provisioning:
    """`make provision INVENTORY=inventories/lab` of the copier at a commit, the vault password from the test's file;
    args go to ansible-playbook (--check, --tags ...), extra becomes its extra variables."""
    playbook_args = [*args, *(["-e", f"@{_extra_vars_file(extra)}"] if extra else [])]
    done = make("provision", "INVENTORY=inventories/lab", f"PROVISION_ARGS={' '.join(playbook_args)}",
                env={"ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASSWORD_FILE), "ANSIBLE_NOCOLOR": "1",
                     "COPIER_REF": commit})
    return Provisioning(done.returncode, done.stdout + done.stderr)


def baseline() -> Provisioning:
    """ansible/baseline.yml against the lab host: the read-only hardening check an operator runs."""
    done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(LAB_INVENTORY),
                           str(REPO / "ansible" / "baseline.yml")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
                               "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASSWORD_FILE), "ANSIBLE_NOCOLOR": "1"},
                          check=False)
    return Provisioning(done.returncode, done.stdout + done.stderr)


def release_commit(base: str) -> str:
    """A commit object whose worker/ differs from base's by one module, so it builds another release id; no branch
    or index of the checkout moves (a temporary index, `git commit-tree`)."""
    def git(*args: str, stdin: str | None = None, env: dict | None = None) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], input=stdin, capture_output=True, text=True,
                              check=True, env={**os.environ, **(env or {})}).stdout.strip()
    index = {"GIT_INDEX_FILE": str(LAB_DIR / "release-index")}
    git("read-tree", base, env=index)
    blob = git("hash-object", "-w", "--stdin", stdin="# A release that differs from its parent by this file only.\n")
    git("update-index", "--add", "--cacheinfo", f"100644,{blob},worker/copier/_lab_release.py", env=index)
    tree = git("write-tree", env=index)
    who = {"GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@localhost", "GIT_COMMITTER_NAME": "lab",
           "GIT_COMMITTER_EMAIL": "lab@localhost"}
    return git("commit-tree", tree, "-p", base, "-m", "lab: another release", env=who)


def head_commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def lab_vault() -> dict[str, str]:
    """The lab vault's values, decrypted with the test's password."""
    out = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-vault"), "view", "--vault-password-file",
                          str(VAULT_PASSWORD_FILE), str(LAB_INVENTORY / "group_vars" / "copier_hosts" / "vault.yml")],
                         capture_output=True, text=True, check=True, timeout=60)
    return yaml.safe_load(out.stdout)


class LabShell:
    """Commands on the lab host over SSH, as the deploy user, sharing one connection (closed by lab-down)."""

    def __init__(self, address: str = LAB_IP) -> None:
        self.base = ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                     "-o", f"UserKnownHostsFile={LAB_DIR / 'known_hosts'}", "-o", "ConnectTimeout=5",
                     "-o", f"ControlPath={LAB_DIR}/ssh-%r@%h:%p", "-o", "ControlMaster=auto", "-o", "ControlPersist=60",
                     "-i", str(LAB_DIR / "id_ed25519"), f"deploy@{address}"]

    def run(self, command: str, *, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, command], input=input, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def out(self, command: str, **kw) -> str:
        """stdout of a command that must succeed."""
        done = self.run(command, **kw)
        assert done.returncode == 0, f"{command!r} exited {done.returncode}: {done.stderr.strip()}"
        return done.stdout

    def sudo(self, command: str, **kw) -> str:
        return self.out(f"sudo sh -c {shlex.quote(command)}", **kw)

    def fingerprint(self) -> dict[str, str]:
        """Hashes of everything provisioning could change: /etc, /opt, /usr/local and the deploy user's keys (paths,
        modes, owners, contents), installed packages, enabled units and the roles' services, the nftables rules
        (without the SSH meter's dynamic entries) and the kernel settings the roles manage."""
        names = [s["name"] for role in ("net_tuning", "hardening")
                 for s in yaml.safe_load((REPO / f"roles/{role}/defaults/main.yml").read_text())[f"{role}_sysctls"]]
        return json.loads(self.sudo(f"python3 - {' '.join(names)}", input=FINGERPRINT))

    def program_state(self, name: str) -> tuple[str, str]:
        """(state, rest) of a supervisord program, e.g. ("RUNNING", "pid 123, uptime 0:01:02")."""
        parts = self.run(f"sudo supervisorctl status {name}").stdout.split(None, 2)
        return (parts[1] if len(parts) > 1 else "", parts[2].strip() if len(parts) > 2 else "")


FINGERPRINT = r"""
import hashlib, json, os, subprocess, sys

def tree(root):
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{p} {st.st_mode:o} {st.st_uid} {st.st_gid}".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()

def run(*cmd):
    return hashlib.sha256(subprocess.run(cmd, capture_output=True, check=False).stdout).hexdigest()

out = {r: tree(r) for r in ("/etc", "/opt", "/usr/local", "/home/deploy/.ssh") if os.path.exists(r)}
out["packages"] = run("dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\n")
# Enabled units and the roles' services (timer-driven jobs such as apt-daily come and go by themselves).
out["services"] = run("sh", "-c", "systemctl list-unit-files --state=enabled --no-legend --no-pager; "
                      "systemctl is-active ssh chrony nftables netdata supervisor")
out["nftables"] = run("nft", "-t", "list", "ruleset") if os.path.exists("/usr/sbin/nft") else "none"
out["sysctl"] = run("sysctl", "-e", *sys.argv[1:])
print(json.dumps(out))
"""


def _links(paths) -> set[str]:
    """Targets of the symlinks that still exist (processes and their descriptors come and go while we look)."""
    targets = set()
    for path in paths:
        try:
            targets.add(os.readlink(path))
        except OSError:
            pass
    return targets


@dataclass(frozen=True)
class LabFootprint:
    """What identifies the running lab on this machine, to prove later that none of it survived lab-down."""
    nspawn_pid: int
    namespaces: frozenset[str]

    @classmethod
    def capture(cls) -> LabFootprint:
        pid = int((LAB_DIR / "nspawn.pid").read_text())
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        kinds = ("net", "pid", "mnt")
        ours = {os.readlink(f"/proc/self/ns/{kind}") for kind in kinds}
        namespaces = {os.readlink(f"/proc/{child}/ns/{kind}") for child in children for kind in kinds} - ours
        assert len(namespaces) == len(kinds), f"the lab container's namespaces are not its own: {namespaces}"
        return cls(pid, frozenset(namespaces))

    def leftovers(self) -> list[str]:
        left = []
        exe = Path(f"/proc/{self.nspawn_pid}/exe")
        if exe.exists() and os.readlink(exe).endswith("systemd-nspawn"):
            left.append(f"systemd-nspawn process {self.nspawn_pid}")
        # A namespace lives on while a process is in it, holds it open, or a mount pins it.
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    fds = list((proc / "fd").iterdir())
                except OSError:
                    fds = []  # the process ended while we looked
                held = _links([proc / "ns" / kind for kind in ("net", "pid", "mnt")] + fds)
                left += [f"process {proc.name} holds {ns}" for ns in sorted(held & self.namespaces)]
        inodes = {int(ns.split("[")[1].rstrip("]")) for ns in self.namespaces}
        for line in Path("/proc/mounts").read_text().splitlines():
            fstype, mountpoint = line.split()[2], line.split()[1]
            if fstype == "nsfs" and os.stat(mountpoint).st_ino in inodes:
                left.append(f"namespace mount {mountpoint}")
        if subprocess.run(["ip", "link", "show", VETH], capture_output=True, check=False).returncode == 0:
            left.append(f"veth {VETH}")
        left += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
                 if str(LAB_DIR) in line]
        left += [f"SSH control socket {p}" for p in LAB_DIR.glob("ssh-*")]
        if (LAB_DIR / "root").exists():
            left.append(f"root filesystem {LAB_DIR / 'root'}")
        return left


def eventually(cond, timeout: float, interval: float = 0.5, what: str = "condition"):
    """support.eventually at SSH pace: every poll is a round trip to the lab host."""
    return support.eventually(cond, timeout, interval, what)
