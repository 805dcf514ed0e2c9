//! A webhook receiver on a loopback port, for the tests of alert notifications: it answers
//! every POST (200, or 500 to the first few it is told to refuse, so the sender must
//! retry) and keeps the requests it answered 200, with their path, headers and body.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One request the receiver took: its path, headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`; any path on the port is received.
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Answers 200 to every POST.
    pub fn start() -> Receiver {
        Receiver::refusing(0, "")
    }

    /// Answers 500 to the first `n` POSTs whose body mentions `mentioning`, 200 to the rest.
    pub fn refusing(n: usize, mentioning: &'static str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = got.clone();
        std::thread::spawn(move || {
            let mut refused = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let Some(path) = line.strip_prefix("POST ").and_then(|l| l.split(' ').next()).map(String::from) else {
                    continue;
                };
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let body = String::from_utf8_lossy(&body).into_owned();
                let refuse = refused < n && body.contains(mentioning);
                if refuse {
                    refused += 1;
                }
                let status = if refuse { "500 Internal Server Error" } else { "200 OK" };
                let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                if !refuse {
                    kept.lock().unwrap().push(Received { path, headers, body });
                }
            }
        });
        Receiver { url, got }
    }

    /// Every request answered 200 so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Their bodies as JSON.
    pub fn bodies(&self) -> Vec<Value> {
        self.received().iter().map(Received::json).collect()
    }
}
