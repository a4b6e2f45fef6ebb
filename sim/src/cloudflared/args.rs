//! Command-line parsing in the style of urfave/cli over Go's `flag` package:
//! `-flag`, `--flag`, `--flag=value`, `--flag value`; tunnel flags may sit
//! before or after `run`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::text::{format_go_duration, parse_go_duration, Level};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Version,
    Help,
    Quick,
    Named,
}

#[derive(Debug)]
pub struct Args {
    pub command: Command,
    pub url: Option<String>,
    pub metrics: Option<String>,
    pub config: Option<String>,
    pub protocol: String,
    pub grace: Duration,
    pub loglevel: Level,
    pub no_autoupdate: bool,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub tunnel_ref: Option<String>,
    pub pidfile: Option<String>,
    pub logfile: Option<String>,
    /// Explicitly set flags, for the `Settings: map[...]` line.
    pub settings: BTreeMap<String, String>,
}

/// A start-up failure: the bare text urfave/cli prints and the exit code.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn exit1(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: 1,
        }
    }
    /// `cliutil.UsageError`: the message, a help hint, exit code 255 (-1).
    pub fn usage(message: &str, command: &str) -> CliError {
        CliError {
            message: format!("{message}\nSee 'cloudflared {command} --help'."),
            code: 255,
        }
    }
}

pub const MAX_GRACE: Duration = Duration::from_secs(180);

const VALUE_FLAGS: &[&str] = &[
    "config",
    "metrics",
    "url",
    "protocol",
    "grace-period",
    "loglevel",
    "transport-loglevel",
    "logfile",
    "log-directory",
    "output",
    "edge-ip-version",
    "edge-bind-address",
    "retries",
    "pidfile",
    "autoupdate-freq",
    "ha-connections",
    "token",
    "token-file",
    "origincert",
    "region",
    "tag",
    "name",
    "hostname",
    "cred-file",
    "credentials-file",
    "quick-service",
    "label",
    "metrics-update-freq",
    "proxy-connect-timeout",
    "management-diagnostics",
    "max-active-flows",
    "icmpv4-src",
    "icmpv6-src",
];

const BOOL_FLAGS: &[&str] = &[
    "no-autoupdate",
    "no-prechecks",
    "hello-world",
    "no-tls-verify",
    "post-quantum",
    "no-chunked-encoding",
    "http2-origin",
    "disable-chunked-encoding",
];

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Parses argv (without the program name).
pub fn parse(argv: &[String]) -> Result<Args, CliError> {
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut positionals: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "--" {
            positionals.extend(argv[i..].iter().cloned());
            break;
        }
        if a.len() > 1 && a.starts_with('-') {
            let body = a.trim_start_matches('-');
            if a.starts_with("---") || body.is_empty() {
                return Err(CliError::exit1(format!("bad flag syntax: {a}")));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if matches!(name, "version" | "v" | "V") {
                return Ok(bare(Command::Version));
            }
            if matches!(name, "help" | "h") {
                return Ok(bare(Command::Help));
            }
            if BOOL_FLAGS.contains(&name) {
                let v = inline.unwrap_or_else(|| "true".into());
                if v != "true" && v != "false" && v != "1" && v != "0" {
                    return Err(CliError::exit1(format!(
                        "invalid boolean value {v:?} for -{name}: parse error"
                    )));
                }
                flags.insert(name.to_string(), v);
            } else if VALUE_FLAGS.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        if i >= argv.len() {
                            return Err(CliError::exit1(format!(
                                "flag needs an argument: -{name}"
                            )));
                        }
                        i += 1;
                        argv[i - 1].clone()
                    }
                };
                flags.insert(name.to_string(), v);
            } else {
                return Err(CliError::exit1(format!(
                    "Incorrect Usage: flag provided but not defined: -{name}"
                )));
            }
        } else {
            positionals.push(a.clone());
        }
    }

    let mut pos = positionals.into_iter();
    let command = match pos.next().as_deref() {
        None => {
            return Err(CliError::exit1(
                "fake-cloudflared: only the `tunnel` command is simulated (try `tunnel --url http://127.0.0.1:PORT`)",
            ))
        }
        Some("version") => return Ok(bare(Command::Version)),
        Some("help") => return Ok(bare(Command::Help)),
        Some("tunnel") => match pos.next().as_deref() {
            None => Command::Quick,
            Some("run") => Command::Named,
            Some(other) => {
                return Err(CliError::exit1(format!(
                    "fake-cloudflared: `tunnel {other}` is not simulated"
                )))
            }
        },
        Some(other) => {
            return Err(CliError::exit1(format!(
                "fake-cloudflared: command `{other}` is not simulated"
            )))
        }
    };
    let rest: Vec<String> = pos.collect();
    if rest.len() > 1 {
        return Err(CliError::usage(
            "\"cloudflared tunnel run\" accepts only one argument, the ID or name of the tunnel to run.",
            "tunnel run",
        ));
    }

    let settings = flags.clone();
    let get = |name: &str, env: &str| flags.get(name).cloned().or_else(|| env_nonempty(env));

    let grace = match get("grace-period", "TUNNEL_GRACE_PERIOD") {
        None => Duration::from_secs(30),
        Some(v) => parse_go_duration(&v).ok_or_else(|| {
            CliError::exit1(format!(
                "invalid value {v:?} for flag -grace-period: parse error"
            ))
        })?,
    };
    if grace > MAX_GRACE {
        return Err(CliError::exit1(format!(
            "grace-period must be equal or less than {}",
            format_go_duration(MAX_GRACE)
        )));
    }
    let loglevel = match get("loglevel", "TUNNEL_LOGLEVEL") {
        None => Level::Info,
        Some(v) => {
            Level::parse(&v).ok_or_else(|| CliError::exit1(format!("Unknown level: {v}")))?
        }
    };
    let protocol = get("protocol", "TUNNEL_TRANSPORT_PROTOCOL").unwrap_or_else(|| "auto".into());
    if !matches!(protocol.as_str(), "auto" | "quic" | "http2") {
        return Err(CliError::exit1(format!(
            "Unknown protocol {protocol}, valid protocols are: auto, quic, http2"
        )));
    }
    if flags.contains_key("hello-world") {
        return Err(CliError::exit1(
            "fake-cloudflared: --hello-world is not simulated; use --url",
        ));
    }
    let no_autoupdate = get("no-autoupdate", "NO_AUTOUPDATE")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false);

    Ok(Args {
        command,
        url: get("url", "TUNNEL_URL"),
        metrics: get("metrics", "TUNNEL_METRICS"),
        config: flags.get("config").cloned(),
        protocol,
        grace,
        loglevel,
        no_autoupdate,
        token: get("token", "TUNNEL_TOKEN"),
        token_file: get("token-file", "TUNNEL_TOKEN_FILE"),
        tunnel_ref: rest.into_iter().next(),
        pidfile: get("pidfile", "TUNNEL_PIDFILE"),
        logfile: get("logfile", "TUNNEL_LOGFILE"),
        settings,
    })
}

