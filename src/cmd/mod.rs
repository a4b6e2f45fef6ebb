//! The commands, one file each (the way cargo keeps one file per subcommand): `run` and a
//! one-off `upload` share the pipeline in `pipeline.rs`; `check`, `auth`, `status` and `stop`
//! talk to Frame.io or to the running instance and exit; `service` installs postflow as a
//! Windows service (or prints the systemd unit or launchd agent) and is the service itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::frameio::api::RetryPolicy;
use crate::logfile::{self, LogFile};
use crate::logtail;

mod auth;
mod check;
mod pipeline;
mod run;
pub mod service;
mod status;
mod stop;
mod upload;

pub use auth::auth;
pub use check::check;
pub use run::run;
pub use status::status;
pub use stop::stop;
pub use upload::upload;

/// Exit codes of the contract.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Loads the config or prints the one-line error; `Err` carries the exit code.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

pub(crate) fn print_config_error(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_USAGE)
}

/// env_logger on stderr with timestamps (INFO and above also go to the page once the hub is
/// attached); `RUST_LOG` overrides `log_level`. A service has no stderr: it logs, in the same
/// format, to `<state_dir>/logs/postflow.log`, rotated at 10 MB with five old files kept.
pub fn init_logging(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| config.log_level.clone());
    let target = if service::running_as_service() {
        let file = LogFile::new(&log_file_path(config), logfile::LIMIT, logfile::KEEP);
        env_logger::Target::Pipe(Box::new(file))
    } else {
        env_logger::Target::Stderr
    };
    logtail::init(&filter, target);
}

/// Where a service logs.
pub fn log_file_path(config: &Config) -> PathBuf {
    config.state_dir.join("logs").join("postflow.log")
}

/// Makes any panic end the process with a non-zero code, in every build profile, so that a
/// watchdog restarts us instead of a silently dead thread. (The release profile also sets
/// `panic = "abort"`; this covers debug builds, which the tests run.)
pub fn abort_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A service's stderr goes nowhere: its log file is where a person will look.
        if service::running_as_service() {
            log::error!("{info}");
        }
        default_hook(info);
        std::process::abort();
    }));
}

/// Where the running instance's dashboard answers: `dashboard.listen`, on loopback when it
/// listens on every address.
pub(crate) fn dashboard_addr(config: &Config) -> SocketAddr {
    let mut addr = config.dashboard.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// The client of `status` and `upload` for the running instance's API.
pub(crate) fn api_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The OAuth credential keys `auth` and the Frame.io checks need; the first one missing.
pub(crate) fn missing_credential(config: &Config) -> Option<&'static str> {
    let f = &config.frameio;
    [
        ("frameio.client_id", &f.client_id),
        ("frameio.client_secret", &f.client_secret),
        ("frameio.redirect_uri", &f.redirect_uri),
    ]
    .into_iter()
    .find(|(_, v)| v.is_empty())
    .map(|(k, _)| k)
}

/// `check` must answer in seconds, not sit through the run's patient retries.
pub(crate) const CHECK_RETRY: RetryPolicy = RetryPolicy {
    tries: 2,
    first_backoff: Duration::from_millis(500),
    max_backoff: Duration::from_secs(2),
    rate_limit_tries: 4,
    max_rate_wait: Duration::from_secs(10),
};
