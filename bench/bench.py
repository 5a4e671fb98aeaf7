"""The benchmark behind docs/benchmarks.md; run it through bench/run.sh.

It starts the release binary on a fresh PostgreSQL database, seeds it through the API, drives
each scenario with wrk, measures the SQL the server sends (from PostgreSQL's statement log) and
runs that SQL with pgbench at the same client count, compares `GET /tools/{id}` with the tenant
headers against the same request with an API key (alternating, KEY_ROUNDS rounds), then
measures the execution-log list at 10 thousand and at 1 million rows. It prints Markdown tables.
"""

import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

BINARY = os.environ["BENCH_BINARY"]
# The build before the latest optimisation, measured in the same run (bench/run.sh builds it).
BASELINE_BINARY = os.environ.get("BENCH_BASELINE_BINARY")
BASELINE_REV = os.environ.get("BENCH_BASELINE_REV", "baseline")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ADMIN_URL = os.environ["TEST_DATABASE_URL"]
POSTGRES_LOG = os.environ["TEST_POSTGRES_LOG"]
LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk")
CONNECTIONS = 32  # wrk connections
POOL = 16  # the database connections of each server (ours and the ceiling) = pgbench clients
THREADS = 2  # the machine's cores
# The minimal server of bench/ceiling (bench/run.sh builds it): what the read paths could reach.
CEILING_BINARY = os.environ.get("BENCH_CEILING_BINARY")
# Rounds of the comparison with it: ceiling, baseline, this build, ceiling, … (each SECONDS
# long, per scenario), medians reported.
RATIO_ROUNDS = int(os.environ.get("BENCH_RATIO_ROUNDS", "3"))
# The scenarios the ceiling serves too.
RATIO_SCENARIOS = ("GET /tools/{id}", "GET /tools?limit=100", "GET /health")
ORGS, USERS, TOOLS, FLOWS, LOGS = 10, 10, 100, 20, 1000
DATABASE = "tolstoy_bench"
# A copy of it made before this build migrates it, for the older build of the comparison with
# the ceiling: an older binary refuses a database that has migrations it does not know.
OLDER_DATABASE = f"{DATABASE}_older"
# The requests whose SQL is counted and replayed by pgbench: the ceilings.
CEILING_REQUESTS = ("GET /tools/{id}", "POST /tools")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Rounds of the key-lookup comparison: headers, key, headers, key, … (each SECONDS long), so
# that drift of the shared machine falls on both alike; the medians are reported.
KEY_ROUNDS = int(os.environ.get("BENCH_KEY_ROUNDS", "5"))


def say(text):
    print(f"bench: {text}", file=sys.stderr, flush=True)


def database_url(name):
    return urllib.parse.urlparse(ADMIN_URL)._replace(path=f"/{name}").geturl()


