"""Fast checks of the Ansible bundle that lint cannot make: documented defaults, secrets kept out of output, the
offline lab's package cache, metric names that exist in the copier, and deployment templates the copier accepts."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from lab import LAB_IP, REPO, VAULT_PASSWORD_FILE

ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
MODULE_KEYS = {"name", "when", "loop", "loop_control", "notify", "listen", "register", "no_log", "become",
               "become_user", "changed_when", "failed_when", "tags", "vars", "delegate_to", "run_once", "args",
               "check_mode"}
SITE = yaml.safe_load((REPO / "ansible/site.yml").read_text())


def role_tasks(role: Path) -> list[tuple[str, dict]]:
    """(file, task) for every task and handler of a role."""
    out = []
    for path in sorted([*role.glob("tasks/*.yml"), *role.glob("handlers/*.yml")]):
        out += [(str(path.relative_to(REPO)), task) for task in yaml.safe_load(path.read_text()) or []]
    return out


def module_of(task: dict) -> tuple[str, object]:
    (name,) = [k for k in task if k not in MODULE_KEYS]
    return name, task[name]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_documented_defaults_tasks_and_meta(role):
    for part in ("defaults/main.yml", "tasks/main.yml", "meta/main.yml"):
        assert (role / part).is_file(), f"{role.name} has no {part}"
    lines = (role / "defaults/main.yml").read_text().splitlines()
    for n, line in enumerate(lines):
        if re.match(r"^[a-z]\w*:", line):
            assert line.startswith(f"{role.name}_"), f"{role.name}: {line.split(':')[0]} lacks the role prefix"
            assert n > 0 and lines[n - 1].startswith("#"), f"{role.name}: {line.split(':')[0]} has no comment above it"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_argument_spec_covers_every_default(role):
    """A wrong variable fails before any change only if the spec names every variable the role takes."""
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    assert set(spec) == set(defaults)
    assert all(option.get("description") and option.get("type") for option in spec.values())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_defaults_satisfy_their_argument_spec(role):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    # Values that are Jinja expressions are rendered before Ansible validates them; the literal ones are checked here.
    literal = {k: v for k, v in yaml.safe_load((role / "defaults/main.yml").read_text()).items()
               if "{{" not in yaml.safe_dump(v)}
    result = ArgumentSpecValidator(spec).validate(literal)
    assert result.error_messages == []


@pytest.mark.parametrize("role, variables, named", [
    ("base", {"base_ssh_port": "twenty-two"}, "base_ssh_port"),
    ("copier", {"copier_settings": {"dry_run": "maybe"}}, "dry_run"),
    ("time_sync", {"time_sync_auth_select_mode": "mixed"}, "time_sync_auth_select_mode"),
    ("hardening", {"hardening_sysctls": [{"name": "kernel.dmesg_restrict", "value": "1"}]}, "why"),
])
def test_role_argument_spec_rejects_a_wrong_variable(role, variables, named):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    spec = yaml.safe_load((REPO / f"roles/{role}/meta/argument_specs.yml").read_text())["argument_specs"]["main"]
    errors = ArgumentSpecValidator(spec["options"]).validate(variables).error_messages
    assert errors and named in " ".join(errors)


def test_site_validates_every_role_before_any_role_runs_and_tags_each():
    play = SITE[0]
    roles = [entry["role"] for entry in play["roles"]]
    assert sorted(roles) == sorted(p.name for p in ROLES)
    assert all(entry["tags"] == [entry["role"]] for entry in play["roles"])
    validate = [t for t in play["pre_tasks"] if "ansible.builtin.validate_argument_spec" in t]
    assert validate and validate[0]["loop"] == roles and validate[0]["tags"] == ["always"]
    assert play["gather_facts"] is False


def test_ansible_config_runs_handlers_of_a_failed_run():
    config = (REPO / "ansible/ansible.cfg").read_text()
    assert re.search(r"^force_handlers = True$", config, re.MULTILINE)


def test_baseline_playbook_is_valid():
    check = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(REPO / "inventories/production"),
                            str(REPO / "ansible/baseline.yml"), "--syntax-check"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible/ansible.cfg")},
                           check=False)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_variables_in_use_are_defined(role):
    """A misspelt role variable in a task or template is an undefined-variable failure on a real host."""
    defined = set()
    for f in ("defaults/main.yml", "vars/main.yml"):
        if (role / f).is_file():
            defined |= set(yaml.safe_load((role / f).read_text()))
    defined |= {v for _, t in role_tasks(role) for v in [t.get("register")] if v}
    # Facts a task sets, and a task's own vars.
    defined |= {k for _, t in role_tasks(role) for k in (t.get("ansible.builtin.set_fact") or {})}
    defined |= {k for _, t in role_tasks(role) for k in (t.get("vars") or {})}
    role_vars = yaml.safe_load((role / "vars/main.yml").read_text()) if (role / "vars/main.yml").is_file() else {}
    defined |= {*role_vars.get(f"{role.name}_vault_names", []), *role_vars.get(f"{role.name}_vault_optional_names", [])}
    sources = [*role.glob("tasks/*.yml"), *role.glob("handlers/*.yml"), *role.glob("templates/*.j2")]
    if role.name == "copier":
        sources += list((REPO / "templates").glob("*.j2"))
    used = {name for path in sources for name in re.findall(rf"\b{role.name}_\w+", path.read_text())}
    # query('ansible.builtin.varnames', '^copier_vault_') names a prefix, not a variable.
    assert used - defined - {f"{role.name}_vault_"} == set()


def _renders_secrets(module: str, args) -> bool:
    if not isinstance(args, dict):
        args = {"_raw": args}
    text = yaml.safe_dump(args)
    # The secrets file written or copied, or its template rendered (a lookup feeding it to a command counts too).
    writes = module in ("ansible.builtin.template", "ansible.builtin.copy")
    if (writes and "copier.env" in text) or "copier.env.j2" in text:
        return True
    # Any expression that reads a vault value (the list of the vault's variable names is not one).
    return bool(re.search(r"\b\w+_vault_(?!names\b)\w+", text))


def test_every_task_that_renders_or_moves_a_secret_has_no_log():
    secret_tasks = [(f, t) for role in ROLES for f, t in role_tasks(role) if _renders_secrets(*module_of(t))]
    assert secret_tasks, "the env file is written by some task; the check must see it"
    assert [(f, t["name"]) for f, t in secret_tasks if t.get("no_log") is not True] == []


def test_env_template_holds_only_vault_values():
    """What reaches copier.env comes from the vault alone: never a default that could end up in a repo."""
    text = (REPO / "templates/copier.env.j2").read_text()
    values = re.findall(r"^[A-Z_]+=(.*)$", text, re.MULTILINE)
    # Optional secrets (redemption's node URL and relayer key) default to empty, never to a value.
    assert values and all(re.fullmatch(r"\{\{ copier_vault_\w+( \| default\(''\))? \}\}", v) for v in values), values


def _packages_in(section: str) -> set[str]:
    text = (REPO / "ansible/lab/packages").read_text()
    body = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    return {line.strip() for line in body.splitlines() if line.strip() and not line.startswith("#")}


def test_lab_root_carries_every_package_a_role_installs():
    """The lab has no route to a mirror: a package missing from its cache fails provisioning there."""
    needed = set()
    for role in ROLES:
        defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
        if (role / "vars/main.yml").is_file():
            defaults.update(yaml.safe_load((role / "vars/main.yml").read_text()))
        for _, task in role_tasks(role):
            module, args = module_of(task)
            if module == "ansible.builtin.apt":
                names = args["name"]
                if isinstance(names, str) and names.startswith("{{"):
                    names = defaults[names.strip("{} ")]
                needed |= {names} if isinstance(names, str) else set(names)
    assert needed, "roles install packages; the check must see them"
    assert needed - _packages_in("roles") - _packages_in("image") == set()


def test_lab_inventory_points_at_the_lab_address():
    hosts = yaml.safe_load((REPO / "inventories/lab/hosts.yml").read_text())
    assert hosts["copier_hosts"]["hosts"]["copier-lab"]["ansible_host"] == LAB_IP


def _emitted_metric_names() -> list[list[str]]:
    """Every metric name the copier sends, as its literal parts (an f-string field splits them)."""
    calls = re.compile(r"metrics\.(?:incr|timing|gauge|timer)\(\s*(f?)\"([^\"]+)\"")
    return [re.split(r"\{[^}]*\}", name) if is_f else [name]
            for path in (REPO / "worker/copier").glob("*.py") for is_f, name in calls.findall(path.read_text())]


def test_metrics_charts_name_metrics_the_copier_sends():
    emitted = _emitted_metric_names()
    assert emitted, "the copier's metric calls must be found"
    exact = [re.compile("[^.]+".join(map(re.escape, parts)) + "$") for parts in emitted]
    charts = yaml.safe_load((REPO / "roles/metrics/defaults/main.yml").read_text())["metrics_copier_charts"]
    unknown = []
    for chart in charts:
        for dim in chart["dimensions"]:
            if dim.get("pattern"):  # some metric the copier sends must fall under it
                known = any(parts[0].startswith(dim["metric"].rstrip("*")) for parts in emitted)
            else:
                known = any(p.match(dim["metric"]) for p in exact)
            if not known:
                unknown.append(f"{chart['id']}: {dim['metric']}")
    assert unknown == []


def _render(path: Path, variables: dict) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")
    return env.from_string(path.read_text()).render(ansible_managed="Ansible managed", **variables)


@pytest.mark.parametrize("inventory,password", [
    ("production", "example-only-change-me"),  # the documented example vault
    ("lab", None),
])
def test_vault_defines_every_secret_the_role_needs(inventory, password, tmp_path):
    password_file = VAULT_PASSWORD_FILE
    if password:
        password_file = tmp_path / "password"
        password_file.write_text(password)
    out = subprocess.run([str(REPO / ".venv/bin/ansible-vault"), "view", "--vault-password-file", str(password_file),
                          str(REPO / f"inventories/{inventory}/group_vars/copier_hosts/vault.yml")],
                         capture_output=True, text=True, check=True, timeout=60)
    vault = yaml.safe_load(out.stdout)
    names = yaml.safe_load((REPO / "roles/copier/vars/main.yml").read_text())["copier_vault_names"]
    assert sorted(vault) == sorted(names)


@pytest.mark.parametrize("inventory", ["production", "lab"])
@pytest.mark.parametrize("redeem", [{}, {"enabled": False, "merge_full_sets": True, "max_fee_gwei": 300.0}],
                         ids=["copier-defaults", "settings"])
def test_deployment_templates_render_a_config_the_copier_accepts(inventory, redeem, tmp_path):
    """The inventory's settings through templates/ give a copier.yaml and copier.env that `copier check-config`
    accepts, before any host is involved."""
    defaults = yaml.safe_load((REPO / "roles/copier/defaults/main.yml").read_text())
    group_vars = yaml.safe_load((REPO / f"inventories/{inventory}/group_vars/copier_hosts/main.yml").read_text())
    variables = {**defaults, **{k: v for k, v in group_vars.items() if k.startswith("copier_")},
                 "copier_statsd_host": "127.0.0.1", "copier_statsd_port": 8125, "copier_statsd_prefix": "copier",
                 "copier_user": "copier", "lab_simulator_port_base": group_vars.get("lab_simulator_port_base", 0),
                 "copier_redeem": redeem}
    # Endpoints may reference other inventory variables: one more pass resolves them.
    variables["copier_endpoints"] = yaml.safe_load(_render_text(yaml.safe_dump(variables["copier_endpoints"]),
                                                                variables))
    secrets = {name: "" for name in yaml.safe_load((REPO / "roles/copier/vars/main.yml").read_text())
               ["copier_vault_names"]}
    config = tmp_path / "copier.yaml"
    config.write_text(_render(REPO / "templates/copier.yaml.j2", variables))
    env = tmp_path / "copier.env"
    env.write_text(_render(REPO / "templates/copier.env.j2", {**variables, **secrets}))
    env.chmod(0o600)
    check = subprocess.run([str(REPO / ".venv/bin/copier"), "check-config", "--config", str(config),
                            "--env-file", str(env)], capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    rendered = yaml.safe_load(config.read_text())
    assert rendered["execution"]["dry_run"] is True and rendered.get("redeem", {}) == redeem


def _render_text(text: str, variables: dict) -> str:
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(**variables)


@pytest.mark.parametrize("dsn, accepted", [
    ("https://5e2a9c71d04b4f3e8a61c2d7b9f0e314@o123.ingest.sentry.io/4505", True),
    ("http://5e2a9c71d04b4f3e8a61c2d7b9f0e314@127.0.0.1:18009/1", True),
    ("https://public:secret@sentry.example.com/7", True),
    ("", False),
    ("https://sentry.example.com/7", False),
    ("not a dsn", False),
    ("https://key@sentry.example.com/", False),
])
def test_copier_role_accepts_only_a_sentry_dsn(dsn, accepted):
    """Without a DSN, restarts, halts and an untrusted clock alert nobody: the role refuses to deploy one."""
    shape = yaml.safe_load((REPO / "roles/copier/vars/main.yml").read_text())["copier_sentry_dsn_shape"]
    assert bool(re.match(shape, dsn)) is accepted


_SIZE_UNITS = {"": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
LOG_BUDGET_BYTES = 600 * 1024 ** 2       # what README promises the copier's logs never exceed


def _supervisor_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(KB|MB|GB)?", str(text).strip(), re.IGNORECASE)
    assert m, f"not a supervisor byte size: {text!r}"
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper()]


def test_every_log_the_copier_programs_write_rotates_within_the_stated_budget():
    """Static: each log file the deployed supervisor program file names has a maximum size and a number of backups,
    and together they stay inside the bound README states."""
    import configparser

    defaults = yaml.safe_load((REPO / "roles/copier/defaults/main.yml").read_text())
    variables = {**defaults, "copier_user": "copier", "copier_current_dir": "/opt/copier/current",
                 "copier_config_dir": "/etc/copier", "copier_state_dir": "/var/lib/copier",
                 "copier_log_dir": "/var/log/copier"}
    conf = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    conf.read_string(_render(REPO / "templates/supervisor-copier.conf.j2", variables))
    total, logs = 0, []
    for name in conf.sections():
        section = conf[name]
        for stream in ("stdout", "stderr"):
            path = section.get(f"{stream}_logfile")
            if path is None or path.upper() == "NONE" or (stream == "stderr" and section.get("redirect_stderr")
                                                         == "true"):
                continue
            maxbytes = _supervisor_bytes(section.get(f"{stream}_logfile_maxbytes", "0"))
            backups = int(section.get(f"{stream}_logfile_backups", "0"))
            assert maxbytes > 0 and backups >= 1, f"{name} {stream}: {path} does not rotate"
            total += maxbytes * (backups + 1)
            logs.append(path)
    assert "/var/log/copier/copier.log" in logs and "/var/log/copier/alert-listener.log" in logs
    assert total <= LOG_BUDGET_BYTES, f"logs may reach {total / 1024 ** 2:.0f} MiB"
    assert "about 570 MB" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("text, expected", [("50MB", 50 * 1024 ** 2), ("5mb", 5 * 1024 ** 2), ("100", 100)])
def test_supervisor_byte_sizes_parse_as_supervisord_reads_them(text, expected):
    assert _supervisor_bytes(text) == expected
