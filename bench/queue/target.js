// The local HTTP target both queues call (bench/runs.py starts it): every request is answered
// 200 `{}` at once. It notes when each call arrived, by the `id` query parameter (a run's or a
// job's id), in wall-clock milliseconds with a fraction, for the enqueue-to-first-call latency.
//
//   node target.js            listens on 127.0.0.1 and a free port, prints {"port": N}
//   GET /__count              {"count"} of the calls noted since the last reset
//   GET /__hits               the calls noted since the last reset: {"count", "hits": [[id, ms], …]}
//   POST /__reset             forgets them
//
// Keep-alive connections stay open for 10 minutes, so that neither client ever sends a request
// on a connection this server is closing (which would count as a connection error).
"use strict";

const http = require("http");
const { performance } = require("perf_hooks");

let hits = [];
const BODY = "{}";

const server = http.createServer((request, response) => {
  const url = request.url;
  if (url.startsWith("/__")) {
    if (url === "/__count") {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ count: hits.length }));
    } else if (url === "/__hits") {
      const body = JSON.stringify({ count: hits.length, hits });
      response.writeHead(200, { "content-type": "application/json" });
      response.end(body);
    } else if (url === "/__reset") {
      hits = [];
      response.writeHead(204);
      response.end();
    } else {
      response.writeHead(404);
      response.end();
    }
    request.resume();
    return;
  }
  const at = performance.timeOrigin + performance.now();
  const mark = url.indexOf("id=");
  hits.push([mark >= 0 ? decodeURIComponent(url.slice(mark + 3).split("&")[0]) : "", at]);
  request.resume();
  response.writeHead(200, { "content-type": "application/json", "content-length": BODY.length });
  response.end(BODY);
});
server.keepAliveTimeout = 600_000;
server.headersTimeout = 601_000;
server.requestTimeout = 0;
server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.on("SIGTERM", () => process.exit(0));