def psql(url, sql):
    out = subprocess.run(["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Server:
    """The release binary on `url`, with a pool of POOL database connections."""

    def __init__(self, url, binary=BINARY, **env):
        self.port = free_port()
        environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECT_URL")}
        # Headers mode (a key is accepted in it too, and wins): every scenario and the key
        # comparison run against the same server.
        # WORKERS=0: an API-only process, so that the statement log holds the requests' SQL
        # alone, not the executor's polls of the queue.
        environment.update({"DATABASE_URL": url, "PORT": str(self.port), "RUST_LOG": "warn",
                            "DB_MAX_CONNECTIONS": str(POOL), "AUTH_MODE": "headers", "WORKERS": "0",
                            **env})
        self.start([binary, "serve", "--migrate"], environment)

    def start(self, command, environment):
        """Runs `command` on `self.port` and waits until it answers `GET /health`."""
        self.process = subprocess.Popen(command, env=environment,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                Client(self).call("GET", "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{command[0]} did not start")

    def memory(self, field):
        """VmRSS (now) or VmHWM (peak since the last reset) in MiB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(field)

    def reset_peak(self):
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as refs:
            refs.write("5")

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


class Ceiling(Server):
    """bench/ceiling on `url`: hyper + tokio-postgres, the same SQL, the same pool size."""

    def __init__(self, url):
        self.port = free_port()
        self.start([CEILING_BINARY], dict(os.environ, DATABASE_URL=url, PORT=str(self.port), POOL=str(POOL)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive connection to the server, as the tenant headers' caller or, with `key`,
    as the API key's instead."""

    def __init__(self, server, org=None, user=None, key=None):
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        elif org:
            self.headers.update({"X-Org-ID": org, "X-User-ID": user})

    def call(self, method, path, body=None, expect=(200, 201, 204)):
        self.connection.request(method, path, body=json.dumps(body) if body is not None else None,
                                headers=self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None


def seed_organization(server, index):
    """One organization as the issue describes it, made through the API."""
    anyone = Client(server)
    org = anyone.call("POST", "/organizations", {"name": f"Org {index}"})["id"]
    first = Client(server, org, "00000000-0000-0000-0000-000000000000")
    user = first.call("POST", "/users", {"email": f"owner@org{index}.example"})["id"]
    api = Client(server, org, user)
    users = [user] + [api.call("POST", "/users", {"email": f"u{n}@org{index}.example"})["id"]
                      for n in range(1, USERS)]
    tools = []
    for n in range(TOOLS):
        tool = api.call("POST", "/tools", {"name": f"Tool {n}", "baseUrl": f"https://api{n}.example.com/v1",
                                           "authType": "bearer"})["id"]
        api.call("POST", "/actions", {"toolId": tool, "name": "Call", "method": "POST",
                                      "endpoint": "/call", "schema": {"type": "object"}})
        tools.append(tool)
    steps = [{"id": "fetch", "type": "action"}, {"id": "notify", "type": "action"}]
    flows = [api.call("POST", "/flows", {"name": f"Flow {n}", "steps": steps})["id"] for n in range(FLOWS)]
    for n in range(LOGS):
        logger = Client(server, org, users[n % USERS]) if n < USERS else api
        logger.call("POST", "/execution-logs", {
            "flowId": flows[n % FLOWS], "executionId": f"run-{n // 4}", "stepId": steps[n % 2]["id"],
            "status": "completed", "inputs": {"n": n}, "outputs": {"ok": True}})
    return {"org": org, "user": user, "tools": tools, "flows": flows}


def seed(server):
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        organizations = list(pool.map(lambda i: seed_organization(server, i), range(ORGS)))
    requests = ORGS * (1 + USERS + 2 * TOOLS + FLOWS + LOGS)
    say(f"seeded {requests} rows through the API in {time.monotonic() - started:.1f} s")
    return organizations


def cpu_seconds(pids):
    """User + system CPU seconds used so far by each of `pids` that is still alive."""
    used = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return used


def backends():
    """The PostgreSQL processes serving connections to the benchmark's database."""
    found = subprocess.run(["pgrep", "-f", f"^postgres: .* ({DATABASE}|{OLDER_DATABASE}) "],
                           capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def machine_seconds():
    """CPU seconds the whole machine has spent busy (all but idle and I/O wait), and those the
    hypervisor stole from it (a share of the cores this machine did not get), all cores."""
    with open("/proc/stat") as stat:
        fields = [int(n) for n in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS, fields[7] / CLOCK_TICKS


def run_measuring_cpu(command, seconds, others, **options):
    """Runs `command` for about `seconds` and returns its stdout, the CPU seconds per second
    of wall time that it, each process group of `others` (name -> pids) and PostgreSQL's
    backends used in the middle of the run (a second in from either end, when all are busy),
    the cores busy on the whole machine meanwhile (the difference is someone else's), and the
    share of the machine's cores the hypervisor stole meanwhile (figures taken under much steal
    are noise)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
    margin = 1 if seconds >= 3 else 0
    time.sleep(margin)
    groups = {"client": [process.pid], **others, "postgres": backends()}
    started, before = time.monotonic(), {name: cpu_seconds(pids) for name, pids in groups.items()}
    busy, stolen = machine_seconds()
    time.sleep(max(seconds - 2 * margin, 0.5))
    elapsed, after = time.monotonic() - started, {name: cpu_seconds(pids) for name, pids in groups.items()}
    busy_after, stolen_after = machine_seconds()
    machine = (busy_after - busy) / elapsed
    steal = (stolen_after - stolen) / elapsed / (os.cpu_count() or 1)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {err[-500:]}")
    load = {name: sum(after[name][pid] - before[name][pid] for pid in after[name] if pid in before[name]) / elapsed
            for name in groups}
    return out, load, machine, steal


def wrk(server, script, tenant, seconds=SECONDS, connections=CONNECTIONS, threads=THREADS, others=None, **env):
    """`others` (name -> pids): more processes whose CPU is read beside the server's."""
    environment = dict(os.environ, BENCH_LUA_DIR=LUA_DIR, BENCH_ORG=tenant["org"],
                       BENCH_USER=tenant["user"], **env)
    out, load, machine, steal = run_measuring_cpu(["wrk", "--latency", "-t", str(threads), "-c", str(connections),
                                   "-d", f"{seconds}s", "-s", os.path.join(LUA_DIR, script), server.base],
                                  seconds, {"server": [server.process.pid], **(others or {})}, env=environment)
    def number(pattern, default="0"):
        found = re.search(pattern, out, re.MULTILINE)
        return found.group(1) if found else default
    def millis(text):
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = int(number(r"Non-2xx or 3xx responses: (\d+)"))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    for failure in re.findall(r"first failure: (.*)|^\s*((?:Non-2xx|Socket errors).*)$", out, re.MULTILINE):
        say(f"{script}: {failure[0] or failure[1]}")
    return {"rps": float(number(r"Requests/sec:\s+([\d.]+)")),
            "p50": millis(number(r"^\s+50%\s+(\S+)")), "p99": millis(number(r"^\s+99%\s+(\S+)")),
            "requests": int(number(r"(\d+) requests in")), "errors": errors, "cpu": load, "machine": machine,
            "steal": steal}


def statements_of(server, tenant, method, path, body, count=50, key=None):
    """What the server sends to PostgreSQL for `count` such requests (with the tenant headers,
    or with `key`), from its statement log: statements per request, and those of the last
    request with their parameters."""
    client = Client(server, tenant["org"], tenant["user"], key)
    client.call(method, path, body(0) if body else None)  # prepared statements are cached now
    psql(ADMIN_URL, "ALTER SYSTEM SET log_statement = 'all'")
    psql(ADMIN_URL, "SELECT pg_reload_conf()")
    time.sleep(0.3)
    start = os.path.getsize(POSTGRES_LOG)
    for n in range(1, count + 1):
        client.call(method, path, body(n) if body else None)
    time.sleep(0.3)
    psql(ADMIN_URL, "ALTER SYSTEM RESET log_statement")
    psql(ADMIN_URL, "SELECT pg_reload_conf()")
    with open(POSTGRES_LOG, errors="replace") as log:
        log.seek(start)
        lines = log.read().splitlines()
    statements = []
    for line in lines:
        found = re.search(r"LOG:  (?:statement|execute [^:]*): (.*)", line)
        if found and "pg_reload_conf" not in found.group(1) and "ALTER SYSTEM" not in found.group(1):
            statements.append([found.group(1), {}])
        parameters = re.search(r"DETAIL:  parameters: (.*)", line)
        if parameters and statements:
            statements[-1][1] = dict(re.findall(r"\$(\d+) = (NULL|'(?:[^']|'')*')", parameters.group(1)))
    per_request = len(statements) / count
    return per_request, statements[-round(per_request):]


def plans_of(server, tenant, method, path, count=20, key=None):
    """The plans PostgreSQL ran for the server's own (prepared) statements of `count` such
    requests, from auto_explain (bench/run.sh loads it, off until here): the last plan of each
    statement, by its first 40 characters."""
    client = Client(server, tenant["org"], tenant["user"], key)
    psql(ADMIN_URL, "ALTER SYSTEM SET auto_explain.log_min_duration = 0")
    psql(ADMIN_URL, "SELECT pg_reload_conf()")
    time.sleep(0.3)
    start = os.path.getsize(POSTGRES_LOG)
    for _ in range(count):
        client.call(method, path)
    time.sleep(0.3)
    psql(ADMIN_URL, "ALTER SYSTEM RESET auto_explain.log_min_duration")
    psql(ADMIN_URL, "SELECT pg_reload_conf()")
    with open(POSTGRES_LOG, errors="replace") as log:
        log.seek(start)
        lines = log.read().splitlines()
    plans, current = {}, None
    for line in lines + [""]:
        if current is not None and line.startswith("\t"):
            current.append(line[1:])
            continue
        if current and current[0].startswith("Query Text: "):
            plans[current[0][len("Query Text: "):][:40]] = "\n".join(current[1:])
        current = [] if re.search(r"LOG:  duration: [\d.]+ ms  plan:$", line) else None
    return plans


def pgbench_script(url, statements, name):
    """A pgbench script of the server's statements with their logged parameter values inlined;
    for an INSERT, `id` and `name` are made unique per transaction as the API makes them, and
    each value is cast to its column's type, as the server's typed parameters are (in
    `INSERT … SELECT` a bare literal would be text)."""
    lines = []
    for text, parameters in statements:
        # INSERT … VALUES ($1, …) or INSERT … SELECT $1, … WHERE <the tenant's membership>
        insert = re.search(r'INSERT INTO "(\w+)" \(([^)]*)\) (?:VALUES \(|SELECT )((?:\$\d+(?:, )?)+)', text)
        replace = {}
        if insert:
            types = dict(line.split("|") for line in psql(url, f"""
                SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
                WHERE attrelid = '{insert.group(1)}'::regclass AND attnum > 0""").splitlines())
            names = [c.strip().strip('"') for c in insert.group(2).split(",")]
            values = [v.strip() for v in insert.group(3).split(",")]
            replace = {value: f"{parameters.get(value[1:], 'NULL')}::{types[column]}"
                       for column, value in zip(names, values)}
            replace[values[names.index("id")]] = "gen_random_uuid()"
            replace[values[names.index("name")]] = "'pgbench-' || gen_random_uuid()"
        def inline(match):
            token = match.group(0)
            return replace.get(token) or parameters.get(token[1:], "NULL")
        lines.append(re.sub(r"\$\d+", inline, text) + ";")
    path = f"/tmp/tolstoy-bench-{name}.sql"
    with open(path, "w") as script:
        script.write("\n".join(lines) + "\n")
    return path, lines


def pgbench(url, script, seconds=SECONDS):
    """pgbench exits non-zero when a transaction fails, so a result has no errors."""
    out, load, machine, steal = run_measuring_cpu(["pgbench", "-n", "-M", "prepared", "-c", str(POOL), "-j", str(THREADS),
                                   "-T", str(seconds), "-f", script, url], seconds, {})
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    return {"tps": tps, "latency": latency, "cpu": load, "machine": machine, "steal": steal}


def row(*cells):
    print("| " + " | ".join(str(c) for c in cells) + " |")


def load_scenarios(server, tenant, log_flow):
    tools = ",".join(tenant["tools"])
    flows = ",".join(tenant["flows"])
    return [
        ("GET /tools/{id}", "get_tool.lua", {"BENCH_IDS": tools}),
        ("GET /tools?limit=100", "get.lua", {"BENCH_PATH": "/tools?limit=100"}),
        ("POST /tools", "post_tool.lua", {}),
        ("PUT /flows/{id}", "put_flow.lua", {"BENCH_IDS": flows}),
        ("GET /execution-logs?flowId=…&limit=50", "get.lua",
         {"BENCH_PATH": f"/execution-logs?flowId={log_flow}&limit=50"}),
        ("GET /health", "get.lua", {"BENCH_PATH": "/health"}),
    ]


def measure_ratios(url, tenant, servers):
    """`servers` (label -> Server), the ceiling first, on the scenarios the ceiling serves,
    RATIO_ROUNDS rounds alternating; returns results by label, scenario, round."""
    scenarios = [s for s in load_scenarios(None, tenant, tenant["flows"][0]) if s[0] in RATIO_SCENARIOS]
    results = {label: {name: [] for name, _, _ in scenarios} for label in servers}
    for n in range(1, RATIO_ROUNDS + 1):
        for name, script, env in scenarios:
            for label, server in servers.items():
                server.reset_peak()
                result = wrk(server, script, tenant, **env)
                result["peak"] = server.memory("VmHWM")
                results[label][name].append(result)
                say(f"ratio round {n}: {label}: {name}: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms, "
                    f"{result['errors']} errors, {result['steal']:.0%} of the cores stolen")
    return results


def print_ratios(results):
    labels = list(results)
    ceiling = labels[0]
    rounds = len(next(iter(results[ceiling].values())))
    print(f"\n### Against the ceiling (bench/ceiling; {THREADS} wrk threads, {CONNECTIONS} connections, "
          f"pool {POOL}, {SECONDS} s each, {rounds} rounds alternating, medians)\n")
    row("scenario", "server", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs per request: server", "PostgreSQL",
        "of the ceiling's req/s")
    row(*["---"] * 9)
    for name in results[ceiling]:
        top = median_of(results[ceiling][name], "rps")
        for label in labels:
            runs = results[label][name]
            cpu = [per_request(r) for r in runs]
            rps = median_of(runs, "rps")
            row(name, label, f"{rps:.0f}", f"{median_of(runs, 'p50'):.2f}", f"{median_of(runs, 'p99'):.2f}",
                sum(r["errors"] for r in runs), f"{median_of(cpu, 'server'):.0f}", f"{median_of(cpu, 'postgres'):.0f}",
                f"{rps / top:.0%}")
    stolen = max(r["steal"] for label in labels for runs in results[label].values() for r in runs)
    print(f"\nThe most of the machine's cores the hypervisor stole during any of these: {stolen:.0%} "
          f"(much more than a few percent makes req/s noise).")
    print("\nEach round (req/s, and the fraction of the ceiling's in the same round):\n")
    row("scenario", "round", *labels)
    row(*["---"] * (2 + len(labels)))
    for name in results[ceiling]:
        for n in range(rounds):
            top = results[ceiling][name][n]["rps"]
            row(name, n + 1, *(f"{results[label][name][n]['rps']:.0f} ({results[label][name][n]['rps'] / top:.0%})"
                               for label in labels))


def measure_load(label, server, tenant):
    """Every scenario against `server`; returns the results by scenario name."""
    results = {}
    for name, script, env in load_scenarios(server, tenant, tenant["flows"][0]):
        server.reset_peak()
        result = wrk(server, script, tenant, **env)
        result["peak"] = server.memory("VmHWM")
        results[name] = result
        say(f"{label}: {name}: {result['rps']:.0f} req/s, p50 {result['p50']:.2f} ms, "
            f"p99 {result['p99']:.2f} ms, {result['errors']} errors, peak {result['peak']:.1f} MiB")
    return results


def grow_execution_logs(url, tenant, flow, total):
    """Adds rows for one flow of `tenant` until it has `total`, in SQL (a million POSTs would
    take the benchmark's whole budget); ids keep the UUIDv7 layout, so they sort by time."""
    have = int(psql(url, f"SELECT count(*) FROM execution_logs WHERE org_id = '{tenant['org']}'"))
    psql(url, f"""
        INSERT INTO execution_logs (id, org_id, flow_id, user_id, execution_id, step_id, status,
                                    inputs, outputs, error, created_at, updated_at)
        SELECT (lpad(to_hex(1800000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 3)
                || '8' || substr(md5(g::text), 4, 15))::uuid,
               '{tenant['org']}', '{flow}', '{tenant['user']}', 'run-' || (g / 4), 'fetch',
               'completed', jsonb_build_object('n', g), '{{"ok": true}}', NULL, now(), now()
        FROM generate_series({have}, {total - 1}) AS g;
        ANALYZE execution_logs;""")


def builds():
    """What is measured, oldest first: each optimisation beside the build before it."""
    measured = [(f"{BASELINE_REV}", BASELINE_BINARY, {})] if BASELINE_BINARY else []
    return measured + [("this build", BINARY, {})]


def ceiling_of(url, server, tenant, label):
    """The server's SQL for each of CEILING_REQUESTS, from the statement log, and the pgbench
    script of it (run once every build has been measured)."""
    tool_id = tenant["tools"][0]
    found = {}
    for name, method, path, body in (
            ("GET /tools/{id}", "GET", f"/tools/{tool_id}", None),
            ("POST /tools", "POST", "/tools",
             lambda n: {"name": f"probe-{n}-{time.time_ns()}", "baseUrl": "https://x.example", "authType": "none"})):
        trips, sql = statements_of(server, tenant, method, path, body)
        script, lines = pgbench_script(url, sql, f"{label}-{method}".replace(" ", "-").replace(",", ""))
        found[name] = {"trips": trips, "sql": sql, "script": script, "lines": lines}
    return found


def per_request(result):
    """µs of CPU per request of each process group in `result` (a wrk or pgbench result)."""
    rate = result.get("rps") or result["tps"]
    return {group: used / rate * 1e6 for group, used in result["cpu"].items()}


def median_of(results, key):
    return statistics.median(result[key] for result in results)


def statement_times(url):
    """Mean execution time (µs) and calls of each statement since the last reset, from
    pg_stat_statements, by the statement's first 40 characters."""
    found = psql(url, f"""
        SELECT left(query, 40), calls, mean_exec_time * 1000 FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{DATABASE}') AND calls >= 100""")
    times = {}
    for line in found.splitlines():
        text, calls, micros = line.split("|")
        times[text] = {"calls": int(calls), "micros": float(micros)}
    return times


# The first 40 characters of the two statements of a request with a key (pg_stat_statements).
KEY_LOOKUP_SQL = 'SELECT "api_keys"."id" AS "A_id", "api_k'
TOOL_SQL = 'SELECT "tools"."id", "tools"."org_id", "'


def key_lookup(url, server, tenant):
    """`GET /tools/{id}` with the tenant headers against the same request with an API key of
    the same user, on the same server and database: the SQL of each (statement log), then wrk
    alternating between the two for KEY_ROUNDS rounds, then pgbench alternating between the
    SQL of each and the key's lookup alone. `None` when the build has no API keys."""
    owner = Client(server, tenant["org"], tenant["user"])
    try:
        key = owner.call("POST", "/api-keys", {"name": "bench"}, expect=(201,))["key"]
    except RuntimeError as err:
        say(f"key lookup: skipped, no API key: {err}")
        return None
    tool_id = tenant["tools"][0]
    ways = {"headers": {"lua": "get_tool.lua", "env": {}},
            "key": {"lua": "get_tool_key.lua", "env": {"BENCH_KEY": key}}}
    for name, way in ways.items():
        # The first request with the key marks it used (in the background, at most once a
        # minute) before the statement log is turned on, so the 50 logged requests are reads.
        trips, sql = statements_of(server, tenant, "GET", f"/tools/{tool_id}", None,
                                   key=key if name == "key" else None)
        script, lines = pgbench_script(url, sql, f"key-lookup-{name}")
        way.update(trips=trips, sql=sql, pgbench=script, lines=lines, load=[], single=[], ceiling=[], times=[])
        say(f"key lookup: {name}: {trips:g} statements per request")
    lookup = [line for line in ways["key"]["lines"] if line.startswith(KEY_LOOKUP_SQL)]
    if len(lookup) != 1:
        raise RuntimeError(f"the key's lookup is not one statement: {ways['key']['lines']}")
    alone = {"pgbench": "/tmp/tolstoy-bench-key-lookup-alone.sql", "lines": lookup, "ceiling": []}
    with open(alone["pgbench"], "w") as script:
        script.write(lookup[0] + "\n")
    # The plans PostgreSQL runs for the server's own statements, to show which indexes they read.
    ways["key"]["plans"] = plans_of(server, tenant, "GET", f"/tools/{tool_id}", key=key)
    for n in range(1, KEY_ROUNDS + 1):
        for name, way in ways.items():
            server.reset_peak()
            psql(url, "SELECT pg_stat_statements_reset()")
            result = wrk(server, way["lua"], tenant, BENCH_IDS=",".join(tenant["tools"]), **way["env"])
            result["peak"] = server.memory("VmHWM")
            way["load"].append(result)
            way["times"].append(statement_times(url))
            say(f"key lookup: round {n}: {name}: {result['rps']:.0f} req/s, p50 {result['p50']:.2f} ms, "
                f"p99 {result['p99']:.2f} ms, {result['errors']} errors")
    # One connection: the latency of a request when nothing queues, what a lone client sees.
    for n in range(1, KEY_ROUNDS + 1):
        for name, way in ways.items():
            result = wrk(server, way["lua"], tenant, seconds=max(5, SECONDS // 2), connections=1, threads=1,
                         BENCH_IDS=",".join(tenant["tools"]), **way["env"])
            way["single"].append(result)
            say(f"key lookup: one connection, round {n}: {name}: p50 {result['p50'] * 1000:.0f} µs, "
                f"p99 {result['p99'] * 1000:.0f} µs, {result['rps']:.0f} req/s, {result['errors']} errors")
    for n in range(1, KEY_ROUNDS + 1):
        for name, way in (*ways.items(), ("lookup alone", alone)):
            result = pgbench(url, way["pgbench"])
            way["ceiling"].append(result)
            say(f"key lookup: pgbench round {n}: {name}: {result['tps']:.0f} tps")
    return {**ways, "lookup alone": alone}


def print_key_lookup(ways):
    headers, key, alone = ways["headers"], ways["key"], ways["lookup alone"]
    rounds = len(headers["load"])
    print(f"\n### Key lookup: `GET /tools/{{id}}` with the tenant headers and with an API key "
          f"(same server, headers mode; {rounds} rounds alternating, medians)\n")
    row("credentials", "req/s", "p50 ms", "p99 ms", "errors", "statements per request",
        "PostgreSQL execution µs per request", "CPU µs per request: wrk", "server", "PostgreSQL",
        "cores busy: these", "others")
    row(*["---"] * 12)
    medians = {}
    for name in ("headers", "key"):
        way = ways[name]
        load, cpu = way["load"], [per_request(r) for r in way["load"]]
        # Execution time inside PostgreSQL (pg_stat_statements) per request, all its statements.
        executed = [sum(t["calls"] * t["micros"] for t in times.values()) / r["requests"]
                    for times, r in zip(way["times"], load)]
        m = {"rps": median_of(load, "rps"), "p50": median_of(load, "p50"), "p99": median_of(load, "p99"),
             "client": median_of(cpu, "client"), "server": median_of(cpu, "server"),
             "postgres": median_of(cpu, "postgres"), "executed": statistics.median(executed),
             "busy": statistics.median(sum(r["cpu"].values()) for r in load),
             "others": statistics.median(r["machine"] - sum(r["cpu"].values()) for r in load)}
        medians[name] = m
        row(name, f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}", sum(r["errors"] for r in load),
            f"{way['trips']:g}", f"{m['executed']:.0f}", f"{m['client']:.0f}", f"{m['server']:.0f}",
            f"{m['postgres']:.0f}", f"{m['busy']:.2f}", f"{max(m['others'], 0):.2f}")
    h, k = medians["headers"], medians["key"]
    ratios = [b["rps"] / a["rps"] for a, b in zip(headers["load"], key["load"])]
    print(f"\nkey against headers (medians): req/s {k['rps'] / h['rps'] - 1:+.1%} (per round "
          f"{min(ratios) - 1:+.0%} to {max(ratios) - 1:+.0%}), p50 {k['p50'] / h['p50'] - 1:+.1%}, "
          f"p99 {k['p99'] / h['p99'] - 1:+.1%}; CPU per request: server {k['server'] - h['server']:+.0f} µs, "
          f"PostgreSQL {k['postgres'] - h['postgres']:+.0f} µs, wrk {k['client'] - h['client']:+.0f} µs; "
          f"PostgreSQL execution {k['executed'] - h['executed']:+.0f} µs per request\n")
    print(f"One connection, one wrk thread ({max(5, SECONDS // 2)} s each, the same {rounds} rounds alternating, "
          "medians): the latency of one request when nothing queues.\n")
    row("credentials", "p50 µs", "p99 µs", "req/s", "errors")
    row(*["---"] * 5)
    single = {}
    for name in ("headers", "key"):
        runs = ways[name]["single"]
        s = single[name] = {"p50": median_of(runs, "p50") * 1000, "p99": median_of(runs, "p99") * 1000,
                            "rps": median_of(runs, "rps")}
        row(name, f"{s['p50']:.0f}", f"{s['p99']:.0f}", f"{s['rps']:.0f}", sum(r["errors"] for r in runs))
    print(f"\nkey against headers, one connection: p50 {single['key']['p50'] - single['headers']['p50']:+.0f} µs "
          f"({single['key']['p50'] / single['headers']['p50'] - 1:+.0%}), p99 "
          f"{single['key']['p99'] - single['headers']['p99']:+.0f} µs\n")
    print("Mean execution time of each statement inside PostgreSQL (pg_stat_statements, median of the rounds):\n")
    row("statement", "with headers µs", "with a key µs")
    row("---", "---", "---")
    for label, prefix in (("the key's lookup (api_keys by digest, joined with its user)", KEY_LOOKUP_SQL),
                          ("the tenant query (tools by id, membership in its WHERE)", TOOL_SQL)):
        cells = []
        for way in (headers, key):
            values = [t[prefix]["micros"] for t in way["times"] if prefix in t]
            cells.append(f"{statistics.median(values):.1f}" if values else "")
        row(label, *cells)
    print("\npgbench, the same SQL with its logged parameters inlined (16 clients, 2 threads, "
          f"{rounds} rounds alternating, medians):\n")
    row("script", "statements", "tps", "latency ms", "PostgreSQL CPU µs per transaction",
        "pgbench CPU µs per transaction")
    row(*["---"] * 6)
    ceilings = {}
    for name, label in (("headers", "the SQL of a request with headers"), ("key", "the SQL of a request with a key"),
                        ("lookup alone", "the key's lookup alone")):
        ceiling = ways[name]["ceiling"]
        cpu = [per_request(r) for r in ceiling]
        c = ceilings[name] = {"tps": median_of(ceiling, "tps"), "latency": median_of(ceiling, "latency"),
                              "postgres": median_of(cpu, "postgres"), "client": median_of(cpu, "client")}
        row(label, len(ways[name]["lines"]), f"{c['tps']:.0f}", f"{c['latency']:.2f}", f"{c['postgres']:.0f}",
            f"{c['client']:.0f}")
    print(f"\nkey against headers under pgbench: tps {ceilings['key']['tps'] / ceilings['headers']['tps'] - 1:+.1%}, "
          f"PostgreSQL CPU {ceilings['key']['postgres'] - ceilings['headers']['postgres']:+.0f} µs per transaction\n")
    print("Each round:\n")
    row("round", "headers req/s", "key req/s", "key / headers", "headers p50 / p99 ms", "key p50 / p99 ms",
        "one connection p50 µs: headers", "key", "pgbench tps: headers", "key", "lookup alone")
    row(*["---"] * 11)
    for n in range(rounds):
        a, b = headers["load"][n], key["load"][n]
        row(n + 1, f"{a['rps']:.0f}", f"{b['rps']:.0f}", f"{b['rps'] / a['rps']:.3f}",
            f"{a['p50']:.2f} / {a['p99']:.2f}", f"{b['p50']:.2f} / {b['p99']:.2f}",
            *(f"{ways[name]['single'][n]['p50'] * 1000:.0f}" for name in ("headers", "key")),
            *(f"{ways[name]['ceiling'][n]['tps']:.0f}" for name in ("headers", "key", "lookup alone")))
    print()
    for name in ("headers", "key"):
        way = ways[name]
        print(f"SQL of one request with {'the headers' if name == 'headers' else 'a key'} "
              f"({way['trips']:g} statements per request, 50 requests logged):\n\n```sql\n"
              + "\n".join(way["lines"]) + "\n```\n")
    for label, prefix in (("the key's lookup", KEY_LOOKUP_SQL), ("the tenant query", TOOL_SQL)):
        plan = key["plans"].get(prefix, "(not found in the log: is auto_explain loaded?)")
        print(f"Plan of {label} as the server's prepared statement ran it (auto_explain, the last of "
              f"20 requests with the key):\n\n```\n{plan}\n```\n")


def main():
    say(f"{THREADS} threads, {CONNECTIONS} connections, {SECONDS} s per scenario")
    for name in (DATABASE, OLDER_DATABASE):
        psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(ADMIN_URL, f"CREATE DATABASE {DATABASE}")
    url = database_url(DATABASE)
    older_url = url
    psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    organizations = None
    runs = []
    sql_of = {}  # by binary: a ping is a protocol message, so settings do not change the SQL
    measured = builds()
    for index, (label, binary, env) in enumerate(measured):
        if index == len(measured) - 1 and index > 0:
            psql(ADMIN_URL, f"CREATE DATABASE {OLDER_DATABASE} TEMPLATE {DATABASE}")
            older_url = database_url(OLDER_DATABASE)
        server = Server(url, binary, **env)
        if organizations is None:
            organizations = seed(server)
            tenant = organizations[0]
        idle = server.memory("VmRSS")
        if binary not in sql_of:
            sql_of[binary] = {"label": label.split(",")[0], **ceiling_of(url, server, tenant, label)}
        results = measure_load(label, server, tenant)
        after = server.memory("VmRSS")
        runs.append({"label": label, "results": results, "sql": sql_of[binary]})
        if index < len(measured) - 1:
            server.stop()
    for sql in sql_of.values():
        for name in CEILING_REQUESTS:
            sql[name]["ceiling"] = pgbench(url, sql[name]["script"])
            say(f"pgbench: {sql['label']}: {name}: {sql[name]['ceiling']['tps']:.0f} tps, "
                f"{sql[name]['ceiling']['latency']:.2f} ms average")
    # `server`, `results`, `idle` and `after` are those of the last build, this one.

    # Against the ceiling: the ceiling, the baseline and this build, alternating.
    ratios = None
    if CEILING_BINARY:
        # At the default log level, info (one line per request), as users run it; the ceiling
        # logs nothing.
        contenders = {"ceiling": Ceiling(url)}
        if BASELINE_BINARY:
            contenders[BASELINE_REV] = Server(older_url, BASELINE_BINARY, RUST_LOG="info")
        contenders["this build"] = Server(url, BINARY, RUST_LOG="info")
        ratios = measure_ratios(url, tenant, contenders)
        for contender in contenders.values():
            contender.stop()

    # Key lookup: the same tenant request with the headers and with an API key, this build.
    keys = key_lookup(url, server, tenant)

    # Scaling: the first page of one organization's execution logs at 10 thousand and 1 million.
    scale_tenant = organizations[1]
    flow = scale_tenant["flows"][0]
    first_page = {}
    for total in (10_000, 1_000_000):
        grow_execution_logs(url, scale_tenant, flow, total)
        result = wrk(server, "get.lua", scale_tenant, seconds=max(5, SECONDS // 2), connections=1, threads=1,
                     BENCH_PATH=f"/execution-logs?flowId={flow}&limit=50")
        first_page[total] = result
        say(f"scaling: {total} rows: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms")
    server.stop()

    if ratios:
        print_ratios(ratios)
    print(f"\n### Load ({THREADS} wrk threads, {CONNECTIONS} connections, {SECONDS} s each)\n")
    row("scenario", "build", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB", "pgbench ceiling tps",
        "of ceiling")
    row(*["---"] * 9)
    for name in results:
        for run in runs:
            r, c = run["results"][name], run["sql"].get(name, {}).get("ceiling")
            row(name, run["label"], f"{r['rps']:.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", r["errors"],
                f"{r['peak']:.1f}", f"{c['tps']:.0f}" if c else "", f"{r['rps'] / c['tps']:.0%}" if c else "")
    print("\n### CPU per request (µs of user + system time; the machine has 2 cores to share)\n")
    row("request", "build", "requests/s", "load generator", "server", "PostgreSQL", "total", "cores busy")
    row(*["---"] * 8)
    for name in CEILING_REQUESTS:
        measured = [(f"wrk, {run['label']}", run["results"][name]) for run in runs]
        measured += [(f"pgbench, the SQL of {sql['label']}", sql[name]["ceiling"]) for sql in sql_of.values()]
        for label, result in measured:
            rate, cpu = result.get("rps") or result["tps"], result["cpu"]
            micros = {group: used / rate * 1e6 for group, used in cpu.items()}
            server = f"{micros['server']:.0f}" if "server" in micros else ""
            row(name, label, f"{rate:.0f}", f"{micros['client']:.0f}", server, f"{micros['postgres']:.0f}",
                f"{sum(micros.values()):.0f}", f"{sum(cpu.values()):.2f}")
    print(f"\n### Database round trips per request (PostgreSQL statement log, 50 requests each)\n")
    row("request", "build", "statements per request", "what they are")
    row("---", "---", "---", "---")
    for sql in sql_of.values():
        for name in CEILING_REQUESTS:
            kinds = "; ".join(text.split(" FROM ")[0][:60] for text, _ in sql[name]["sql"])
            row(name, sql["label"], f"{sql[name]['trips']:g}", kinds.replace("|", "\\|"))
    print("\n### pgbench scripts (the server's SQL, its logged parameters inlined)\n")
    for sql in sql_of.values():
        for name in CEILING_REQUESTS:
            print(f"{name}, {sql['label']}:\n\n```sql\n" + "\n".join(sql[name]["lines"]) + "\n```\n")
    print("### Scaling: first page of `GET /execution-logs?flowId=…&limit=50`, one connection\n")
    row("rows of the organization", "p50 ms", "p99 ms", "req/s")
    row("---", "---", "---", "---")
    for total, r in first_page.items():
        row(f"{total:,}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['rps']:.0f}")
    ratio = first_page[1_000_000]["p50"] / first_page[10_000]["p50"]
    print(f"\n1 million / 10 thousand (p50): {ratio:.2f}×\n")
    if keys:
        print_key_lookup(keys)
        print()
    print("### Memory (RSS)\n")
    peak = max(r["peak"] for r in results.values())
    row("idle after start", "peak under load", "after the load")
    row("---", "---", "---")
    row(f"{idle:.1f} MiB", f"{peak:.1f} MiB", f"{after:.1f} MiB")


if __name__ == "__main__":
    main()
