#!/usr/bin/env python3
"""The rules of deploy/ that no off-the-shelf tool knows, for scripts/check-deploy.

The real tools (the Compose schema, hadolint, promtool, systemd-analyze, cloud-init's schema)
check that each file is valid; this checks that the files say what the deployment needs: every
service has a health check and limits within the machine, only the API and Grafana are published
and on loopback, secrets come from the env file, the firewall lets in SSH only from the given
addresses, every alert has a test that fires it, and every metric a rule or panel uses is one
the binaries export.

    deploy_checks.py DEPLOY_DIR static METRICS_MD
    deploy_checks.py DEPLOY_DIR names METRICS_MD NAMES_FILE   # names a live Prometheus has

Prints one line per problem on stderr and exits 1 when there was any.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import hcl2
import promql_parser
import yaml

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


# ---------------------------------------------------------------------------------------------
# Compose.

EXPECTED_SERVICES = {
    "redis", "ingest", "write", "serve", "maintain", "prometheus", "alertmanager", "redis-exporter",
    "node-exporter", "grafana",
}
# Services in the host's network namespace (node-exporter, so that its network figures are the
# host's), each listening on a private address only.
HOST_NETWORK = {"node-exporter"}
PUBLISHED = {"serve", "grafana"}
MACHINE_CPUS = 4.0
MACHINE_MEMORY = 8 * 1024**3
# What the system, Docker and the page cache keep at least.
HOST_RESERVE = 1024**3
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY")


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", str(text).strip().lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def interpolated_only(value: str) -> bool:
    """True when a value is one ${VAR...} interpolation (from the env file), not a literal."""
    return re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", value) is not None


def check_compose(deploy: Path) -> None:
    path = deploy / "docker-compose.yml"
    where = "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    if set(services) != EXPECTED_SERVICES:
        problem(where, f"services are {sorted(services)}, expected {sorted(EXPECTED_SERVICES)}")
    cpus = 0.0
    memory = 0
    for name, svc in services.items():
        at = f"{where}: service {name}"
        hc = svc.get("healthcheck")
        if not hc or hc.get("disable") or not hc.get("test"):
            problems.append(f"{at}: no health check")
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        if "cpus" not in limits or "memory" not in limits:
            problems.append(f"{at}: no CPU and memory limits (deploy.resources.limits)")
        else:
            cpus += float(limits["cpus"])
            memory += parse_bytes(limits["memory"])
        for dep, cond in (svc.get("depends_on") or {}).items():
            condition = cond.get("condition") if isinstance(cond, dict) else None
            if condition != "service_healthy":
                problems.append(f"{at}: depends on {dep} without condition service_healthy")
        ports = svc.get("ports") or []
        if ports and name not in PUBLISHED:
            problems.append(f"{at}: publishes ports; only {sorted(PUBLISHED)} may")
        for port in ports:
            text = str(port)
            if not (text.startswith("127.0.0.1:") or re.match(r"\$\{[A-Z_]+:-127\.0\.0\.1\}:", text)):
                problems.append(f"{at}: port {text!r} is not bound to loopback by default")
        if "build" in svc:
            problems.append(f"{at}: builds its image on the server; ship it built (deploy/upgrade.sh)")
        if svc.get("network_mode") == "host":
            if name not in HOST_NETWORK:
                problems.append(f"{at}: uses the host's network instead of the private networks")
            listen = [str(w).split("=", 1)[1] for w in svc.get("command") or []
                      if str(w).startswith("--web.listen-address=")]
            if not listen or not re.match(r"(10|127|172\.(1[6-9]|2\d|3[01])|192\.168)\.", listen[0]):
                problems.append(f"{at}: in the host's network, it must listen on a private address "
                                f"(--web.listen-address), not {listen[0] if listen else 'every interface'}")
        for vol in svc.get("volumes") or []:
            source = str(vol)
            if not (source.startswith("${DATA_ROOT:-/data}/") or source.startswith("./") or source.startswith("/:")):
                problems.append(f"{at}: volume {vol!r} is neither under ${{DATA_ROOT:-/data}} nor a shipped file")
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            for key, value in env.items():
                if any(w in key for w in SECRET_WORDS) and not interpolated_only(str(value)):
                    problems.append(f"{at}: {key} is written in the file; it must come from .env")
    if cpus > MACHINE_CPUS + 1e-9:
        problem(where, f"CPU limits add up to {cpus:g}, over the machine's {MACHINE_CPUS:g}")
    if memory > MACHINE_MEMORY - HOST_RESERVE:
        problem(where, f"memory limits add up to {memory / 1024**3:.2f} GiB, leaving under 1 GiB of 8 for the host")
    # Redis: the shipped redis.conf, with a password.
    redis = services.get("redis", {})
    command = " ".join(redis.get("command") or []) if isinstance(redis.get("command"), list) else str(redis.get("command", ""))
    if "/usr/local/etc/redis/redis.conf" not in command or "--requirepass" not in command:
        problem(where, "redis does not run the shipped redis.conf with --requirepass")
    if not any(str(v).startswith("./redis.conf:") for v in redis.get("volumes") or []):
        problem(where, "redis does not mount ./redis.conf")
    # Networks: the backend has no route out.
    if not (doc.get("networks", {}).get("backend") or {}).get("internal"):
        problem(where, "the backend network is not internal")
    # Alerts leave the machine: Prometheus sends them to the Alertmanager service, whose
    # configuration is rendered from .env, and maintenance spills to the data volume.
    prom = yaml.safe_load((deploy / "prometheus/prometheus.yml").read_text())
    targets = [t for am in (prom.get("alerting") or {}).get("alertmanagers", [])
               for sc in am.get("static_configs", []) for t in sc.get("targets", [])]
    if "alertmanager:9093" not in targets:
        problem("prometheus/prometheus.yml", "sends alerts to no Alertmanager (alerting: alertmanager:9093)")
    am = services.get("alertmanager", {})
    if "/etc/alertmanager/render-config" not in " ".join(map(str, am.get("entrypoint") or [])):
        problem(where, "alertmanager does not write its configuration from .env (alertmanager/render-config)")
    maintain = " ".join(map(str, services.get("maintain", {}).get("command") or []))
    spill = re.search(r"--spill-dir (\S+)", maintain)
    mounts = [re.sub(r":(ro|rw)$", "", str(v)).rsplit(":", 1)[-1]
              for v in services.get("maintain", {}).get("volumes") or [] if str(v).startswith("${DATA_ROOT")]
    if not spill or spill.group(1) not in mounts:
        problem(where, "maintain does not spill to a directory on the data volume (--spill-dir on a ${DATA_ROOT} mount)")
    # Every ${VAR} the file uses is documented in .env.example, and .env is ignored.
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", path.read_text()))
    example = deploy / ".env.example"
    listed = set(re.findall(r"^([A-Z0-9_]+)=", example.read_text(), re.M)) if example.exists() else set()
    for var in sorted(used - listed):
        problem(".env.example", f"does not list {var}, which docker-compose.yml uses")
    ignore = (deploy / ".gitignore").read_text().split() if (deploy / ".gitignore").exists() else []
    if ".env" not in ignore:
        problem(".gitignore", "does not ignore .env (the real secrets)")


# ---------------------------------------------------------------------------------------------
# Dockerfile.

def check_dockerfile(deploy: Path) -> None:
    where = "Dockerfile"
    text = (deploy / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if not froms or not froms[0].startswith("rust:1.95-bookworm"):
        problem(where, "the builder is not rust:1.95-bookworm")
    if len(froms) < 2:
        problem(where, "not a multi-stage build")
    if "cargo build --release --locked --bin firehose" not in text:
        problem(where, "does not build with `cargo build --release --locked --bin firehose`")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problem(where, "the runtime image does not run as a non-root user")
    if not re.search(r"^HEALTHCHECK\s", text, re.M):
        problem(where, "no HEALTHCHECK")


# ---------------------------------------------------------------------------------------------
# redis.conf: every setting says why.

def check_redis_conf(deploy: Path) -> None:
    """Every setting sits in a paragraph whose comment comes before it."""
    commented = False
    for i, line in enumerate((deploy / "redis.conf").read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            commented = False
        elif text.startswith("#"):
            commented = True
        elif not commented:
            problem("redis.conf", f"line {i} ({text.split()[0]}) has no comment saying why")


# ---------------------------------------------------------------------------------------------
# Prometheus rules: every alert has a unit test that fires it.

def alert_names(deploy: Path) -> list[str]:
    doc = yaml.safe_load((deploy / "prometheus/alerts.yml").read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def check_alert_tests(deploy: Path) -> None:
    tests = yaml.safe_load((deploy / "prometheus/alerts.test.yml").read_text())
    fired, quiet = set(), set()
    for t in tests.get("tests", []):
        for case in t.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = alert_names(deploy)
    if "Watchdog" not in names:
        problem("prometheus/alerts.yml", "no always-firing Watchdog alert for the dead man's switch")
    for name in names:
        if name not in fired:
            problem("prometheus/alerts.test.yml", f"no test where {name} fires")
        if name not in quiet and name != "Watchdog":
            problem("prometheus/alerts.test.yml", f"no test where {name} stays quiet")


# ---------------------------------------------------------------------------------------------
# Grafana.

def dashboard_exprs(deploy: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted((deploy / "grafana/dashboards").glob("*.json")):
        doc = json.loads(path.read_text())
        stack = list(doc.get("panels", []))
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((f"grafana/dashboards/{path.name}: panel {panel.get('title')!r}", target["expr"]))
    return out


def check_grafana(deploy: Path) -> None:
    sources = yaml.safe_load((deploy / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d.get("uid") for d in sources.get("datasources", [])}
    providers = yaml.safe_load((deploy / "grafana/provisioning/dashboards/firehose.yml").read_text())
    paths = {p.get("options", {}).get("path") for p in providers.get("providers", [])}
    compose = (deploy / "docker-compose.yml").read_text()
    for p in paths:
        if f"./grafana/dashboards:{p}:ro" not in compose:
            problem("grafana/provisioning/dashboards/firehose.yml", f"{p} is not where docker-compose.yml mounts the dashboards")
    dashboards = sorted((deploy / "grafana/dashboards").glob("*.json"))
    if not dashboards:
        problem("grafana/dashboards", "no dashboard")
    for path in dashboards:
        doc = json.loads(path.read_text())
        titles = {p.get("title") for p in doc.get("panels", []) if p.get("type") == "row"}
        for row in ("Alerts", "Buffer", "Ingest", "Writer", "Storage", "Query API", "Maintenance", "Host"):
            if row not in titles:
                problem(f"grafana/dashboards/{path.name}", f"no {row!r} row")
        stack = list(doc.get("panels", []))
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if isinstance(ds, dict) and ds.get("uid") not in uids:
                    problem(f"grafana/dashboards/{path.name}", f"panel {panel.get('title')!r} uses data source {ds.get('uid')!r}, not a provisioned one")


# ---------------------------------------------------------------------------------------------
# Metric names: parsed out of every rule and panel with a PromQL parser.

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
# Exported by others: node_exporter, redis_exporter, Prometheus itself (and its ALERTS series).
EXTERNAL = re.compile(r"^(node_|redis_|prometheus_|scrape_|alertmanager_)|^(up|ALERTS)$")


def selectors(node) -> list[str]:
    names = []
    kind = type(node).__name__
    if kind == "VectorSelector":
        if node.name:
            names.append(node.name)
        return names
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names.extend(selectors(child))
    for arg in getattr(node, "args", None) or []:
        names.extend(selectors(arg))
    return names


def used_metric_names(deploy: Path) -> list[tuple[str, str]]:
    """(where, name) for every metric selector in the rules and the dashboards."""
    exprs = []
    doc = yaml.safe_load((deploy / "prometheus/alerts.yml").read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            exprs.append((f"prometheus/alerts.yml: {r.get('alert') or r.get('record')}", r["expr"]))
    exprs.extend(dashboard_exprs(deploy))
    out = []
    for where, expr in exprs:
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        try:
            tree = promql_parser.parse(expr)
        except Exception as e:  # the parser raises its own error types
            problem(where, f"PromQL does not parse: {e}")
            continue
        out.extend((where, name) for name in selectors(tree))
    return out


def documented_metrics(metrics_md: Path) -> dict[str, str]:
    """name -> type, from the table of docs/METRICS.md."""
    out = {}
    for m in re.finditer(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*(\w+)\s*\|", metrics_md.read_text(), re.M):
        out[m.group(1)] = m.group(2)
    return out


def series_names(documented: dict[str, str]) -> set[str]:
    names = set()
    for name, kind in documented.items():
        if kind in ("histogram", "summary"):
            names.update({name + "_sum", name + "_count"})
            if kind == "histogram":
                names.add(name + "_bucket")
        else:
            names.add(name)
    return names


def check_names(deploy: Path, metrics_md: Path, exported: set[str] | None) -> None:
    documented = series_names(documented_metrics(metrics_md))
    if not documented:
        problem(str(metrics_md), "no metric table found")
    seen = set()
    for where, name in used_metric_names(deploy):
        if EXTERNAL.search(name):
            continue
        if exported is None:
            if name not in documented and (where, name) not in seen:
                problem(where, f"uses {name}, which docs/METRICS.md does not list")
        elif name not in exported and (where, name) not in seen:
            problem(where, f"uses {name}, which the running firehose processes did not export "
                           f"(a metric must be registered, at zero, when the process starts)")
        seen.add((where, name))


# ---------------------------------------------------------------------------------------------
# Terraform.

def unq(value):
    """python-hcl2 keeps the quotes of string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def tf_blocks(doc: dict, kind: str) -> dict[str, dict]:
    """`resource`/`variable`/... blocks as {"type.name" or "name": body}."""
    out = {}
    for entry in doc.get(kind, []):
        for k1, v1 in entry.items():
            if kind == "resource":
                for k2, body in v1.items():
                    out[f"{unq(k1)}.{unq(k2)}"] = body
            else:
                out[unq(k1)] = v1
    return out


