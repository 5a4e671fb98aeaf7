"""The queue benchmark of issue 15 behind docs/benchmarks.md; run it through bench/queue.sh.

One flow with one action step that calls a local HTTP target (bench/queue/target.js, 200 `{}`
at once), measured as:

1. throughput: RUNS runs enqueued through the API (`POST /flows/{id}/runs`, an API-only server
   with WORKERS=0) while no worker runs, then 1 or 2 `tolstoy worker` processes (WORKERS=4)
   started and the queue drained: runs/s from the first claim to the last finish; beside it, in
   the same rounds, graphile-worker (bench/queue/graphile.js, concurrency 4 per process) on the
   same PostgreSQL draining RUNS equivalent jobs (the same call to the same target); SQL
   statements per run and per job (pg_stat_statements), CPU per run of each process; then
   SQLite, `tolstoy serve` alone with its 4 slots;
2. latency: a steady trickle at each rate of TRICKLE, from the run's `createdAt` (the job's
   `created_at`) to the target receiving the call;
3. `GET /tools/{id}` with wrk on the API server while one worker process drains runs, against
   the same with the worker idle, alternating.

Rounds alternate between the sides, so that the drift of the shared machine falls on all alike;
medians are reported. Prints Markdown tables.
"""

import datetime
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (its Client, wrk and CPU readings; it reads the same environment)