fn bare(command: Command) -> Args {
    Args {
        command,
        url: None,
        metrics: None,
        config: None,
        protocol: "auto".into(),
        grace: Duration::from_secs(30),
        loglevel: Level::Info,
        no_autoupdate: false,
        token: None,
        token_file: None,
        tunnel_ref: None,
        pidfile: None,
        logfile: None,
        settings: BTreeMap::new(),
    }
}

/// `Settings: map[k:v k:v]` as Go prints a `map[string]interface{}` (sorted
/// keys). The token value itself is never shown.
pub fn settings_line(settings: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = settings
        .iter()
        .filter(|(k, _)| k.as_str() != "token")
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    format!("Settings: map[{}]", parts.join(" "))
}

/// Splits an origin URL (`http://127.0.0.1:8080`, `localhost:8080`,
/// `https://host`) into a dialable `host:port`.
pub fn origin_addr(url: &str) -> Option<String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), url),
    };
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() {
        return None;
    }
    let has_port = if let Some(end) = hostport.strip_prefix('[') {
        end.contains("]:")
    } else {
        hostport.contains(':')
    };
    if has_port {
        Some(hostport.to_string())
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        Some(format!("{hostport}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn quick_command_line() {
        let a = parse(&v(&[
            "tunnel",
            "--no-autoupdate",
            "--config",
            "/tmp/c.yml",
            "--metrics",
            "127.0.0.1:9",
            "--url",
            "http://127.0.0.1:80",
            "--grace-period=1m30s",
            "-loglevel",
            "debug",
        ]))
        .unwrap();
        assert!(matches!(a.command, Command::Quick));
        assert_eq!(a.grace, Duration::from_secs(90));
        assert_eq!(a.loglevel, Level::Debug);
        assert!(a.no_autoupdate);
        assert_eq!(a.metrics.as_deref(), Some("127.0.0.1:9"));
    }

    #[test]
    fn named_flags_either_side_of_run() {
        for argv in [
            v(&[
                "tunnel",
                "--metrics",
                "127.0.0.1:9",
                "run",
                "--token-file",
                "/t",
            ]),
            v(&[
                "tunnel",
                "run",
                "--metrics",
                "127.0.0.1:9",
                "--token-file",
                "/t",
            ]),
        ] {
            let a = parse(&argv).unwrap();
            assert!(matches!(a.command, Command::Named));
            assert_eq!(a.token_file.as_deref(), Some("/t"));
            assert_eq!(a.metrics.as_deref(), Some("127.0.0.1:9"));
        }
    }

    #[test]
    fn errors() {
        let e = parse(&v(&["tunnel", "--bogus"])).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.message.contains("flag provided but not defined: -bogus"));
        assert!(parse(&v(&["tunnel", "--grace-period", "4m", "--url", "x:1"])).is_err());
        assert!(parse(&v(&["tunnel", "--grace-period", "3m", "--url", "x:1"])).is_ok());
        assert!(parse(&v(&["tunnel", "--url"])).is_err());
        assert!(matches!(
            parse(&v(&["--version"])).unwrap().command,
            Command::Version
        ));
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_addr("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(origin_addr("localhost:81").as_deref(), Some("localhost:81"));
        assert_eq!(origin_addr("https://h/x").as_deref(), Some("h:443"));
        assert_eq!(origin_addr("http://[::1]").as_deref(), Some("[::1]:80"));
    }

    #[test]
    fn settings_hide_token() {
        let mut m = BTreeMap::new();
        m.insert("token".to_string(), "secret".to_string());
        m.insert("url".to_string(), "http://x:1".to_string());
        assert_eq!(settings_line(&m), "Settings: map[url:http://x:1]");
    }
}