def check_terraform(deploy: Path) -> None:
    merged: dict[str, list] = {}
    tf = deploy / "terraform"
    for path in sorted(tf.glob("*.tf")):
        try:
            doc = hcl2.loads(path.read_text())
        except Exception as e:  # python-hcl2 raises lark errors
            problem(f"terraform/{path.name}", f"does not parse: {str(e).splitlines()[0]}")
            continue
        for k, v in doc.items():
            merged.setdefault(k, []).extend(v)
    where = "terraform"
    variables = tf_blocks(merged, "variable")
    resources = tf_blocks(merged, "resource")
    # Provider.
    providers = [p for t in merged.get("terraform", []) for rp in t.get("required_providers", []) for p in [rp.get("hcloud")] if p]
    if not providers or unq(providers[0].get("source")) != "hetznercloud/hcloud":
        problem(where, "does not require the hetznercloud/hcloud provider")
    # Secrets are sensitive.
    for name, body in variables.items():
        secret = re.search(r"token|password|secret|access_key", name)
        if secret and body.get("sensitive") is not True:
            problem(where, f"variable {name} is a secret but not sensitive = true")
    for needed in ("object_storage_bucket", "object_storage_access_key", "object_storage_secret_key", "ssh_source_cidrs"):
        if needed not in variables:
            problem(where, f"no variable {needed}")
    # The resources.
    for needed in ("hcloud_server.firehose", "hcloud_volume.data", "hcloud_volume_attachment.data",
                   "hcloud_firewall.server", "hcloud_network.private", "hcloud_network_subnet.private"):
        if needed not in resources:
            problem(where, f"no resource {needed}")
    # Firewall: inbound SSH from var.ssh_source_cidrs only; anything else only from a variable.
    fw = resources.get("hcloud_firewall.server", {})
    rules = list(fw.get("rule", []))
    for dyn in fw.get("dynamic", []):
        for _, body in dyn.items():
            rules.extend(c for c in body.get("content", []))
    ssh = [r for r in rules if unq(r.get("port")) == "22" and unq(r.get("direction")) == "in"]
    if len(ssh) != 1 or ssh[0].get("source_ips") != "${var.ssh_source_cidrs}":
        problem(where, "the firewall does not let in SSH (22) from var.ssh_source_cidrs alone")
    for r in rules:
        if unq(r.get("direction")) != "in":
            continue
        src = r.get("source_ips")
        if not (isinstance(src, str) and src.startswith("${var.")):
            problem(where, f"firewall rule for port {unq(r.get('port'))} has literal sources {src!r}; only configured addresses may be let in")
    if "ssh_source_cidrs" in variables:
        validation = json.dumps(variables["ssh_source_cidrs"].get("validation", []))
        if "0.0.0.0/0" not in validation:
            problem(where, "ssh_source_cidrs does not refuse 0.0.0.0/0")
    # Server wiring.
    server = resources.get("hcloud_server.firehose", {})
    if "hcloud_firewall.server.id" not in json.dumps(server.get("firewall_ids")):
        problem(where, "the server is not behind the firewall")
    if not server.get("network"):
        problem(where, "the server is not on the private network")
    if "cloud-init.yaml.tftpl" not in json.dumps(server.get("user_data")):
        problem(where, "the server's user_data is not the cloud-init template")
    template = (tf / "cloud-init.yaml.tftpl").read_text()
    for needed in ("docker compose up", "docker-compose-plugin", "/data"):
        if needed not in template:
            problem("terraform/cloud-init.yaml.tftpl", f"does not mention {needed!r}")
    if "--build" in template:
        problem("terraform/cloud-init.yaml.tftpl", "builds images on the server (--build); ship them built")
    if "RequiresMountsFor=/data" not in template:
        problem("terraform/cloud-init.yaml.tftpl", "Docker does not wait for the /data volume (RequiresMountsFor=/data)")