BINARY = os.environ["BENCH_BINARY"]
ADMIN_URL = os.environ["TEST_DATABASE_URL"]
POSTGRES_DATA = os.path.join(os.path.dirname(os.environ["TEST_POSTGRES_LOG"]), "data")
HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE_DIR = os.path.join(HERE, "queue")
RUNS = int(os.environ.get("BENCH_RUNS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
# rate per second : how many, for each trickle
TRICKLE = [tuple(int(n) for n in item.split(":"))
           for item in os.environ.get("BENCH_TRICKLE", "5:100,50:500").split(",")]
SLOTS = 4  # WORKERS of each tolstoy process = concurrency of each graphile-worker process
ENQUEUERS = 2  # client threads enqueueing through the API (the machine's cores)
DATABASE = "tolstoy_queue"
GRAPHILE_DATABASE = "graphile_queue"
# The benchmark's own polling connects as this role, so that pg_stat_statements can leave it out.
PROBE = "bench_probe"
LOG_DIR = tempfile.mkdtemp(prefix="tolstoy-queue-bench-")
bench.DATABASE = DATABASE  # whose backends bench.wrk counts as PostgreSQL's CPU
say = bench.say


def database_url(name, user="postgres"):
    parts = urllib.parse.urlparse(ADMIN_URL)
    return parts._replace(path=f"/{name}", netloc=f"{user}@{parts.hostname}:{parts.port}").geturl()


def psql(url, sql):
    """Rows of `sql` as lists of fields (separated by the unit separator, which SQL text lacks)."""
    out = subprocess.run(["psql", "-qAtX", "-F", "\x1f", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                         check=True, capture_output=True, text=True)
    return [line.split("\x1f") for line in out.stdout.splitlines() if line]


def probe(database, sql):
    return psql(database_url(database, PROBE), sql)


# -- processes ---------------------------------------------------------------------------------

class Process:
    """A child process with its stderr in LOG_DIR; `stop` sends SIGTERM and waits."""

    def __init__(self, name, command, env=None, stdout=subprocess.DEVNULL):
        self.name = name
        self.log = os.path.join(LOG_DIR, f"{name}.log")
        self.process = subprocess.Popen(command, env=env, stdout=stdout, stderr=open(self.log, "a"),
                                        text=True)
        self.pid = self.process.pid

    def stop(self, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=timeout)
        return out

    def warnings(self):
        with open(self.log, errors="replace") as log:
            return [line.rstrip() for line in log if line.strip()]


def tolstoy_env(url, **extra):
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECT_URL")}
    environment.update(DATABASE_URL=url, RUST_LOG="warn", AUTH_MODE="headers", OUTBOUND_ALLOW_PRIVATE="true",
                       DB_MAX_CONNECTIONS="16", **extra)
    return environment


class Server(Process):
    """`tolstoy serve` on `url` with `workers` run slots (0: the API alone)."""

    def __init__(self, name, url, workers):
        self.port = bench.free_port()
        super().__init__(name, [BINARY, "serve", "--migrate"],
                         tolstoy_env(url, PORT=str(self.port), WORKERS=str(workers)))
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(400):
            try:
                bench.Client(self).call("GET", "/health")
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not start; see {self.log}")


def tolstoy_workers(count, url):
    return [Process(f"worker-{n}", [BINARY, "worker"], tolstoy_env(url, WORKERS=str(SLOTS)))
            for n in range(count)]


def graphile_workers(count, target):
    return [Process(f"graphile-{n}", ["node", os.path.join(QUEUE_DIR, "graphile.js"), "work",
                                      database_url(GRAPHILE_DATABASE), str(target.port), str(SLOTS)],
                    stdout=subprocess.PIPE)
            for n in range(count)]


def wait_ready(processes):
    """graphile.js prints {"ready": true} once it listens for jobs."""
    for p in processes:
        line = p.process.stdout.readline()
        if '"ready"' not in line:
            raise RuntimeError(f"{p.name} did not start: {line!r}; see {p.log}")


class Target(Process):
    """bench/queue/target.js: answers 200 `{}` and notes when each call arrived."""

    def __init__(self):
        super().__init__("target", ["node", os.path.join(QUEUE_DIR, "target.js")], stdout=subprocess.PIPE)
        self.port = json.loads(self.process.stdout.readline())["port"]
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _get(self, path, method="GET"):
        self.connection.request(method, path)
        response = self.connection.getresponse()
        data = response.read()
        return json.loads(data) if data else None

    def count(self):
        return self._get("/__count")["count"]

    def hits(self):
        """id -> the first time (ms) it was called, and how many calls there were."""
        first = {}
        calls = self._get("/__hits")["hits"]
        for key, at in calls:
            first.setdefault(key, at)
        return first, len(calls)

    def reset(self):
        self._get("/__reset", "POST")

    def wait_for(self, count, timeout, interval=0.05):
        deadline = time.monotonic() + timeout
        while (seen := self.count()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the target saw {seen} calls of {count} within {timeout} s")
            time.sleep(interval)


# -- CPU -----------------------------------------------------------------------------------------

def postgres_processes():
    """Every process of the throwaway cluster: the postmaster's children (backends, WAL writer,
    checkpointer, autovacuum, …)."""
    with open(os.path.join(POSTGRES_DATA, "postmaster.pid")) as pid_file:
        postmaster = pid_file.readline().strip()
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[1] == postmaster:
                        children.append(int(entry))
            except OSError:
                pass
    return children


class CpuWindow:
    """CPU seconds of each group of processes (name -> pids, or a function giving them) and of
    the whole machine between `start` and `stop`; a process that appeared in between counts
    from its start."""

    def __init__(self, groups):
        self.groups = groups

    def _read(self):
        return {name: bench.cpu_seconds(pids() if callable(pids) else pids) for name, pids in self.groups.items()}

    def start(self):
        self.before, self.machine, self.started = self._read(), bench.machine_seconds()[0], time.monotonic()

    def stop(self):
        after, machine, elapsed = self._read(), bench.machine_seconds()[0], time.monotonic() - self.started
        used = {name: sum(cpu - self.before[name].get(pid, 0) for pid, cpu in after[name].items())
                for name in after}
        return {"used": used, "machine": machine - self.machine, "elapsed": elapsed}


# -- the API -------------------------------------------------------------------------------------

def seed(server, target):
    """An organization, its owner, a tool on the local target with one action, and 19 more
    tools for `GET /tools/{id}`."""
    org = bench.Client(server).call("POST", "/organizations", {"name": "Queue bench"})["id"]
    user = bench.Client(server, org, "00000000-0000-0000-0000-000000000000").call(
        "POST", "/users", {"email": "owner@queue.example"})["id"]
    api = bench.Client(server, org, user)
    tool = api.call("POST", "/tools", {"name": "Target", "baseUrl": f"http://127.0.0.1:{target.port}",
                                       "authType": "none"})["id"]
    action = api.call("POST", "/actions", {"toolId": tool, "name": "Hit", "method": "GET", "endpoint": "/hit",
                                           "schema": {"type": "object"}})["id"]
    tools = [tool] + [api.call("POST", "/tools", {"name": f"Tool {n}", "baseUrl": f"https://api{n}.example.com",
                                                  "authType": "bearer"})["id"] for n in range(19)]
    return {"org": org, "user": user, "action": action, "tools": tools}


def new_flow(server, tenant):
    steps = [{"id": "hit", "type": "action", "actionId": tenant["action"],
              "inputs": {"query": {"id": "{{ run.id }}"}}}]
    return bench.Client(server, tenant["org"], tenant["user"]).call(
        "POST", "/flows", {"name": f"Hit {time.time_ns()}", "steps": steps})["id"]


def millis(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def enqueue(server, tenant, flow, count):
    """`count` runs through the API from ENQUEUERS keep-alive clients; (runs/s, [(id, createdAt ms)])."""
    def part(share):
        client = bench.Client(server, tenant["org"], tenant["user"])
        return [client.call("POST", f"/flows/{flow}/runs", {"inputs": {}}, expect=(202,)) for _ in range(share)]
    shares = [count // ENQUEUERS + (1 if n < count % ENQUEUERS else 0) for n in range(ENQUEUERS)]
    started = time.monotonic()
    with ThreadPoolExecutor(ENQUEUERS) as pool:
        runs = [run for chunk in pool.map(part, shares) for run in chunk]
    elapsed = time.monotonic() - started
    return count / elapsed, [(run["id"], millis(run["createdAt"])) for run in runs]


def list_runs(server, tenant, flow):
    client = bench.Client(server, tenant["org"], tenant["user"])
    path, runs = f"/runs?flowId={flow}&limit=1000", []
    while path:
        client.connection.request("GET", path, headers=client.headers)
        response = client.connection.getresponse()
        runs += json.loads(response.read())
        link = response.getheader("Link") or ""
        path = link[link.index("<") + 1:link.index(">")] if 'rel="next"' in link else None
    return runs


def trickle(server, tenant, flow, rate, count):
    """`count` runs at `rate` per second from one client; [(id, createdAt ms)]."""
    client = bench.Client(server, tenant["org"], tenant["user"])
    started, runs = time.monotonic(), []
    for n in range(count):
        wait = started + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        run = client.call("POST", f"/flows/{flow}/runs", {"inputs": {}}, expect=(202,))
        runs.append((run["id"], millis(run["createdAt"])))
    return runs


def statements(database):
    """Calls and execution time of every statement since the last reset, the probe's left out."""
    rows = probe(database, f"""
        SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{database}')
          AND userid <> (SELECT oid FROM pg_roles WHERE rolname = '{PROBE}')
        ORDER BY calls DESC, query""")
    return [{"calls": int(calls), "ms": float(ms), "query": query} for calls, ms, query in rows]


def reset_statements(database):
    probe(database, "SELECT pg_stat_statements_reset()")


def truncate_runs():
    psql(database_url(DATABASE), "TRUNCATE runs, run_events, execution_logs CASCADE")


def latencies(created, hits):
    """ms from each id's creation to its first call at the target."""
    missing = [key for key, _ in created if key not in hits]
    if missing:
        raise RuntimeError(f"{len(missing)} enqueued but never called, e.g. {missing[0]}")
    return [hits[key] - at for key, at in created]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


# -- the measurements ----------------------------------------------------------------------------

def drain_tolstoy_pg(api, tenant, target, processes):
    truncate_runs()
    flow = new_flow(api, tenant)
    target.reset()
    reset_statements(DATABASE)
    enqueue_rate, _ = enqueue(api, tenant, flow, RUNS)
    enqueue_sql = statements(DATABASE)
    reset_statements(DATABASE)
    workers = tolstoy_workers(processes, database_url(DATABASE))
    cpu = CpuWindow({"workers": [w.pid for w in workers], "postgres": postgres_processes,
                     "target": [target.pid], "API server (idle)": [api.pid]})
    target.wait_for(1, 60, 0.002)
    cpu.start()
    target.wait_for(RUNS, 900)
    deadline = time.monotonic() + 60
    while probe(DATABASE, "SELECT count(*) FROM runs WHERE finished_at IS NULL")[0][0] != "0":
        if time.monotonic() > deadline:
            raise RuntimeError("runs were called but not finished within 60 s")
        time.sleep(0.05)
    window = cpu.stop()
    sql = statements(DATABASE)
    hits, calls = target.hits()
    for worker in workers:
        worker.stop()
    rows = probe(DATABASE, """
        SELECT status, count(*), extract(epoch FROM min(started_at)) * 1000,
               extract(epoch FROM max(finished_at)) * 1000 FROM runs GROUP BY status""")
    statuses = {status: int(n) for status, n, _, _ in rows}
    first = min(float(r[2]) for r in rows)
    last = max(float(r[3]) for r in rows)
    return {"rate": RUNS / ((last - first) / 1000), "seconds": (last - first) / 1000, "statuses": statuses,
            "calls": calls, "enqueue_rate": enqueue_rate, "enqueue_sql": enqueue_sql, "cpu": window, "sql": sql,
            "warnings": sum((w.warnings() for w in workers), [])}


def drain_graphile(target, processes):
    url = database_url(GRAPHILE_DATABASE)
    target.reset()
    psql(url, f"SELECT count(graphile_worker.add_job('hit', json_build_object('n', g))) FROM generate_series(1, {RUNS}) g")
    reset_statements(GRAPHILE_DATABASE)
    workers = graphile_workers(processes, target)
    cpu = CpuWindow({"workers": [w.pid for w in workers], "postgres": postgres_processes, "target": [target.pid]})
    target.wait_for(1, 60, 0.002)
    cpu.start()
    target.wait_for(RUNS, 900)
    deadline = time.monotonic() + 60
    while probe(GRAPHILE_DATABASE, "SELECT count(*) FROM graphile_worker._private_jobs")[0][0] != "0":
        if time.monotonic() > deadline:
            raise RuntimeError("jobs were called but not completed within 60 s")
        time.sleep(0.05)
    window = cpu.stop()
    sql = statements(GRAPHILE_DATABASE)
    hits, calls = target.hits()
    seen = [json.loads(worker.stop().strip().splitlines()[-1]) for worker in workers]
    first = min(s["firstStart"] for s in seen if s["firstStart"])
    last = max(s["lastComplete"] for s in seen if s["lastComplete"])
    jobs, failed = sum(s["jobs"] for s in seen), sum(s["failed"] for s in seen)
    return {"rate": RUNS / ((last - first) / 1000), "seconds": (last - first) / 1000,
            "statuses": {"completed": jobs - failed, "failed": failed}, "calls": calls, "cpu": window, "sql": sql,
            "warnings": sum((w.warnings() for w in workers), [])}


def drain_sqlite(target):
    """A fresh SQLite file: RUNS runs enqueued through `serve` with WORKERS=0, which is then
    stopped, and `serve` with its 4 slots started on the same file to drain them."""
    directory = tempfile.mkdtemp(prefix="tolstoy-queue-sqlite-", dir=LOG_DIR)
    url = f"sqlite://{directory}/queue.db?mode=rwc"
    api = Server("sqlite-api", url, 0)
    tenant = seed(api, target)
    flow = new_flow(api, tenant)
    enqueue_rate, _ = enqueue(api, tenant, flow, RUNS)
    api.stop()
    target.reset()
    server = Server("sqlite-serve", url, SLOTS)
    cpu = CpuWindow({"server with its workers": [server.pid], "target": [target.pid]})
    target.wait_for(1, 60, 0.002)
    cpu.start()
    target.wait_for(RUNS, 900)
    client = bench.Client(server, tenant["org"], tenant["user"])
    deadline = time.monotonic() + 60
    while any(client.call("GET", f"/runs?flowId={flow}&status={s}&limit=1") for s in ("queued", "running")):
        if time.monotonic() > deadline:
            raise RuntimeError("runs were called but not finished within 60 s")
        time.sleep(0.05)
    window = cpu.stop()
    hits, calls = target.hits()
    runs = list_runs(server, tenant, flow)
    server.stop()
    first = min(millis(r["startedAt"]) for r in runs)
    last = max(millis(r["finishedAt"]) for r in runs)
    statuses = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"rate": RUNS / ((last - first) / 1000), "seconds": (last - first) / 1000, "statuses": statuses,
            "calls": calls, "enqueue_rate": enqueue_rate, "cpu": window, "warnings": server.warnings()}


def latency_tolstoy(enqueuer, tenant, target, label):
    results = {}
    for rate, count in TRICKLE:
        flow = new_flow(enqueuer, tenant)
        target.reset()
        created = trickle(enqueuer, tenant, flow, rate, count)
        target.wait_for(count, 120)
        hits, _ = target.hits()
        results[rate] = latencies(created, hits)
        say(f"latency: {label}: {rate}/s: p50 {percentile(results[rate], 0.5):.1f} ms, "
            f"p99 {percentile(results[rate], 0.99):.1f} ms")
        time.sleep(2)
    return results


def latency_graphile(target, processes, label):
    workers = graphile_workers(processes, target)
    wait_ready(workers)
    time.sleep(3)
    results = {}
    for rate, count in TRICKLE:
        target.reset()
        out = subprocess.run(["node", os.path.join(QUEUE_DIR, "graphile.js"), "trickle",
                              database_url(GRAPHILE_DATABASE), str(rate), str(count)],
                             check=True, capture_output=True, text=True).stdout
        created = json.loads(out)["added"]
        target.wait_for(count, 120)
        hits, _ = target.hits()
        results[rate] = latencies(created, hits)
        say(f"latency: {label}: {rate}/s: p50 {percentile(results[rate], 0.5):.1f} ms, "
            f"p99 {percentile(results[rate], 0.99):.1f} ms")
        time.sleep(2)
    for worker in workers:
        worker.stop()
    return results


def worker_group(workers, target):
    return {"worker": [w.pid for w in workers], "target": [target.pid]}


def tools_busy_idle(api, tenant, target, drain_rate):
    """wrk on `GET /tools/{id}` of the API server, one worker process idle or draining, alternating."""
    url = database_url(DATABASE)
    backlog = max(RUNS, int(drain_rate * (SECONDS + 5) * 1.5))
    found = {"idle": [], "busy": []}
    ids = ",".join(tenant["tools"])
    for n in range(1, ROUNDS + 1):
        truncate_runs()
        workers = tolstoy_workers(1, url)
        time.sleep(3)  # the worker's poll backs off to once a second on an empty queue
        result = bench.wrk(api, "get_tool.lua", tenant, others=worker_group(workers, target), BENCH_IDS=ids)
        for worker in workers:
            worker.stop()
        found["idle"].append(result)
        say(f"GET /tools/{{id}}: round {n}: idle worker: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms")
        flow = new_flow(api, tenant)
        enqueue(api, tenant, flow, backlog)
        target.reset()
        workers = tolstoy_workers(1, url)
        target.wait_for(1, 60, 0.002)
        time.sleep(1)
        before, started = target.count(), time.monotonic()
        result = bench.wrk(api, "get_tool.lua", tenant, others=worker_group(workers, target), BENCH_IDS=ids)
        result["drain"] = (target.count() - before) / (time.monotonic() - started)
        left = int(probe(DATABASE, "SELECT count(*) FROM runs WHERE finished_at IS NULL")[0][0])
        for worker in workers:
            worker.stop()
        if left == 0:
            say(f"GET /tools/{{id}}: round {n}: the backlog of {backlog} ran out during the load")
        result["left"] = left
        found["busy"].append(result)
        say(f"GET /tools/{{id}}: round {n}: busy worker ({result['drain']:.0f} runs/s): {result['rps']:.0f} req/s, "
            f"p99 {result['p99']:.2f} ms, {left} runs left")
    truncate_runs()
    return found


# -- the report ----------------------------------------------------------------------------------

def row(*cells):
    print("| " + " | ".join(str(c) for c in cells) + " |")


def median(values):
    return statistics.median(values)


def per_unit_cpu(result):
    """ms of CPU per run (job) of each group over the drain's CPU window (from the first call at
    the target to the last finish seen), the cores they kept busy, and the cores every other
    process of the machine kept busy meanwhile (this script's polling among them)."""
    window = result["cpu"]
    ours = sum(window["used"].values())
    return ({name: used / RUNS * 1000 for name, used in window["used"].items()},
            ours / window["elapsed"], max(window["machine"] - ours, 0) / window["elapsed"])


def statement_table(results, unit):
    """Median calls per run of each statement over the rounds, by the statement's text."""
    calls, times = {}, {}
    for result in results:
        for s in result["sql"]:
            calls.setdefault(s["query"], []).append(s["calls"] / RUNS)
            times.setdefault(s["query"], []).append(s["ms"] / RUNS)
    total = median([sum(s["calls"] for s in r["sql"]) / RUNS for r in results])
    executed = median([sum(s["ms"] for s in r["sql"]) / RUNS for r in results])
    table = sorted(((median(v + [0] * (len(results) - len(v))), median(times[q]), q) for q, v in calls.items()),
                   reverse=True)
    return total, executed, table


def main():
    say(f"{RUNS} runs per drain, {ROUNDS} rounds, trickles {TRICKLE}, {SECONDS} s of wrk; logs in {LOG_DIR}")
    admin = ADMIN_URL
    psql(admin, f"DROP ROLE IF EXISTS {PROBE}")
    psql(admin, f"CREATE ROLE {PROBE} LOGIN SUPERUSER")
    for name in (DATABASE, GRAPHILE_DATABASE):
        psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql(admin, f"CREATE DATABASE {name}")
        psql(database_url(name), "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    subprocess.run(["node", os.path.join(QUEUE_DIR, "node_modules", ".bin", "graphile-worker"), "-c",
                    database_url(GRAPHILE_DATABASE), "--schema-only"], check=True, capture_output=True, cwd=QUEUE_DIR)
    target = Target()
    api = Server("api", database_url(DATABASE), 0)
    tenant = seed(api, target)

    drains = {("tolstoy", 1): [], ("tolstoy", 2): [], ("graphile", 1): [], ("graphile", 2): [], ("sqlite", 1): []}
    for n in range(1, ROUNDS + 1):
        for processes in (1, 2):
            for side in ("tolstoy", "graphile"):
                result = (drain_tolstoy_pg(api, tenant, target, processes) if side == "tolstoy"
                          else drain_graphile(target, processes))
                drains[(side, processes)].append(result)
                say(f"drain: round {n}: {side}, {processes} process(es): {result['rate']:.0f}/s "
                    f"({result['seconds']:.2f} s), {result['statuses']}, {result['calls']} calls, "
                    f"{sum(s['calls'] for s in result['sql']) / RUNS:.1f} statements each")
        result = drain_sqlite(target)
        drains[("sqlite", 1)].append(result)
        say(f"drain: round {n}: SQLite: {result['rate']:.0f}/s ({result['seconds']:.2f} s), {result['statuses']}")

    latency = {}
    url = database_url(DATABASE)
    for processes in (1, 2):
        workers = tolstoy_workers(processes, url)
        time.sleep(3)
        latency[f"PostgreSQL, {processes} × `tolstoy worker`"] = latency_tolstoy(
            api, tenant, target, f"tolstoy, {processes} worker(s)")
        for worker in workers:
            worker.stop()
        truncate_runs()
    in_process = Server("api-with-workers", url, SLOTS)
    time.sleep(3)
    latency["PostgreSQL, `tolstoy serve` with its 4 slots (enqueued to the same process)"] = latency_tolstoy(
        in_process, tenant, target, "tolstoy serve with workers")
    in_process.stop()
    truncate_runs()
    for processes in (1, 2):
        latency[f"graphile-worker, {processes} process(es)"] = latency_graphile(
            target, processes, f"graphile-worker, {processes}")
    directory = tempfile.mkdtemp(prefix="tolstoy-queue-sqlite-", dir=LOG_DIR)
    sqlite = Server("sqlite-latency", f"sqlite://{directory}/queue.db?mode=rwc", SLOTS)
    sqlite_tenant = seed(sqlite, target)
    time.sleep(3)
    latency["SQLite, `tolstoy serve` with its 4 slots"] = latency_tolstoy(sqlite, sqlite_tenant, target, "SQLite")
    sqlite.stop()

    tools = tools_busy_idle(api, tenant, target, median([r["rate"] for r in drains[("tolstoy", 1)]]))
    api.stop()
    target.stop()

    report(drains, latency, tools)


def report(drains, latency, tools):
    labels = {("tolstoy", 1): "Tolstoy, PostgreSQL, 1 × `tolstoy worker`",
              ("tolstoy", 2): "Tolstoy, PostgreSQL, 2 × `tolstoy worker`",
              ("graphile", 1): "graphile-worker, 1 process",
              ("graphile", 2): "graphile-worker, 2 processes",
              ("sqlite", 1): "Tolstoy, SQLite, `tolstoy serve` (one process)"}
    print(f"\n### Throughput: {RUNS} queued runs (jobs) drained, {SLOTS} slots per process "
          f"({ROUNDS} rounds, medians)\n")
    row("queue", "runs/s", "per round", "drain s", "not completed", "calls at the target per run",
        "statements per run", "PostgreSQL execution ms per run", "cores busy: these", "others")
    row(*["---"] * 10)
    for key, label in labels.items():
        results = drains[key]
        rates = [r["rate"] for r in results]
        bad = sum(sum(n for s, n in r["statuses"].items() if s != "completed") for r in results)
        calls = median([r["calls"] / RUNS for r in results])
        if "sql" in results[0]:
            total, executed, _ = statement_table(results, "run")
            sql_cells = (f"{total:.1f}", f"{executed:.2f}")
        else:
            sql_cells = ("", "")
        busy = median([per_unit_cpu(r)[1] for r in results])
        others = median([per_unit_cpu(r)[2] for r in results])
        row(label, f"**{median(rates):.0f}**", " / ".join(f"{x:.0f}" for x in rates),
            f"{median([r['seconds'] for r in results]):.2f}", bad, f"{calls:.3f}", *sql_cells, f"{busy:.2f}",
            f"{others:.2f}")
    for processes in (1, 2):
        ours = median([r["rate"] for r in drains[("tolstoy", processes)]])
        theirs = median([r["rate"] for r in drains[("graphile", processes)]])
        per_round = [a["rate"] / b["rate"] for a, b in zip(drains[("tolstoy", processes)],
                                                           drains[("graphile", processes)])]
        print(f"\n{processes} process(es): Tolstoy / graphile-worker = {ours / theirs:.2f} "
              f"(graphile-worker {theirs / ours:.1f}× faster; per round "
              + ", ".join(f"{x:.2f}" for x in per_round) + ")")
    enqueue_rates = [r["enqueue_rate"] for key in (("tolstoy", 1), ("tolstoy", 2)) for r in drains[key]]
    sqlite_enqueue = [r["enqueue_rate"] for r in drains[("sqlite", 1)]]
    print(f"\nEnqueueing through the API ({ENQUEUERS} keep-alive clients, `POST /flows/{{id}}/runs`, "
          f"no worker running): PostgreSQL {median(enqueue_rates):.0f} runs/s, SQLite "
          f"{median(sqlite_enqueue):.0f} runs/s (medians).\n")

    enqueued = drains[("tolstoy", 1)] + drains[("tolstoy", 2)]
    total, executed, table = statement_table([{"sql": r["enqueue_sql"]} for r in enqueued], "run")
    print(f"Statements per `POST /flows/{{id}}/runs` (pg_stat_statements over each enqueue, medians): "
          f"{total:.1f}, {executed:.3f} ms of execution:\n")
    row("calls per request", "ms per call", "statement")
    row("---", "---", "---")
    for calls, ms, query in table:
        if calls >= 0.005:
            text = query if len(query) <= 160 else query[:157] + "…"
            row(f"{calls:.2f}", f"{ms / calls if calls else 0:.3f}", "`" + text.replace("|", "\\|") + "`")
    print()

    print("CPU per run (job), ms of user + system time over the drain (from the first call at the target "
          "to the last finish), medians:\n")
    groups = ["workers", "server with its workers", "postgres", "target", "API server (idle)"]
    row("queue", *groups, "total")
    row(*["---"] * (len(groups) + 2))
    for key, label in labels.items():
        cpu = [per_unit_cpu(r)[0] for r in drains[key]]
        cells = [f"{median([c[g] for c in cpu]):.3f}" if g in cpu[0] else "" for g in groups]
        row(label, *cells, f"{median([sum(c.values()) for c in cpu]):.3f}")

    for side, unit in (("tolstoy", "run"), ("graphile", "job")):
        results = drains[(side, 1)] + drains[(side, 2)]
        total, executed, table = statement_table(results, unit)
        print(f"\nStatements per {unit} ({'Tolstoy' if side == 'tolstoy' else 'graphile-worker'}, "
              f"pg_stat_statements over each drain, 1 and 2 processes, medians): {total:.1f}, "
              f"{executed:.3f} ms of execution\n")
        row("calls per " + unit, "ms per call", "statement")
        row("---", "---", "---")
        for calls, ms, query in table:
            if calls >= 0.005:
                text = query if len(query) <= 160 else query[:157] + "…"
                row(f"{calls:.2f}", f"{ms / calls if calls else 0:.3f}", "`" + text.replace("|", "\\|") + "`")

    print("\n### Latency: enqueue → the target receives the step's call (ms)\n")
    print("From the run's `createdAt` (the server's clock, whole milliseconds; graphile-worker: the job's "
          "`created_at`) to the moment the local target receives the call (the same machine's clock).\n")
    row("queue", *(f"{rate}/s ({count} runs): p50" for rate, count in TRICKLE),
        *(f"{rate}/s: p99" for rate, _ in TRICKLE), *(f"{rate}/s: max" for rate, _ in TRICKLE))
    row(*["---"] * (1 + 3 * len(TRICKLE)))
    for label, results in latency.items():
        row(label, *(f"{percentile(results[r], 0.5):.1f}" for r, _ in TRICKLE),
            *(f"{percentile(results[r], 0.99):.1f}" for r, _ in TRICKLE),
            *(f"{max(results[r]):.1f}" for r, _ in TRICKLE))

    print(f"\n### `GET /tools/{{id}}` on the API server (wrk, {bench.THREADS} threads, {bench.CONNECTIONS} "
          f"connections, {SECONDS} s; {ROUNDS} rounds alternating, medians)\n")
    groups = ("client", "server", "worker", "postgres", "target")
    row("worker process", "req/s", "per round", "p50 ms", "p99 ms", "errors", "runs/s drained meanwhile",
        "API server CPU µs per request", "cores busy: wrk", "API server", "worker", "PostgreSQL (all its backends)",
        "target", "others")
    row(*["---"] * 14)
    for name in ("idle", "busy"):
        results = tools[name]
        drained = f"{median([r['drain'] for r in results]):.0f}" if name == "busy" else "0"
        server = median([bench.per_request(r)["server"] for r in results])
        cores = [f"{median([r['cpu'][g] for r in results]):.2f}" for g in groups]
        others = median([max(r["machine"] - sum(r["cpu"].values()), 0) for r in results])
        row(f"{name} ({'queue empty' if name == 'idle' else 'draining a backlog'})",
            f"**{median([r['rps'] for r in results]):.0f}**", " / ".join(f"{r['rps']:.0f}" for r in results),
            f"{median([r['p50'] for r in results]):.2f}", f"{median([r['p99'] for r in results]):.2f}",
            sum(r["errors"] for r in results), drained, f"{server:.0f}", *cores, f"{others:.2f}")
    idle = median([r["rps"] for r in tools["idle"]])
    busy = median([r["rps"] for r in tools["busy"]])
    print(f"\nbusy against idle: {busy / idle - 1:+.0%} req/s; runs left in the backlog at the end of each busy "
          f"round: {', '.join(str(r['left']) for r in tools['busy'])}\n")

    warnings = [(label, w) for key, label in labels.items() for r in drains[key] for w in r["warnings"]]
    if warnings:
        print(f"Warnings in the workers' logs: {len(warnings)}, e.g. {warnings[0][1][:300]}\n")
    else:
        print("No warning or error in any worker's log.\n")


if __name__ == "__main__":
    main()
