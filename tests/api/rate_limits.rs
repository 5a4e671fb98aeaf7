//! The real binary in keys mode behind a trusted proxy: its first key from `tolstoy signup`,
//! failed authentications limited per client address (429 with Retry-After before any key
//! lookup), the client address taken from X-Forwarded-For only because the peer is trusted, and
//! no key in the log even at RUST_LOG=trace.

use std::fs::File;
use std::time::Duration;

use crate::helpers::process::{free_port, http_with, temp_dir, tolstoy, wait_until_up, Server};

/// The settings both the sign-up and the server run with.
fn keys_mode(command: &mut std::process::Command) -> &mut std::process::Command {
    command
        .env("AUTH_MODE", "keys")
        .env("AUTH_FAILURES_PER_MINUTE", "20")
        .env("TRUSTED_PROXIES", "127.0.0.1")
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
}

#[test]
fn thirty_bad_keys_from_one_address_get_429_while_a_good_key_from_another_still_works() {
    let dir = temp_dir();
    let signup = keys_mode(&mut tolstoy(&dir))
        .args([
            "signup",
            "--org",
            "Acme",
            "--owner-email",
            "ada@example.com",
        ])
        .output()
        .expect("tolstoy signup");
    assert!(
        signup.status.success(),
        "{}",
        String::from_utf8_lossy(&signup.stderr)
    );
    let key = String::from_utf8(signup.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(key.starts_with("tol_"), "the key alone on stdout: {key}");

    let port = free_port();
    let log = File::create(dir.join("server.log")).expect("log");
    let _server = Server(
        keys_mode(&mut tolstoy(&dir))
            .env("PORT", port.to_string())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("serve"),
    );
    wait_until_up(port);
    let call = |key: &str, client: &str| {
        let bearer = format!("Bearer {key}");
        let headers = [
            ("Authorization", bearer.as_str()),
            ("X-Forwarded-For", client),
        ];
        http_with(port, "GET", "/users", None, &headers).expect("request")
    };
    // The last character changed (to one it is not), so the checksum fails.
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let bad = format!("{}{last}", &key[..key.len() - 1]);
    let statuses: Vec<String> = (0..30).map(|_| call(&bad, "203.0.113.7").0).collect();
    assert!(
        statuses[..20].iter().all(|s| s.contains(" 401 ")),
        "{statuses:?}"
    );
    assert!(
        statuses[20..].iter().all(|s| s.contains(" 429 ")),
        "{statuses:?}"
    );
    let (status, headers, _) = call(&bad, "203.0.113.7");
    assert!(status.contains(" 429 "));
    let retry_after = headers
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After: {headers}"
    );
    let (status, _, body) = call(&key, "198.51.100.9");
    assert!(
        status.contains(" 200 "),
        "a good key from another address: {status} {body}"
    );
    assert!(body.contains("ada@example.com"));
    let (status, _, _) = call(&key, "203.0.113.7");
    assert!(
        status.contains(" 429 "),
        "the blocked address is refused before its key is looked up"
    );

    std::thread::sleep(Duration::from_millis(200));
    let logged = std::fs::read_to_string(dir.join("server.log")).expect("log");
    for status in [401, 429, 200] {
        let line = format!("\"status\":{status}");
        assert!(
            logged.contains(&line),
            "the {status} requests are in the log"
        );
    }
    assert!(!logged.contains(&key[4..]), "the key reached the log");
    std::fs::remove_dir_all(&dir).ok();
}
