"""Issue 4, done when: a throwaway Debian 12 host (make lab-up) converges under `make provision`, a second run changes
nothing, the hardened host runs the copier (dry run, against the simulator on the lab host) under supervisord, and
make lab-down leaves nothing behind. Needs root (network namespace, systemd-nspawn); takes a few minutes.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import yaml
from lab import (
    HOST_IP,
    LAB_DIR,
    LAB_IP,
    REPO,
    LabFootprint,
    LabShell,
    eventually,
    head_commit,
    lab_vault,
    make,
    provision,
)

pytestmark = pytest.mark.slow

SINK_SCRIPT = r"""
import gzip, http.server, sys

class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with open(sys.argv[2], "ab") as out:
            out.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""
SINK_FILE = "/run/lab-sentry-sink.envelopes"


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("the lab host needs root: network namespaces and systemd-nspawn")
    up = make("lab-up")
    try:
        assert up.returncode == 0, f"make lab-up failed:\n{up.stdout}\n{up.stderr}"
        yield LabFootprint.capture()
    finally:
        make("lab-down")  # test_lab_down_leaves_nothing_behind asserts on its result; this is the safety net


@pytest.fixture(scope="module")
def commit(lab) -> str:
    """The commit every provisioning run deploys (others may commit in a shared checkout meanwhile)."""
    return head_commit()


@pytest.fixture(scope="module")
def runs(commit):
    """Two provisioning runs, back to back."""
    return provision(commit), provision(commit)


@pytest.fixture(scope="module")
def shell(runs) -> LabShell:
    first, _ = runs
    assert first.returncode == 0, f"provisioning failed, nothing to inspect:\n{first.output[-4000:]}"
    return LabShell()


def test_provision_converges_then_changes_nothing(runs):
    first, second = runs
    assert first.returncode == 0, first.output[-4000:]
    recap = first.recap()
    assert set(recap) == {"copier-lab"}, recap
    assert recap["copier-lab"]["failed"] == 0 and recap["copier-lab"]["unreachable"] == 0
    assert recap["copier-lab"]["changed"] > 0, "a bare host must have needed changes"

    assert second.returncode == 0, second.output[-4000:]
    again = second.recap()["copier-lab"]
    assert again["failed"] == 0 and again["unreachable"] == 0
    assert again["changed"] == 0, f"second run changed: {second.changed_tasks()}"


def test_copier_runs_in_dry_run_against_the_lab_simulator(shell):
    eventually(lambda: shell.program_state("copier")[0] == "RUNNING", timeout=30, what="copier RUNNING")
    assert shell.program_state("polysim")[0] == "RUNNING"
    assert shell.program_state("copier-alerts")[0] == "RUNNING"

    config = yaml.safe_load(shell.sudo("cat /etc/copier/copier.yaml"))
    assert config["execution"]["dry_run"] is True
    assert config["endpoints"]["clob"] == "http://127.0.0.1:18000"
    assert config["endpoints"]["rtds_ws"] == "ws://127.0.0.1:18003/"

    # The running bot is connected to the simulator's feeds and beating (its store's heartbeat, via the CLI).
    def healthy():
        status = json.loads(shell.out("sudo -u copier /opt/copier/current/venv/bin/copier status "
                                      "--config /etc/copier/copier.yaml --json"))
        beat = status.get("heartbeat") or {}
        now = float(shell.out("date +%s.%N"))
        feeds = beat.get("feeds", [])
        return (now - beat.get("ts", 0) < 15 and feeds and all(f["connected"] and f["frames"] > 0 for f in feeds)
                and status)
    status = eventually(healthy, timeout=60, interval=2, what="a fresh heartbeat with connected, live feeds")
    assert status["halted"] is False


def test_bad_config_never_replaces_the_running_one(shell, commit):
    before = shell.sudo("sha256sum /etc/copier/copier.yaml")
    state, detail = shell.program_state("copier")
    assert state == "RUNNING"
    failed = provision(commit, "PROVISION_ARGS=-e copier_max_clock_offset_ms=soon")
    assert failed.returncode != 0
    assert "telemetry.max_clock_offset_ms: expected a number" in failed.output
    assert shell.sudo("sha256sum /etc/copier/copier.yaml") == before
    assert shell.program_state("copier")[0] == "RUNNING"
    assert shell.program_state("copier")[1].split(",")[0] == detail.split(",")[0], "the copier was restarted"


