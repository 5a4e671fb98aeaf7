"""Configurations side by side against the ceiling, alternating rounds, on one fresh database.

    bench/ratios.sh label=BINARY[,VAR=value...] [label=BINARY[,VAR=value...] ...]

Each label is a release binary with environment settings of its own (RUST_LOG=info, WORKERS=0
and a pool of 16 unless given); the ceiling (BENCH_CEILING_BINARY) runs first in every round.
SCENARIOS (";"-separated, default "GET /tools/{id}"), SECS (8) and ROUNDS (3) choose what and
how long. Prints each round's req/s and fraction of the ceiling, and the medians: the way the
configurations of docs/benchmarks.md ("Against the ceiling") were compared.
"""
import os, sys, statistics
sys.path.insert(0, "/work/main/bench")
import bench

def main():
    bench.RATIO_SCENARIOS = tuple(os.environ.get("SCENARIOS", "GET /tools/{id}").split(";"))
    bench.SECONDS = int(os.environ.get("SECS", "8"))
    bench.RATIO_ROUNDS = int(os.environ.get("ROUNDS", "3"))
    bench.psql(bench.ADMIN_URL, f"DROP DATABASE IF EXISTS {bench.DATABASE} WITH (FORCE)")
    bench.psql(bench.ADMIN_URL, f"CREATE DATABASE {bench.DATABASE}")
    url = bench.database_url(bench.DATABASE)
    servers = {}
    first = None
    configs = [arg.split("=", 1) for arg in sys.argv[1:]]  # label=binary[,VAR=value...]
    for label, spec in configs:
        binary, *env = spec.split(",")
        env = dict(e.split("=", 1) for e in env)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("WORKERS", "0")
        env.setdefault("DB_MAX_CONNECTIONS", str(bench.POOL))
        server = bench.Server(url, binary=binary, **env)
        if first is None:
            tenant = bench.seed(server)[0]
            first = server
        servers[label] = server
    ordered = {"ceiling": bench.Ceiling(url)}
    ordered.update(servers)
    results = bench.measure_ratios(url, tenant, ordered)
    for scenario in bench.RATIO_SCENARIOS:
        print(f"## {scenario}")
        for n in range(bench.RATIO_ROUNDS):
            ceiling = results["ceiling"][scenario][n]["rps"]
            cells = [f"ceiling {ceiling:.0f}"] + [f"{label} {results[label][scenario][n]['rps']:.0f} ({results[label][scenario][n]['rps']/ceiling:.0%}, steal {results[label][scenario][n]['steal']:.0%})" for label in servers]
            print(f"round {n+1}: " + " | ".join(cells))
        for label in servers:
            ratios = [results[label][scenario][n]["rps"] / results["ceiling"][scenario][n]["rps"] for n in range(bench.RATIO_ROUNDS)]
            print(f"{label}: median ratio {statistics.median(ratios):.0%}")
    for server in ordered.values():
        server.stop()

main()
