//! Export (`GET /execution-logs/export`, `GET /runs/export`): every row the list's filters and
//! the creation window select, newest first, the same as the list has them, as NDJSON or CSV;
//! a client that goes away stops the walk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use entity::execution_log;
use sea_orm::{EntityTrait, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::process::{free_port, wait_until_up};
use crate::helpers::{Caller, TestApp};
use crate::on_both_backends;
use crate::recovery::spawn;
use crate::runs;

/// More than two of the export's batches of 1000.
const MANY: usize = 2345;

/// `count` logs of `flow_id` written straight to the database (the API would take minutes),
/// created one minute apart from 2026-01-01 00:00 UTC, every third one `failed`, each with
/// `padding` bytes of input.
async fn insert_logs(app: &TestApp, caller: &Caller, flow_id: &str, count: usize, padding: usize) {
    let org_id = Uuid::parse_str(&caller.org_id).expect("org id");
    let user_id = Uuid::parse_str(&caller.user_id).expect("user id");
    let flow_id = Uuid::parse_str(flow_id).expect("flow id");
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let rows: Vec<_> = (0..count)
        .map(|n| {
            let at = start + chrono::Duration::minutes(n as i64);
            execution_log::ActiveModel {
                id: Set(Uuid::now_v7()),
                org_id: Set(org_id),
                user_id: Set(user_id),
                flow_id: Set(flow_id),
                execution_id: Set(Some(format!("run-{}", n % 7))),
                step_id: Set(format!("step, \"{n}\"")),
                status: Set(if n % 3 == 0 { "failed" } else { "completed" }.to_owned()),
                inputs: Set(json!({"n": n, "pad": "x".repeat(padding)})),
                outputs: Set((n % 2 == 0).then(|| json!({"ok": true, "list": [1, "two"]}))),
                error: Set(None),
                run_id: Set(None),
                attempt: Set(None),
                duration_ms: Set(None),
                created_at: Set(at),
                updated_at: Set(at),
            }
        })
        .collect();
    for chunk in rows.chunks(200) {
        execution_log::Entity::insert_many(chunk.to_vec())
            .exec(&app.db)
            .await
            .expect("insert logs");
    }
}

/// Every row of the list at `path` (walked with the largest pages).
async fn list_walk(app: &TestApp, caller: &Caller, path: &str) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut next = format!("{path}{separator}limit=1000");
    let mut rows = Vec::new();
    loop {
        let page = app.get_as(caller, &next).await;
        assert_eq!(page.status, 200, "{}", page.text);
        rows.extend(page.body.as_array().expect("a page").iter().cloned());
        match page.header("link") {
            Some(link) => next = crate::helpers::next_path(link),
            None => return rows,
        }
    }
}

