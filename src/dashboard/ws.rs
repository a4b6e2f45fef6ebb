//! `/ws`: live updates for the page.
//!
//! Each viewer has its own thread and a bounded queue of pending messages. The events thread
//! only ever `try_send`s to viewers: a viewer whose queue is full (it stopped reading) is
//! dropped on the spot, so the hub never waits for a browser. The viewer's socket has a write
//! timeout, so its thread cannot hang on a peer that stopped reading either, and a ping every
//! `PING_EVERY` finds peers that vanished.
//!
//! Envelope: `{"id":N,"time":"RFC3339","type":T,"data":{…}}`, `id` counting from 1 per
//! connection (a gap means a message was lost), first a `snapshot`.
//!
//! Closing follows RFC 6455 §5.5.1 and §7.4: a Close from the page is answered with a Close;
//! a protocol error closes with 1002, a frame over `MAX_INCOMING` with 1009, text that is not
//! UTF-8 with 1007.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::http::{error, Request, Response};

/// Viewers at once; the next one gets 503 before the upgrade.
pub const MAX_VIEWERS: usize = 16;
/// Messages waiting for one viewer before it counts as not reading.
const VIEWER_QUEUE: usize = 512;
const PING_EVERY: Duration = Duration::from_secs(15);
/// No frame at all (pongs included) for this long: the viewer is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How long one write may take before the viewer counts as not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the viewer thread looks at its socket for incoming frames.
const POLL: Duration = Duration::from_millis(50);
/// Frames from the page are small; anything bigger is not ours.
const MAX_INCOMING: usize = 64 * 1024;

/// One message for every viewer; each viewer numbers it.
pub struct Outgoing {
    pub kind: &'static str,
    pub time: String,
    /// The `data` object, already serialized.
    pub data: String,
}

struct Slot {
    id: u64,
    tx: Sender<Arc<Outgoing>>,
}

/// The connected viewers.
#[derive(Default)]
pub struct Viewers {
    slots: Mutex<Vec<Slot>>,
    next_id: AtomicU64,
}

/// A place in `Viewers`, released when dropped.
pub struct Ticket {
    viewers: Arc<Viewers>,
    id: u64,
    rx: Receiver<Arc<Outgoing>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.viewers.slots.lock() {
            slots.retain(|s| s.id != self.id);
        }
    }
}