def render_cloud_init(deploy: Path, out: Path) -> None:
    """The cloud-init template with placeholder values, for cloud-init's own schema check."""
    text = (deploy / "terraform/cloud-init.yaml.tftpl").read_text()
    text = re.sub(r"(?<!\$)\$\{([a-z_]+)\}", lambda m: f"placeholder-{m.group(1)}", text)
    if re.search(r"(?<!\$)\$\{", text):
        problem("terraform/cloud-init.yaml.tftpl", "has an interpolation that is not a plain variable")
    out.write_text(text.replace("$${", "${"))


# ---------------------------------------------------------------------------------------------
# Query memory limits: below their container's or unit's limit, with room to spare.

# What a query process holds besides DataFusion's pool (the runtime, the HTTP server, answers
# being written, Parquet footers): the pool gets at most the limit less this, and 75% of it.
QUERY_OVERHEAD = 512 * 1024**2
QUERY_SHARE = 0.75
# Subcommands that run queries, and so take --memory-limit (default 2G, too much anywhere here).
QUERY_COMMANDS = ("serve", "query")


def memory_limit_problem(at: str, words: list[str], container: int | None) -> str | None:
    """The problem with a query process's --memory-limit under a container limit, if any."""
    if container is None:
        return f"{at}: runs queries without a memory limit of its own (MemoryMax or deploy.resources.limits.memory)"
    flag = next((w.split("=", 1)[1] for w in words if w.startswith("--memory-limit=")), None)
    if flag is None and "--memory-limit" in words[:-1]:
        flag = words[words.index("--memory-limit") + 1]
    if flag is None:
        return f"{at}: runs queries without --memory-limit (the default, 2G, is not below the limit of {container / 1024**2:.0f} MiB)"
    pool = parse_bytes(flag)
    room = min(container - QUERY_OVERHEAD, int(container * QUERY_SHARE))
    if pool > room:
        return (f"{at}: --memory-limit {flag} leaves no room under the limit of "
                f"{container / 1024**2:.0f} MiB (at most {room / 1024**2:.0f} MiB: 75% and 512 MiB spare)")
    return None


