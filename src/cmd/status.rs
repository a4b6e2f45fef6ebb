//! `postflow status`.

use std::process::ExitCode;

use super::{api_agent, dashboard_addr, EXIT_FAILURE, EXIT_OK};
use crate::config::Config;
use crate::dashboard;

/// `postflow status`: asks the running instance's `/api/status` and prints a short summary.
pub fn status(config: &Config) -> ExitCode {
    let addr = dashboard_addr(config);
    let url = format!("http://{addr}/api/status");
    let agent = api_agent();
    let mut req = agent.get(&url);
    if let Some(token) = &config.dashboard.token {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            println!("postflow is not running (nothing answers on http://{addr})");
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            eprintln!("postflow status: {url}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "postflow status: {url} answered {status} with something else than JSON: {e}"
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if status != 200 {
        eprintln!(
            "postflow status: {url} answered {status}: {}",
            body["error"].as_str().unwrap_or("")
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    print!("{}", dashboard::summary(&body, &format!("http://{addr}")));
    ExitCode::from(EXIT_OK)
}