impl Viewers {
    /// Takes a place, or `None` when `MAX_VIEWERS` are connected.
    pub fn join(self: &Arc<Self>) -> Option<Ticket> {
        let mut slots = self.slots.lock().ok()?;
        if slots.len() >= MAX_VIEWERS {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(VIEWER_QUEUE);
        slots.push(Slot { id, tx });
        Some(Ticket {
            viewers: Arc::clone(self),
            id,
            rx,
        })
    }

    /// Queues `msg` for every viewer; drops the ones that are not keeping up.
    pub fn broadcast(&self, msg: Outgoing) {
        let msg = Arc::new(msg);
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|s| match s.tx.try_send(Arc::clone(&msg)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::info!("dashboard: dropping a viewer that stopped reading");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        }
    }

    /// Drops every viewer (each closes with "reconnect for a fresh snapshot").
    pub fn drop_all(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }

    pub fn count(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }
}

/// Checks that `req` is a WebSocket handshake; the error is the reply to send instead.
pub(crate) fn check_handshake(req: &Request) -> Result<String, Response> {
    let has_token = |name: &str, want: &str| {
        req.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if req.method != "GET"
        || !has_token("connection", "upgrade")
        || !has_token("upgrade", "websocket")
    {
        return Err(error(400, "this is the WebSocket endpoint"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(
            error(400, "WebSocket version 13 required").with_header("Sec-WebSocket-Version", "13")
        );
    }
    match req.single("sec-websocket-key") {
        Ok(Some(key)) if valid_key(key) => {
            Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Err(error(
            400,
            "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.2.1)",
        )),
    }
}

/// A base64-encoded 16-byte value: 22 characters, the last of them carrying 2 bits (so one
/// of `A`, `Q`, `g`, `w`), then `==`.
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 24 && b[..22].iter().all(base64) && b"AQgw".contains(&b[21]) && &b[22..] == b"=="
}

/// The 101 reply.
pub(crate) fn accept_response(accept_key: &str) -> String {
    crate::http1::head(
        101,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key),
        ],
        None,
        None,
    )
}

/// The viewer's loop: the snapshot, then whatever the events thread queues, until the viewer
/// leaves, stops reading, or is dropped. `early` holds what the page sent right behind its
/// handshake.
pub(crate) fn serve_viewer(stream: TcpStream, early: Vec<u8>, ticket: Ticket, snapshot: Outgoing) {
    if let Err(e) = stream
        .set_read_timeout(Some(POLL))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
    {
        log::debug!("dashboard: viewer socket: {e}");
        return;
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    let mut ws = WebSocket::from_partially_read(stream, early, Role::Server, Some(config));
    let mut next_id = 1u64;
    // Queues one message; `flush` sends what is queued.
    let mut send = |ws: &mut WebSocket<TcpStream>, m: &Outgoing| {
        let text = envelope(next_id, m);
        next_id += 1;
        ws.write(Message::text(text))
    };
    if let Err(e) = send(&mut ws, &snapshot).and_then(|()| ws.flush()) {
        log::debug!("dashboard: viewer left before the snapshot: {e}");
        return;
    }
    drop(snapshot);
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    let reason = loop {
        // Everything queued, in order.
        let mut failed = None;
        loop {
            match ticket.rx.try_recv() {
                Ok(m) => {
                    if let Err(e) = send(&mut ws, &m) {
                        failed = Some(e);
                        break;
                    }
                }
                Err(TryRecvError::Empty) => {
                    if let Err(e) = ws.flush() {
                        failed = Some(e);
                    }
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::Again,
                        reason: "too slow: reconnect for a fresh snapshot".into(),
                    }));
                    let _ = ws.flush();
                    return;
                }
            }
        }
        if let Some(e) = failed {
            break format!("write failed: {e}");
        }
        if last_ping.elapsed() >= PING_EVERY {
            last_ping = Instant::now();
            if let Err(e) = ws.send(Message::Ping(Vec::new().into())) {
                break format!("ping failed: {e}");
            }
        }
        if last_heard.elapsed() >= SILENCE_LIMIT {
            break "no answer to pings".to_string();
        }
        // Anything from the page counts as a sign of life; its content is ignored: the page
        // has nothing to say over this socket, and garbage must not hurt.
        match ws.read() {
            Ok(Message::Close(_)) => {
                // tungstenite has queued the answering Close; this sends it.
                let _ = ws.flush();
                break "closed by the viewer".to_string();
            }
            Ok(_) => last_heard = Instant::now(),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                break "closed by the viewer".to_string()
            }
            Err(tungstenite::Error::Protocol(e)) => {
                fail(&mut ws, CloseCode::Protocol, "protocol error");
                break format!("protocol error: {e}");
            }
            Err(tungstenite::Error::Capacity(e)) => {
                fail(&mut ws, CloseCode::Size, "frame too big");
                break format!("frame too big: {e}");
            }
            Err(tungstenite::Error::Utf8(e)) => {
                fail(&mut ws, CloseCode::Invalid, "text is not UTF-8");
                break format!("text is not UTF-8: {e}");
            }
            Err(e) => break format!("{e}"),
        }
    };
    log::debug!("dashboard: viewer disconnected ({reason})");
}

/// Closes with `code` after an error from the page (RFC 6455 §7.1.7: _Fail the WebSocket
/// Connection_), best effort: the page may be gone already.
fn fail(ws: &mut WebSocket<TcpStream>, code: CloseCode, reason: &str) {
    let _ = ws.close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = ws.flush();
}

/// The envelope, built by hand around the already-serialized `data`.
fn envelope(id: u64, m: &Outgoing) -> String {
    format!(
        r#"{{"id":{id},"time":"{}","type":"{}","data":{}}}"#,
        m.time, m.kind, m.data
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_json() {
        let m = Outgoing {
            kind: "job",
            time: "2024-01-01T00:00:00.000Z".into(),
            data: r#"{"a":"<img>"}"#.into(),
        };
        let v: serde_json::Value = serde_json::from_str(&envelope(7, &m)).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["type"], "job");
        assert_eq!(v["data"]["a"], "<img>");
    }

    #[test]
    fn a_key_must_be_16_bytes_of_base64() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            "short",
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "dGhlIHNhbXBsZSBub25jZQ===",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_seventeenth_viewer_gets_no_place() {
        let viewers = Arc::new(Viewers::default());
        let tickets: Vec<Ticket> = (0..MAX_VIEWERS).map(|_| viewers.join().unwrap()).collect();
        assert!(viewers.join().is_none());
        drop(tickets);
        assert_eq!(viewers.count(), 0);
        assert!(viewers.join().is_some());
    }
}
