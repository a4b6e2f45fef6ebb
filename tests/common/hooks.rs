//! A notification receiver for tests: records the JSON body of every POST made to its `url`
//! (a webhook as Slack or a studio's bot would be), optionally answering 500 to the first ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Hook {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    /// Answers 204 to every request.
    pub fn start() -> Hook {
        Hook::failing_first(0)
    }

    /// Answers 500 to the first `fail_first` requests (their bodies are not recorded), 204
    /// after.
    pub fn failing_first(fail_first: usize) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        std::thread::spawn(move || {
            let mut n = 0;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let read = reader.read_exact(&mut body).is_ok();
                n += 1;
                let status = if n <= fail_first {
                    "500 Oops"
                } else {
                    if read {
                        if let Ok(v) = serde_json::from_slice(&body) {
                            seen.lock().unwrap().push(v);
                        }
                    }
                    "204 No Content"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Hook { url, bodies }
    }

    /// Every body recorded so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// The bodies of `event` (`upload_done`, `review_ready`, …).
    pub fn of(&self, event: &str) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .filter(|b| b["event"] == event)
            .collect()
    }

    /// Waits (15 s at most) until `n` bodies are recorded; all of them.
    pub fn wait_for(&self, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let got = self.bodies();
            if got.len() >= n {
                return got;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "got {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
