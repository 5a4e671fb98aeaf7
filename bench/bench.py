"""The benchmark behind docs/benchmarks.md; run it through bench/run.sh.

It starts the release binary on a fresh PostgreSQL database, seeds it through the API, drives
each scenario with wrk, measures the SQL the server sends (from PostgreSQL's statement log) and
runs that SQL with pgbench at the same client count, then measures the execution-log list at 10
thousand and at 1 million rows. It prints Markdown tables.
"""

import http.client
import json
import os
import re
import socket
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
CONNECTIONS = 16  # wrk connections = pgbench clients = the server's pool size
THREADS = 2  # the machine's cores
ORGS, USERS, TOOLS, FLOWS, LOGS = 10, 10, 100, 20, 1000
DATABASE = "tolstoy_bench"
# The requests whose SQL is counted and replayed by pgbench: the ceilings.
CEILING_REQUESTS = ("GET /tools/{id}", "POST /tools")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(text):
    print(f"bench: {text}", file=sys.stderr, flush=True)


def database_url(name):
    return urllib.parse.urlparse(ADMIN_URL)._replace(path=f"/{name}").geturl()


def psql(url, sql):
    out = subprocess.run(["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Server:
    """The release binary on `url`, with the pool as large as the load's connection count."""

    def __init__(self, url, binary=BINARY, **env):
        self.port = free_port()
        environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECT_URL")}
        environment.update(DATABASE_URL=url, PORT=str(self.port), RUST_LOG="warn",
                           DB_MAX_CONNECTIONS=str(CONNECTIONS), **env)
        self.process = subprocess.Popen([binary, "serve", "--migrate"], env=environment,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                Client(self).call("GET", "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the server did not start")

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive connection to the server."""

    def __init__(self, server, org=None, user=None):
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.headers = {"Content-Type": "application/json"}
        if org:
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
    found = subprocess.run(["pgrep", "-f", f"^postgres: .* {DATABASE} "], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def run_measuring_cpu(command, seconds, others, **options):
    """Runs `command` for about `seconds` and returns its stdout and the CPU seconds per second
    of wall time that it, each process group of `others` (name -> pids) and PostgreSQL's
    backends used in the middle of the run (a second in from either end, when all are busy)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
    margin = 1 if seconds >= 3 else 0
    time.sleep(margin)
    groups = {"client": [process.pid], **others, "postgres": backends()}
    started, before = time.monotonic(), {name: cpu_seconds(pids) for name, pids in groups.items()}
    time.sleep(max(seconds - 2 * margin, 0.5))
    elapsed, after = time.monotonic() - started, {name: cpu_seconds(pids) for name, pids in groups.items()}
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {err[-500:]}")
    load = {name: sum(after[name][pid] - before[name][pid] for pid in after[name] if pid in before[name]) / elapsed
            for name in groups}
    return out, load


def wrk(server, script, tenant, seconds=SECONDS, connections=CONNECTIONS, threads=THREADS, **env):
    environment = dict(os.environ, BENCH_LUA_DIR=LUA_DIR, BENCH_ORG=tenant["org"],
                       BENCH_USER=tenant["user"], **env)
    out, load = run_measuring_cpu(["wrk", "--latency", "-t", str(threads), "-c", str(connections),
                                   "-d", f"{seconds}s", "-s", os.path.join(LUA_DIR, script), server.base],
                                  seconds, {"server": [server.process.pid]}, env=environment)
    def number(pattern, default="0"):
        found = re.search(pattern, out, re.MULTILINE)
        return found.group(1) if found else default
    def millis(text):
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = int(number(r"Non-2xx or 3xx responses: (\d+)"))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    for failure in re.findall(r"first failure: (.*)", out):
        say(f"{script}: {failure}")
    return {"rps": float(number(r"Requests/sec:\s+([\d.]+)")),
            "p50": millis(number(r"^\s+50%\s+(\S+)")), "p99": millis(number(r"^\s+99%\s+(\S+)")),
            "requests": int(number(r"(\d+) requests in")), "errors": errors, "cpu": load}


def statements_of(server, tenant, method, path, body, count=50):
    """What the server sends to PostgreSQL for `count` such requests, from its statement log:
    statements per request, and those of the last request with their parameters."""
    client = Client(server, tenant["org"], tenant["user"])
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
    out, load = run_measuring_cpu(["pgbench", "-n", "-M", "prepared", "-c", str(CONNECTIONS), "-j", str(THREADS),
                                   "-T", str(seconds), "-f", script, url], seconds, {})
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    return {"tps": tps, "latency": latency, "cpu": load}


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
    measured = []
    if BASELINE_BINARY:
        measured += [
            (f"{BASELINE_REV}, ping before each statement", BASELINE_BINARY, {"DB_TEST_BEFORE_ACQUIRE": "true"}),
            (f"{BASELINE_REV}", BASELINE_BINARY, {}),
        ]
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


def main():
    say(f"{THREADS} threads, {CONNECTIONS} connections, {SECONDS} s per scenario")
    psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    psql(ADMIN_URL, f"CREATE DATABASE {DATABASE}")
    url = database_url(DATABASE)
    psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    organizations = None
    runs = []
    sql_of = {}  # by binary: a ping is a protocol message, so settings do not change the SQL
    measured = builds()
    for index, (label, binary, env) in enumerate(measured):
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
    print("### Memory (RSS)\n")
    peak = max(r["peak"] for r in results.values())
    row("idle after start", "peak under load", "after the load")
    row("---", "---", "---")
    row(f"{idle:.1f} MiB", f"{peak:.1f} MiB", f"{after:.1f} MiB")


if __name__ == "__main__":
    main()
