//! `/metrics` in the Prometheus text format (version 0.0.4), written by hand: a few gauges and
//! counters do not need a client library.

use std::fmt::Write;
use std::time::SystemTime;

use super::http::{error, Response};
use super::Ctx;
use crate::events::ComponentState;

pub(crate) fn render(ctx: &Ctx) -> Response {
    let stats = match ctx.stats() {
        Ok(s) => s,
        Err(e) => return error(503, &e),
    };
    let auth = ctx.login.as_ref().map(|l| l.status());
    let m = ctx.model();
    let mut out = String::new();

    family(
        &mut out,
        "postflow_jobs",
        "gauge",
        "Jobs in the ledger by project and state.",
    );
    for (project, counts) in &stats.by_project {
        for (state, n) in counts {
            sample(
                &mut out,
                "postflow_jobs",
                &[("project", project), ("state", state.as_str())],
                *n as f64,
            );
        }
    }

    family(
        &mut out,
        "postflow_queue_paused",
        "gauge",
        "1 while a person has paused the queue.",
    );
    sample(
        &mut out,
        "postflow_queue_paused",
        &[],
        f64::from(u8::from(stats.paused)),
    );

    family(
        &mut out,
        "postflow_bandwidth_limit_bytes_per_second",
        "gauge",
        "upload.bandwidth now (timetable or override); 0 when there is no limit.",
    );
    sample(
        &mut out,
        "postflow_bandwidth_limit_bytes_per_second",
        &[],
        crate::bandwidth::shared().limit().unwrap_or(0) as f64,
    );

    family(
        &mut out,
        "postflow_uploads_total",
        "counter",
        "Upload attempts that ended since start, by project, result (ok, error) and mode \
         (remote, local).",
    );
    // Every project the queue counts (those of the config, and removed ones with jobs).
    for project in stats.by_project.keys() {
        for mode in ["remote", "local"] {
            for result in ["ok", "error"] {
                let key = (project.clone(), mode, result);
                let n = m.attempts.get(&key).copied().unwrap_or(0);
                sample(
                    &mut out,
                    "postflow_uploads_total",
                    &[("project", project), ("result", result), ("mode", mode)],
                    n as f64,
                );
            }
        }
    }

    family(
        &mut out,
        "postflow_served_bytes_total",
        "counter",
        "Distinct file bytes delivered by the file server since start.",
    );
    sample(
        &mut out,
        "postflow_served_bytes_total",
        &[],
        m.bytes_served as f64,
    );

    let up = |name: &str| {
        m.components
            .get(name)
            .is_some_and(|c| c.state == ComponentState::Up)
    };
    family(
        &mut out,
        "postflow_tunnel_up",
        "gauge",
        "1 when the tunnel is ready.",
    );
    sample(
        &mut out,
        "postflow_tunnel_up",
        &[],
        f64::from(u8::from(up("tunnel"))),
    );

    let tunnel = m.components.get("tunnel").map(|c| c.state);
    family(
        &mut out,
        "postflow_tunnel_state",
        "gauge",
        "1 for the tunnel's state (up, reconnecting: cloudflared getting back by itself, \
         down, starting, off, ...), 0 for the others.",
    );
    for state in ComponentState::ALL {
        sample(
            &mut out,
            "postflow_tunnel_state",
            &[("state", state.as_str())],
            f64::from(u8::from(tunnel == Some(state))),
        );
    }

    family(
        &mut out,
        "postflow_auth_ok",
        "gauge",
        "1 when postflow holds usable Frame.io tokens; 0 when a person must log in.",
    );
    let auth_ok = auth.as_ref().map_or(up("auth"), |a| a.logged_in);
    sample(
        &mut out,
        "postflow_auth_ok",
        &[],
        f64::from(u8::from(auth_ok)),
    );

    if let Some(expires_at) = auth.as_ref().and_then(|a| a.expires_at) {
        family(
            &mut out,
            "postflow_token_expiry_seconds",
            "gauge",
            "Seconds until the Frame.io access token expires (negative once expired).",
        );
        let now = super::model::unix_ms(SystemTime::now()) as f64 / 1000.0;
        sample(
            &mut out,
            "postflow_token_expiry_seconds",
            &[],
            (expires_at as f64 - now).round(),
        );
    }

    family(
        &mut out,
        "postflow_dashboard_viewers",
        "gauge",
        "Pages connected to the WebSocket.",
    );
    sample(
        &mut out,
        "postflow_dashboard_viewers",
        &[],
        ctx.viewers.count() as f64,
    );

    family(
        &mut out,
        "postflow_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    sample(
        &mut out,
        "postflow_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    drop(m);
    Response::new(200, "text/plain; version=0.0.4; charset=utf-8", out)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}
