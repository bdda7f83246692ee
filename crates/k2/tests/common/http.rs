//! Plain HTTP/1.1 exchanges with K2's servers over a fresh connection each, and API keys
//! made by `k2 api-key new`.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::k2;

/// A new key of `k2 api-key new` and its `[[api.keys]]` entry.
pub fn new_key(data: &Path, name: &str, scopes: &str) -> (String, String) {
    let out = k2(data)
        .args(["api-key", "new", "--name", name, "--scopes", scopes])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let err = String::from_utf8(out.stderr).unwrap();
    let entry = err[err.find("[[api.keys]]").expect("an entry is printed")..].to_string();
    assert!(
        !entry.contains(&key),
        "the configuration never holds the key itself"
    );
    (key, entry)
}

/// One HTTP exchange's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request over a fresh connection. `body`: raw bytes, sent with a Content-Length, or
/// chunked when `chunked`.
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    chunked: bool,
) -> Answer {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    s.write_all(head.as_bytes()).unwrap();
    // The body goes from another thread while this one reads: a server may answer (413)
    // before it has read everything.
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        if chunked {
            for chunk in body.chunks(64 * 1024) {
                let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
                if w.write_all(&frame).is_err() {
                    return;
                }
            }
            let _ = w.write_all(b"0\r\n\r\n");
        } else {
            let _ = w.write_all(&body);
        }
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = writer.join();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let end = at + rest[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[end + 2..end + 2 + size]);
            at = end + 2 + size + 2;
        }
        rest = body;
    }
    Answer {
        status,
        headers,
        body: rest,
    }
}

/// The port a server started as `child` prints on standard error in the line starting
/// with `prefix` (`… on http://127.0.0.1:`). Every line of standard error, before and
/// after, is kept in `stderr` (drained on a thread so the server never blocks on a full
/// pipe).
pub fn listening_port(child: &mut Child, prefix: &str, stderr: Arc<Mutex<String>>) -> u16 {
    listening_ports(child, &[prefix], stderr)[0]
}

/// [`listening_port`] for each of `prefixes`, in the order the server prints them.
pub fn listening_ports(
    child: &mut Child,
    prefixes: &[&str],
    stderr: Arc<Mutex<String>>,
) -> Vec<u16> {
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let mut ports = Vec::new();
    for prefix in prefixes {
        let port = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!(
                        "the server ended before printing {prefix}…: {}",
                        stderr.lock().unwrap()
                    )
                })
                .unwrap();
            stderr.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.strip_prefix(prefix) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        ports.push(port);
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            stderr.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    ports
}
