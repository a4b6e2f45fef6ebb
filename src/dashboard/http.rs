//! The dashboard's side of the HTTP/1.1 front (`crate::http1`, which also says why not
//! tiny_http): its limits, its JSON answers and the headers every answer carries.

use std::time::Duration;

use crate::http1::{Conn, Limits, Outcome};
pub(crate) use crate::http1::{Request, Response};

/// Request bodies larger than this are refused (413).
pub const MAX_BODY: usize = 64 * 1024;
/// Requests served at once; more wait a second for a worker, then get 503.
const WORKERS: usize = 64;

/// What the dashboard's listener allows. A browser sends its head at once; 10 s is generous
/// and keeps a slowloris from holding anything for long.
pub(crate) fn limits() -> Limits {
    Limits {
        name: "dashboard",
        workers: WORKERS,
        max_head: 16 * 1024,
        head_timeout: Duration::from_secs(10),
        // nginx's default.
        idle_timeout: Duration::from_secs(75),
        io_timeout: Duration::from_secs(10),
        max_waiting: 1024,
        retry_after_secs: 1,
    }
}

pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
    Response::new(status, "application/json", value.to_string())
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// The headers every dashboard answer carries: nothing is cached, sniffed or framed.
pub(crate) fn guarded(response: Response) -> Response {
    response
        .with_header("Cache-Control", "no-store")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("X-Frame-Options", "DENY")
}

/// Writes `response` to `req` (no body for HEAD) in one write, and says what becomes of the
/// connection: kept alive when the client allows it and nothing of its request is left
/// unread.
pub(crate) fn send(mut conn: Conn, req: &Request, response: Response) -> Outcome {
    let keep_alive = req.keep_alive && !conn.body_pending();
    let bytes = guarded(response).encode(req.is_head(), req.connection_header(keep_alive));
    match conn.write_all(&bytes) {
        Ok(()) if keep_alive => Outcome::KeepAlive(conn),
        Ok(()) => Outcome::Close(conn),
        Err(e) => {
            log::debug!("dashboard: reply to {} not sent: {e}", conn.peer());
            Outcome::Close(conn)
        }
    }
}
