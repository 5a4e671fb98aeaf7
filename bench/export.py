"""The export benchmark behind docs/benchmarks.md ("Export (issue 19)"); run it through
bench/export.sh.

One organization gets ROWS execution logs (in SQL: a million POSTs would take too long), each
with a small JSON input and output, the shape the executor writes. Then curl downloads
`GET /execution-logs/export` as NDJSON and as CSV, one at a time, to /dev/null; the server's
RSS is read before (idle), and its peak (VmHWM, reset before each export) after.
"""

import os
import subprocess
import time

import bench

ROWS = int(os.environ.get("BENCH_EXPORT_ROWS", "1000000"))


def logs(url, tenant, flow, rows):
    """`rows` logs of `flow`, ids in the UUIDv7 layout, one millisecond apart."""
    bench.psql(url, f"""
        INSERT INTO execution_logs (id, org_id, flow_id, user_id, execution_id, step_id, status,
                                    inputs, outputs, error, created_at, updated_at)
        SELECT (lpad(to_hex(1760000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 3)
                || '8' || substr(md5(g::text), 4, 15))::uuid,
               '{tenant['org']}', '{flow}', '{tenant['user']}', 'run-' || (g / 4), 'fetch',
               'completed', jsonb_build_object('n', g, 'city', 'Zürich'),
               '{{"ok": true, "status": 200}}', NULL,
               to_timestamp((1760000000000 + g) / 1000.0), to_timestamp((1760000000000 + g) / 1000.0)
        FROM generate_series(1, {rows}) AS g;
        ANALYZE execution_logs;""")


def export(server, tenant, query):
    """Downloads the export with `query`; returns seconds, bytes and the peak RSS in MiB."""
    server.reset_peak()
    began = time.monotonic()
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
         "-H", f"X-Org-ID: {tenant['org']}", "-H", f"X-User-ID: {tenant['user']}",
         f"{server.base}/execution-logs/export{query}"],
        capture_output=True, text=True, check=True)
    seconds = time.monotonic() - began
    size, status = done.stdout.split()
    assert status == "200", done
    return seconds, int(size), server.memory("VmHWM")


def main():
    bench.psql(bench.ADMIN_URL, f"DROP DATABASE IF EXISTS {bench.DATABASE} WITH (FORCE)")
    bench.psql(bench.ADMIN_URL, f"CREATE DATABASE {bench.DATABASE}")
    url = bench.database_url(bench.DATABASE)
    server = bench.Server(url)
    tenant = bench.seed(server)[0]
    bench.say(f"{ROWS} execution logs for one organization")
    started = time.monotonic()
    logs(url, tenant, tenant["flows"][0], ROWS)
    bench.say(f"written in {time.monotonic() - started:.0f} s")
    idle = server.memory("VmRSS")
    results = []
    for label, query in (("NDJSON", ""), ("CSV", "?format=csv"),
                         ("NDJSON, one flow", f"?flowId={tenant['flows'][0]}")):
        seconds, size, peak = export(server, tenant, query)
        bench.say(f"{label}: {seconds:.1f} s, {size / 2**20:.0f} MiB, peak RSS {peak:.1f} MiB")
        results.append((label, seconds, size, peak))
    server.stop()

    total = ROWS + bench.LOGS
    print(f"\n### Export of {total:,} execution logs\n")
    print(f"One organization's {total:,} execution logs ({ROWS:,} written in SQL, the rest by the "
          f"seed), downloaded with curl to /dev/null, one export at a time; the server's RSS was "
          f"{idle:.1f} MiB before.\n")
    bench.row("export", "seconds", "rows/s", "MiB sent", "MiB/s", "peak RSS MiB")
    bench.row("---", "---", "---", "---", "---", "---")
    for label, seconds, size, peak in results:
        bench.row(label, f"{seconds:.1f}", f"{total / seconds:,.0f}", f"{size / 2**20:.0f}",
                  f"{size / 2**20 / seconds:.0f}", f"{peak:.1f}")


if __name__ == "__main__":
    main()
