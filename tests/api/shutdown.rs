//! SIGTERM, as an orchestrator sends it: stop accepting, finish what is in flight (up to
//! SHUTDOWN_TIMEOUT_SECS), close the pool, exit 0. The real binary, on a real socket.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::helpers::process::{free_port, temp_dir, tolstoy, wait_until_up, Server};

const BODY: &str = r#"{"name":"In flight"}"#;

/// A POST whose body has only half arrived: a request the server is in the middle of.
fn start_request(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    write!(
        stream,
        "POST /organizations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        BODY.len(),
        &BODY[..BODY.len() / 2]
    )
    .expect("send the first half");
    stream.flush().expect("flush");
    stream
}

fn terminate(server: &Server) {
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_for_exit(server: &mut Server, limit: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "still running {limit:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(dir: &std::path::Path, port: u16, shutdown_timeout: &str) -> Server {
    let log = File::create(dir.join("server.log")).expect("log");
    Server(
        tolstoy(dir)
            .env("PORT", port.to_string())
            .env("SHUTDOWN_TIMEOUT_SECS", shutdown_timeout)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn"),
    )
}

#[test]
fn sigterm_refuses_new_connections_finishes_the_request_in_flight_and_exits_0() {
    let dir = temp_dir();
    let port = free_port();
    let mut server = serve(&dir, port, "10");
    wait_until_up(port);

    let mut in_flight = start_request(port);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&server);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a new connection is refused once SIGTERM has arrived"
    );

    in_flight
        .write_all(&BODY.as_bytes()[BODY.len() / 2..])
        .expect("send the rest");
    let mut response = String::new();
    in_flight.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("In flight"), "{response}");

    let (status, _) = wait_for_exit(&mut server, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.join("server.log")).expect("log");
    assert!(log.contains("shutdown signal received"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_request_that_never_finishes_is_cut_off_after_the_shutdown_timeout() {
    let dir = temp_dir();
    let port = free_port();
    let mut server = serve(&dir, port, "1");
    wait_until_up(port);

    let _stalled = start_request(port);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&server);
    let (status, took) = wait_for_exit(&mut server, Duration::from_secs(8));
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "waited for the request: {took:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
