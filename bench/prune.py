"""The retention benchmark behind docs/benchmarks.md ("Retention (issue 18)"); run it through
bench/prune.sh.

One organization gets ROWS execution logs 40 days old (in SQL: a million POSTs would take too
long), the API serves `GET /tools/{id}` of another organization under wrk for SECONDS without a
prune, then again while `tolstoy prune` deletes the old rows (in batches of 1,000 with a pause
between them); it prints how long the prune took and the API's figures in both.
"""

import os
import subprocess
import threading
import time

import bench

ROWS = int(os.environ.get("BENCH_PRUNE_ROWS", "1000000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))


def old_logs(url, tenant, flow, rows):
    """`rows` logs of `flow`, 40 days old, ids in the UUIDv7 layout of that time."""
    bench.psql(url, f"""
        INSERT INTO execution_logs (id, org_id, flow_id, user_id, execution_id, step_id, status,
                                    inputs, outputs, error, created_at, updated_at)
        SELECT (lpad(to_hex(1700000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 3)
                || '8' || substr(md5(g::text), 4, 15))::uuid,
               '{tenant['org']}', '{flow}', '{tenant['user']}', 'run-' || (g / 4), 'fetch',
               'completed', jsonb_build_object('n', g), '{{"ok": true}}', NULL,
               now() - interval '40 days', now() - interval '40 days'
        FROM generate_series(1, {rows}) AS g;
        ANALYZE execution_logs;""")


def main():
    bench.psql(bench.ADMIN_URL, f"DROP DATABASE IF EXISTS {bench.DATABASE} WITH (FORCE)")
    bench.psql(bench.ADMIN_URL, f"CREATE DATABASE {bench.DATABASE}")
    url = bench.database_url(bench.DATABASE)
    server = bench.Server(url)
    organizations = bench.seed(server)
    served, pruned = organizations[0], organizations[1]
    bench.say(f"{ROWS} old execution logs for one organization")
    started = time.monotonic()
    old_logs(url, pruned, pruned["flows"][0], ROWS)
    bench.say(f"written in {time.monotonic() - started:.0f} s")

    ids = ",".join(served["tools"])
    quiet = bench.wrk(server, "get_tool.lua", served, seconds=SECONDS, BENCH_IDS=ids)
    bench.say(f"without a prune: {quiet['rps']:.0f} req/s, p99 {quiet['p99']:.2f} ms")

    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECT_URL")}
    environment.update({"DATABASE_URL": url, "RUST_LOG": "warn", "RETENTION_DAYS": "30"})
    took = {}

    def prune():
        began = time.monotonic()
        done = subprocess.run([bench.BINARY, "prune"], env=environment, capture_output=True, text=True)
        took["seconds"] = time.monotonic() - began
        took["output"] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    pruner = threading.Thread(target=prune)
    pruner.start()
    time.sleep(0.5)
    busy = bench.wrk(server, "get_tool.lua", served, seconds=SECONDS, BENCH_IDS=ids)
    still_pruning = pruner.is_alive()
    pruner.join()
    left = bench.psql(url, f"SELECT count(*) FROM execution_logs WHERE org_id = '{pruned['org']}'")
    server.stop()
    bench.say(f"prune: {took['seconds']:.1f} s ({took['output']}); {left} rows left")

    print(f"\n### Retention: a prune of {ROWS:,} execution logs under load\n")
    print(f"`tolstoy prune` took **{took['seconds']:.1f} s** ({took['output']}; {left} left), "
          f"while wrk drove `GET /tools/{{id}}` of another organization ({bench.THREADS} threads, "
          f"{bench.CONNECTIONS} connections, {SECONDS} s from 0.5 s after the prune began; the prune "
          f"{'was still running when wrk ended' if still_pruning else 'ended before wrk did'}).\n")
    bench.row("GET /tools/{id}", "req/s", "p50 ms", "p99 ms", "errors")
    bench.row("---", "---", "---", "---", "---")
    for label, result in (("without a prune", quiet), ("during the prune", busy)):
        bench.row(label, f"{result['rps']:.0f}", f"{result['p50']:.2f}", f"{result['p99']:.2f}",
                  result["errors"])


if __name__ == "__main__":
    main()