def check_memory_limits(deploy: Path) -> None:
    doc = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    for name, svc in (doc.get("services") or {}).items():
        command = svc.get("command")
        words = [str(w) for w in command] if isinstance(command, list) else str(command or "").split()
        if not words or words[0] not in QUERY_COMMANDS:
            continue
        limit = (svc.get("deploy", {}).get("resources", {}).get("limits", {}) or {}).get("memory")
        found = memory_limit_problem(f"docker-compose.yml: service {name}", words,
                                     parse_bytes(limit) if limit else None)
        if found:
            problems.append(found)
    for unit in sorted((deploy / "systemd").glob("*.service")):
        text = unit.read_text()
        starts = re.findall(r"^ExecStart=(.*)$", text, re.M)
        words = starts[0].split() if starts else []
        if len(words) < 2 or not words[0].endswith("/firehose") or words[1] not in QUERY_COMMANDS:
            continue
        max_mem = re.search(r"^MemoryMax=(\S+)$", text, re.M)
        found = memory_limit_problem(f"systemd/{unit.name}", words,
                                     parse_bytes(max_mem.group(1)) if max_mem else None)
        if found:
            problems.append(found)


# ---------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    deploy = Path(argv[1])
    mode = argv[2]
    if mode == "static":
        metrics_md = Path(argv[3])
        for check in (check_compose, check_dockerfile, check_redis_conf, check_alert_tests,
                      check_grafana, check_terraform, check_memory_limits):
            try:
                check(deploy)
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
                problem(check.__name__.removeprefix("check_"), f"could not be checked: {e}")
        check_names(deploy, metrics_md, None)
    elif mode == "names":
        exported = set(Path(argv[4]).read_text().split())
        check_names(deploy, Path(argv[3]), exported)
    elif mode == "cloud-init":
        render_cloud_init(deploy, Path(argv[3]))
    elif mode == "alerts":
        print("\n".join(alert_names(deploy)))
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"check-deploy: FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
