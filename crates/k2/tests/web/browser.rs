//! A headless Chromium driven over its DevTools protocol: navigate, type, evaluate, wait
//! for a condition with a deadline, take a screenshot, and collect every console error and
//! uncaught exception the page produced.

use std::io::BufRead;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::common::Running;

/// How long one protocol call may take.
const CALL_WITHIN: Duration = Duration::from_secs(30);

pub struct Browser {
    _child: Running,
    _profile: tempfile::TempDir,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Console errors and exceptions seen so far.
    errors: Vec<String>,
}

impl Browser {
    /// Starts `chromium` headless on a blank page and attaches to that page.
    pub fn launch(chromium: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // Killed when dropped, from here on: a launch that fails midway leaves no browser
        // running.
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--window-size=1400,1800",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map(Running)
            .unwrap_or_else(|e| panic!("starting {chromium}: {e}"));
        // Chromium names its DevTools endpoint on standard error.
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
                kept.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "Chromium named no DevTools endpoint: {}",
                    log.lock().unwrap()
                )
            });
        // The blank page's target, asked of the browser's own endpoint.
        let (mut root, _) = tungstenite::connect(browser_url.as_str())
            .unwrap_or_else(|e| panic!("attaching to {browser_url}: {e}"));
        root.send(Message::text(r#"{"id":1,"method":"Target.getTargets"}"#))
            .unwrap();
        let targets = loop {
            if let Message::Text(t) = root.read().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == 1 {
                    break v;
                }
            }
        };
        let id = targets["result"]["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        let _ = root.close(None);
        let address = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap();
        let page = format!("ws://{address}/devtools/page/{id}");
        let (socket, _) = tungstenite::connect(page.as_str())
            .unwrap_or_else(|e| panic!("attaching to {page}: {e}"));
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let mut browser = Browser {
            _child: child,
            _profile: profile,
            socket,
            next_id: 0,
            errors: Vec::new(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser
    }

    /// One protocol call's result; events read meanwhile are examined for errors.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap();
        let deadline = Instant::now() + CALL_WITHIN;
        loop {
            assert!(
                Instant::now() < deadline,
                "{method}: no answer within {CALL_WITHIN:?}"
            );
            let message = match self.socket.read() {
                Ok(Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("{method}: the DevTools connection failed: {e}"),
            };
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
            self.observe(&message);
        }
    }

    fn observe(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "exception: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .or(p["exceptionDetails"]["text"].as_str())
                    .unwrap_or_default()
            )),
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors
                    .push(format!("console.{}: {}", p["type"], p["args"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => self.errors.push(format!(
                "{}: {} {}",
                p["entry"]["source"], p["entry"]["text"], p["entry"]["url"]
            )),
            _ => {}
        }
    }

    /// The value of a JavaScript expression (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// The value of an expression, or the exception it threw.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Polls `expression` until it is truthy, for at most `within`; its value. Until the
    /// page is there, an expression that throws counts as not holding yet.
    pub fn wait_for(&mut self, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.try_eval(expression).unwrap_or(Value::Null);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} did not hold within {within:?}; the page says: {:?}; errors: {:?}",
                self.try_eval("document.body?.innerText.slice(0, 3000)"),
                self.errors
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Types `text` into the focused element as keystrokes would.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Sets a form control's value and tells the page, as a user's pick would.
    pub fn pick(&mut self, id: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({id:?}); e.value = {value:?}; \
             e.dispatchEvent(new Event('change', {{bubbles: true}})); return e.value; }})()"
        ));
    }

    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Console errors and exceptions so far (events still in flight are read first).
    pub fn errors(&mut self) -> Vec<String> {
        self.eval("1");
        self.errors.clone()
    }
}

impl Drop for Browser {
    /// The browser is asked to close (its helper processes with it), then killed.
    fn drop(&mut self) {
        let close = json!({"id": u64::MAX, "method": "Browser.close"});
        let _ = self.socket.send(Message::text(close.to_string()));
    }
}