/// The export at `path`, as NDJSON lines.
async fn export_lines(app: &TestApp, caller: &Caller, path: &str) -> Vec<Value> {
    let reply = app.get_as(caller, path).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    reply
        .text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

on_both_backends! {
    /// Every matching row, in the list's order and as the list has it, across batches; filters
    /// and the creation window (inclusive after, exclusive before) narrow it.
    async fn the_ndjson_export_is_the_list_without_pages(app) {
        let caller = app.new_tenant("Acme").await;
        let flow_id = runs::flow(&app, &caller, json!([])).await;
        insert_logs(&app, &caller, &flow_id, MANY, 10).await;
        let stranger = app.new_tenant("Globex").await;
        let other_flow = runs::flow(&app, &stranger, json!([])).await;
        insert_logs(&app, &stranger, &other_flow, 5, 10).await;

        let all = export_lines(&app, &caller, "/execution-logs/export").await;
        assert_eq!(all.len(), MANY);
        assert_eq!(all, list_walk(&app, &caller, "/execution-logs").await);

        let filtered = "status=failed&executionId=run-3";
        let failed = export_lines(&app, &caller, &format!("/execution-logs/export?{filtered}")).await;
        assert!(!failed.is_empty());
        assert_eq!(failed, list_walk(&app, &caller, &format!("/execution-logs?{filtered}")).await);

        // Minutes 60 to 119: createdAfter is in the window, createdBefore is not.
        let window = "createdAfter=2026-01-01T01:00:00Z&createdBefore=2026-01-01T02:00:00%2B00:00";
        let hour = export_lines(&app, &caller, &format!("/execution-logs/export?{window}")).await;
        let minutes: Vec<i64> = hour.iter().map(|row| row["inputs"]["n"].as_i64().expect("n")).collect();
        assert_eq!(minutes, (60..120).rev().collect::<Vec<_>>());

        let empty = app.get_as(&stranger, &format!("/execution-logs/export?flowId={flow_id}")).await;
        assert_eq!((empty.status, empty.text.as_str()), (200, ""), "another organization's flow: nothing");
    }

    /// CSV by `Accept` or `format`: a header of the list's field names, then one RFC 4180
    /// record per row with JSON fields as JSON text and null as an empty field.
    async fn the_csv_export_holds_the_same_rows(app) {
        let caller = app.new_tenant("Acme").await;
        let flow_id = runs::flow(&app, &caller, json!([])).await;
        insert_logs(&app, &caller, &flow_id, 1500, 10).await;
        let lines = export_lines(&app, &caller, "/execution-logs/export").await;

        let by_accept = app
            .send(poem::http::Method::GET, "/execution-logs/export", None,
                  &[caller.headers()[0], caller.headers()[1], ("Accept", "text/csv")])
            .await;
        let by_format = app.get_as(&caller, "/execution-logs/export?format=csv").await;
        assert_eq!(by_accept.text, by_format.text);
        for reply in [&by_accept, &by_format] {
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("content-type"), Some("text/csv; charset=utf-8; header=present"));
            assert_eq!(reply.header("content-disposition"), Some("attachment; filename=\"execution-logs.csv\""));
        }
        assert!(by_format.text.ends_with("\r\n"), "CRLF line ends");
        let mut csv = csv::Reader::from_reader(by_format.text.as_bytes());
        let header: Vec<String> = csv.headers().expect("header").iter().map(str::to_owned).collect();
        assert_eq!(header, ["id", "orgId", "userId", "flowId", "executionId", "stepId", "status", "inputs",
            "outputs", "error", "runId", "attempt", "durationMs", "createdAt", "updatedAt"]);
        let records: Vec<csv::StringRecord> = csv.records().map(|r| r.expect("an RFC 4180 record")).collect();
        assert_eq!(records.len(), lines.len());
        for (record, line) in records.iter().zip(&lines) {
            for (column, field) in header.iter().zip(record.iter()) {
                let expected = match &line[column] {
                    Value::Null => String::new(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                assert_eq!(field, expected, "{column} of {}", line["id"]);
            }
        }
        let none = app.get_as(&caller, "/execution-logs/export?format=csv&status=skipped").await;
        assert_eq!(none.text, format!("{}\r\n", header.join(",")), "no rows: the header alone");
    }

    /// The runs export is the runs list without pages; an empty window exports nothing; a bad
    /// instant or format is a 400 naming the parameter; a stranger is refused as by the list.
    async fn runs_export_and_its_refusals(app) {
        let caller = app.new_tenant("Acme").await;
        let flow_id = runs::flow(&app, &caller, json!([])).await;
        for n in 0..5 {
            runs::start(&app, &caller, &flow_id, json!({"n": n})).await;
        }
        let exported = export_lines(&app, &caller, "/runs/export").await;
        assert_eq!(exported.len(), 5);
        assert_eq!(exported, list_walk(&app, &caller, "/runs").await);
        let queued = export_lines(&app, &caller, &format!("/runs/export?flowId={flow_id}&status=queued")).await;
        assert_eq!(queued, exported);

        for empty in [
            "createdAfter=2026-02-01T00:00:00Z&createdBefore=2026-01-01T00:00:00Z",
            "createdAfter=2026-01-01T00:00:00Z&createdBefore=2026-01-01T00:00:00Z",
        ] {
            for path in ["/runs/export", "/execution-logs/export"] {
                let reply = app.get_as(&caller, &format!("{path}?{empty}")).await;
                assert_eq!((reply.status, reply.text.as_str()), (200, ""), "an empty window: {path}?{empty}");
            }
        }
        for (query, field) in [
            ("createdAfter=yesterday", "createdAfter"),
            ("createdBefore=2026-13-01T00:00:00Z", "createdBefore"),
            ("format=xml", "format"),
        ] {
            for path in ["/runs/export", "/execution-logs/export"] {
                let reply = app.get_as(&caller, &format!("{path}?{query}")).await;
                assert_eq!(reply.assert_problem(400), vec![field.to_owned()], "{path}?{query}");
            }
        }
        let stranger = Caller { org_id: caller.org_id.clone(), user_id: Uuid::now_v7().to_string() };
        for path in ["/runs/export", "/execution-logs/export"] {
            app.get_as(&stranger, path).await.assert_problem(403);
        }
    }

    /// A client that reads a little of a large export and hangs up stops the walk: the server
    /// writes no more rows than the connection could hold, far fewer than match.
    async fn a_client_that_goes_away_stops_the_walk(app) {
        let caller = app.new_tenant("Acme").await;
        let flow_id = runs::flow(&app, &caller, json!([])).await;
        // About 80 MB of NDJSON: far more than the buffers of a local connection, even tuned.
        let rows = 20_000;
        insert_logs(&app, &caller, &flow_id, rows, 4000).await;
        let port = free_port();
        let _server = spawn(&app, "serve", &[("PORT", &port.to_string()), ("WORKERS", "0")], "export.log");
        wait_until_up(port);

        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "GET /execution-logs/export HTTP/1.1\r\nHost: localhost\r\nX-Org-ID: {}\r\nX-User-ID: {}\r\n\r\n",
            caller.org_id, caller.user_id
        ).expect("request");
        let mut start = vec![0; 64 * 1024];
        stream.read_exact(&mut start).expect("the first bytes");
        assert!(String::from_utf8_lossy(&start).starts_with("HTTP/1.1 200"));
        drop(stream);

        let exported = || {
            let (_, body) = crate::helpers::process::http(port, "GET", "/metrics", None).expect("metrics");
            body.lines()
                .find_map(|line| line.strip_prefix("tolstoy_exported_rows_total{table=\"execution_logs\"} "))
                .map_or(0, |n| n.trim().parse::<u64>().expect("a count"))
        };
        // It settles once the server notices the connection is gone: no change for a second.
        let mut last = exported();
        let mut unchanged = 0;
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            let now = exported();
            unchanged = if now == last { unchanged + 1 } else { 0 };
            last = now;
            if unchanged == 10 { break; }
        }
        assert_eq!(unchanged, 10, "the walk went on: {last} rows");
        assert!(last > 0 && last < rows as u64 / 2, "{last} of {rows} rows written after the client left");
    }
}
