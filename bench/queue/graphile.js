// graphile-worker, the comparison of bench/runs.py, on the same PostgreSQL (its own database).
//
//   node graphile.js work URL TARGET_PORT CONCURRENCY
//       one worker process: task `hit` makes the same call as the executor's step (GET
//       /hit?id=… on the local target over a keep-alive connection, the answer's status checked
//       and its JSON body parsed). Prints {"ready": true} once it listens for jobs; on SIGTERM
//       it stops gracefully and prints {"jobs", "failed", "firstStart", "lastComplete"} (wall
//       clock ms) on one line.
//   node graphile.js trickle URL RATE COUNT
//       adds COUNT jobs at RATE per second over one connection (graphile_worker.add_job), then
//       prints {"added": [[job id, created_at ms], …]}.
//
// graphile-worker runs with its defaults (no local queue, no batched completion): one job is
// fetched by one get_job call and completed by one complete_job call, woken by LISTEN/NOTIFY.
"use strict";

const http = require("http");
const { EventEmitter } = require("events");
const { run, Logger } = require("graphile-worker");
const { Client } = require("pg");

const [mode, url, ...rest] = process.argv.slice(2);

function call(agent, port, id) {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: "127.0.0.1", port, path: `/hit?id=${encodeURIComponent(id)}`, method: "GET", agent },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => (body += chunk));
        response.on("end", () => {
          if (response.statusCode !== 200) reject(new Error(`status ${response.statusCode}`));
          else resolve(JSON.parse(body));
        });
      },
    );
    request.on("error", reject);
    request.end();
  });
}

async function work(port, concurrency) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const events = new EventEmitter();
  const seen = { jobs: 0, failed: 0, firstStart: null, lastComplete: null };
  events.on("job:start", () => {
    if (seen.firstStart === null) seen.firstStart = Date.now();
  });
  events.on("job:complete", ({ error }) => {
    seen.jobs += 1;
    if (error) seen.failed += 1;
    seen.lastComplete = Date.now();
  });
  const runner = await run({
    connectionString: url,
    concurrency,
    noHandleSignals: true,
    events,
    // Warnings and errors only: its default logger writes a line for every job, which the
    // executor (RUST_LOG=warn) does not.
    logger: new Logger(() => (level, message) => {
      if (level === "error" || level === "warning") process.stderr.write(`graphile-worker: ${message}\n`);
    }),
    taskList: {
      hit: async (payload, helpers) => {
        await call(agent, port, `g${helpers.job.id}`);
      },
    },
  });
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  process.on("SIGTERM", async () => {
    await runner.stop();
    process.stdout.write(JSON.stringify(seen) + "\n");
    process.exit(0);
  });
  await runner.promise;
}

async function trickle(rate, count) {
  const client = new Client({ connectionString: url });
  await client.connect();
  const added = [];
  const started = Date.now();
  for (let n = 0; n < count; n += 1) {
    const due = started + (n * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const result = await client.query(
      "SELECT id, extract(epoch FROM created_at) * 1000 AS created FROM graphile_worker.add_job('hit', json_build_object('n', $1::int))",
      [n],
    );
    added.push([`g${result.rows[0].id}`, Number(result.rows[0].created)]);
  }
  await client.end();
  process.stdout.write(JSON.stringify({ added }) + "\n");
}

(async () => {
  if (mode === "work") await work(Number(rest[0]), Number(rest[1]));
  else if (mode === "trickle") await trickle(Number(rest[0]), Number(rest[1]));
  else throw new Error(`unknown mode ${mode}`);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