def test_sshd_allows_only_key_logins_by_the_deploy_user(shell):
    effective = dict(line.split(" ", 1) for line in shell.sudo("sshd -T").splitlines() if " " in line)
    # lab-up left a provider drop-in with "PermitRootLogin yes" and "PasswordAuthentication yes": it must lose.
    assert "PermitRootLogin yes" in shell.sudo("cat /etc/ssh/sshd_config.d/00-provider.conf")
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["allowusers"] == "deploy"
    defaults = yaml.safe_load((REPO / "roles/base/defaults/main.yml").read_text())
    assert effective["ciphers"] == ",".join(defaults["base_ssh_ciphers"])
    assert effective["kexalgorithms"] == ",".join(defaults["base_ssh_kex_algorithms"])

    def login(user: str, *opts: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ControlPath=none", "-o", "IdentitiesOnly=yes",
                               "-o", f"UserKnownHostsFile={LAB_DIR / 'known_hosts'}", "-i", str(LAB_DIR / "id_ed25519"),
                               *opts, f"{user}@{LAB_IP}", "true"], capture_output=True, text=True, timeout=30)
    assert login("deploy").returncode == 0
    # Root holds the same key (the provider put it there), and is refused anyway.
    assert login("root").returncode != 0
    # Offered methods, as the server lists them to a client that tries none: publickey only, no password.
    refused = login("deploy", "-o", "PreferredAuthentications=none")
    assert "Permission denied (publickey)." in refused.stderr, refused.stderr

    # Forwarding reaches the localhost metrics API (how an operator reads it) and nothing else.
    assert effective["allowtcpforwarding"] == "local" and effective["permitopen"] == "127.0.0.1:19999"

    def forward(target: str) -> subprocess.CompletedProcess:  # its own connection: sshd decides on this channel
        return subprocess.run(["ssh", "-o", "ControlPath=none", *shell.base[1:-1], "-W", target, shell.base[-1]],
                              input="GET /api/v1/info HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=30)
    assert forward("127.0.0.1:19999").stdout.startswith("HTTP/1.1 200")
    denied = forward("127.0.0.1:18000")
    assert denied.returncode != 0 and "administratively prohibited" in denied.stderr, denied.stderr


def test_copier_user_has_no_shell_no_password_no_sudo(shell):
    assert shell.out("getent passwd copier").strip().endswith(":/usr/sbin/nologin")
    assert shell.sudo("passwd -S copier").split()[1] == "L"
    assert "is not allowed to run sudo" in shell.sudo("sudo -l -U copier")


def test_host_runs_utc_with_security_updates_unattended(shell):
    assert shell.out("timedatectl show -p Timezone --value").strip() == "Etc/UTC"
    apt = shell.out("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in apt
    patterns = [line for line in apt.splitlines() if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
    assert patterns and all("label=Debian-Security" in line for line in patterns), patterns
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in apt


def test_network_sysctls_are_applied(shell):
    sysctls = yaml.safe_load((REPO / "roles/net_tuning/defaults/main.yml").read_text())["net_tuning_sysctls"]
    per_namespace = [s for s in sysctls if not s.get("host_wide")]
    live = shell.out("/usr/sbin/sysctl -n " + " ".join(s["name"] for s in per_namespace)).splitlines()
    assert [" ".join(v.split()) for v in live] == [s["value"] for s in per_namespace]
    # The machine-wide ones cannot be set from the lab's namespace (inventories/lab): the drop-in documents them.
    dropin = shell.out("cat /etc/sysctl.d/60-copier-net.conf")
    for s in sysctls:
        assert f"# {s['why']}\n{s['name']} = {s['value']}\n" in dropin


def test_firewall_denies_by_default(shell):
    ruleset = json.loads(shell.sudo("nft -j list chains"))["nftables"]
    chains = {c["chain"]["name"]: c["chain"] for c in ruleset if "chain" in c and c["chain"]["table"] == "filter"}
    assert chains["input"]["hook"] == "input" and chains["input"]["policy"] == "drop"
    assert chains["output"]["policy"] == "drop"
    assert shell.out("systemctl is-enabled nftables").strip() == "enabled"

    # Inbound: a service listening on every address of the lab is reachable from the lab itself, not from outside.
    shell.sudo("systemd-run --unit=lab-probe-listener --quiet /usr/bin/python3 -m http.server 18099 --bind 0.0.0.0")
    try:
        eventually(lambda: shell.run(f"python3 -c 'import socket; socket.create_connection((\"{LAB_IP}\", 18099), 2)'")
                   .returncode == 0, timeout=15, what="the probe listener inside the lab")
        with pytest.raises(TimeoutError):  # dropped, not refused: default deny
            socket.create_connection((LAB_IP, 18099), timeout=3).close()
        socket.create_connection((LAB_IP, 22), timeout=3).close()  # SSH stays open
    finally:
        shell.sudo("systemctl stop lab-probe-listener")

    # Outbound: HTTPS is allowed, any other port is dropped. Both listeners are on this machine's end of the veth.
    def reach(port: int) -> subprocess.CompletedProcess:
        probe = f"import socket; socket.create_connection(('{HOST_IP}', {port}), 3)"
        return shell.run(f"python3 -c {shlex.quote(probe)}")
    with socket.create_server((HOST_IP, 443)), socket.create_server((HOST_IP, 0)) as other:
        assert reach(443).returncode == 0, "HTTPS out must be allowed"
        blocked = reach(other.getsockname()[1])
        assert blocked.returncode != 0 and "TimeoutError" in blocked.stderr, blocked.stderr


def test_chrony_runs_with_nts_sources_and_answers_the_copier(shell):
    assert shell.out("systemctl is-active chrony").strip() == "active"
    sources = shell.out("chronyc -N sources -a")
    defaults = yaml.safe_load((REPO / "roles/time_sync/defaults/main.yml").read_text())
    for server in [*defaults["time_sync_nts_servers"], defaults["time_sync_pool"]]:
        assert server in sources
    assert "nts" in shell.out("grep -E '^server ' /etc/chrony/chrony.conf")
    # The lab has no CAP_SYS_TIME (inventories/lab): chronyd measures and serves, never sets the clock.
    assert " -x" in shell.out("ps -o args= -C chronyd")
    # The copier's clock check (ntplib against 127.0.0.1) gets an answer from chronyd.
    probe = "import ntplib; print(ntplib.NTPClient().request('127.0.0.1', timeout=3).offset)"
    assert abs(float(shell.out(f"/opt/copier/current/venv/bin/python -c {shlex.quote(probe)}"))) < 1.0
    # The offset check reports the lab's truth: no reachable time source, so not synchronised.
    check = shell.run("check-clock-offset")
    assert check.returncode == 2 and "not synchronised" in check.stdout, check


def test_metrics_sink_listens_on_localhost_and_serves_copier_metrics(shell):
    listening = shell.sudo("ss -Hlntu")
    statsd = [line.split()[4] for line in listening.splitlines() if line.split()[4].endswith(":8125")]
    web = [line.split()[4] for line in listening.splitlines() if line.split()[4].endswith(":19999")]
    assert statsd == ["127.0.0.1:8125"] and web == ["127.0.0.1:19999"], listening

    # Timer percentiles: feed a timer the copier emits, then read its chart back in Prometheus format.
    feed = ("import socket, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(15):\n"
            "    for ms in range(1, 21):\n"
            "        s.sendto(b'copier.stage.decide_ms:%d|ms' % ms, ('127.0.0.1', 8125))\n"
            "    time.sleep(0.2)\n")
    shell.out(f"python3 -c {shlex.quote(feed)}")
    fetch = ("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:19999/api/v1/allmetrics"
             "?format=prometheus&help=no&types=no').read().decode())")

    def metrics():
        text = shell.out(f"python3 -c {shlex.quote(fetch)}")
        return text if 'chart="copier.stages"' in text and 'chart="copier.queues"' in text else None
    text = eventually(metrics, timeout=30, interval=2, what="copier charts in the Prometheus output")
    decide = [line for line in text.splitlines() if 'chart="copier.stages"' in line and 'dimension="decide"' in line]
    assert decide and float(decide[0].split()[-2]) > 0, decide
    # The running copier's own gauges arrive too.
    assert any('chart="copier.queues"' in line for line in text.splitlines())


def test_env_file_is_0600_and_owned_by_copier(shell):
    assert shell.sudo("stat -c '%a %U %G' /etc/copier/copier.env").split() == ["600", "copier", "copier"]


def test_unexpected_exit_is_restarted_and_alerted_to_sentry(shell):
    dsn = urlsplit(lab_vault()["copier_vault_sentry_dsn"])
    shell.out("cat > /tmp/lab_sentry_sink.py", input=SINK_SCRIPT)
    shell.sudo(f"rm -f {SINK_FILE}; systemd-run --unit=lab-sentry-sink --quiet "
               f"/usr/bin/python3 /tmp/lab_sentry_sink.py {dsn.port} {SINK_FILE}")
    try:
        eventually(lambda: shell.out(f"ss -Hltn 'sport = :{dsn.port}'").strip(), timeout=15,
                   what="the Sentry sink listening")
        pid = shell.sudo("supervisorctl pid copier").strip()
        shell.sudo(f"kill -KILL {pid}")
        alerts = eventually(lambda: shell.run(f"cat {SINK_FILE}").stdout, timeout=30,
                            what="an alert envelope at the Sentry sink")
        assert "exited unexpectedly" in alerts
        eventually(lambda: (lambda s: s[0] == "RUNNING" and f"pid {pid}," not in s[1])(shell.program_state("copier")),
                   timeout=30, what="the copier restarted by supervisord")
    finally:
        shell.sudo("systemctl stop lab-sentry-sink")


def test_kill_switch_stops_the_copier_and_it_stays_stopped(shell):
    assert shell.program_state("copier")[0] == "RUNNING"
    assert shell.sudo("supervisorctl stop copier").strip() == "copier: stopped"
    # Drained and exited by itself (exit 0 after SIGTERM), inside stopwaitsecs: not killed.
    assert "stopped: copier (exit status 0)" in shell.sudo("tail -n 20 /var/log/supervisor/supervisord.log")
    # Stays stopped: watched over a few seconds (longer than supervisord's restart delay), no restart, no process.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert shell.program_state("copier")[0] == "STOPPED"
        assert shell.run("pgrep -u copier -f 'copier run'").returncode == 1
        time.sleep(1)


def test_no_secret_value_reaches_any_log(shell):
    vault = lab_vault()
    secrets = [v for v in vault.values() if v]
    secrets.append(urlsplit(vault["copier_vault_sentry_dsn"]).username)  # the DSN's key on its own
    patterns = "\n".join(secrets) + "\n"
    # The patterns go through stdin: on a command line, sudo would log them itself.
    found = shell.run("sudo grep -rlF -f - /etc/copier/copier.env", input=patterns)
    assert found.returncode == 0, "the scan must find the secrets where they are stored"
    in_files = shell.run("sudo grep -rlaF -f - /var/log", input=patterns)
    assert in_files.returncode == 1, f"secrets in: {in_files.stdout}{in_files.stderr}"
    # The journal stores long fields compressed: search its decoded text as well.
    def journal_matches(lines: str) -> int:
        done = shell.run("sudo sh -c 'p=$(mktemp); cat >\"$p\"; journalctl --no-pager -o cat | grep -caF -f \"$p\";"
                         " rm -f \"$p\"'", input=lines)
        return int(done.stdout.strip())
    assert journal_matches("Invoked with\n") > 0, "the search must see what is there: Ansible's module log"
    assert journal_matches(patterns) == 0, "a secret reached the journal"


def test_lab_down_leaves_nothing_behind(lab):
    down = make("lab-down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert lab.leftovers() == []
