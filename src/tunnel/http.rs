//! The supervisor's HTTP calls: cloudflared's metrics server on loopback (`/ready`,
//! `/quicktunnel`), and the probe through the public URL. One agent each, short timeouts,
//! no redirects, and HTTP statuses as values rather than errors.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

use super::output;

/// Environment variable, for tests only: `host:port=ip:port[,…]`, like curl's `--resolve`.
/// The probe then reaches a made-up public hostname (the stand-in's edge listener) without
/// DNS. Unset in production.
pub const TEST_RESOLVE_ENV: &str = "POSTFLOW_TEST_RESOLVE";

/// What cloudflared's `/ready` said.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    /// 200: at least one edge connection is registered.
    Ready,
    /// Any other status (503 while connecting or after a drop).
    NotReady(u16),
    /// The metrics server did not answer (still starting, or gone).
    Unreachable(String),
}

/// A file the supervisor can fetch through the public URL, and the bytes it must get back.
#[derive(Clone, Debug)]
pub struct ProbeLink {
    /// Path and query after the public URL, starting with `/`.
    pub path: String,
    pub expected: Vec<u8>,
}

pub struct Http {
    local: Agent,
    public: Agent,
}

impl Http {
    pub fn new() -> Http {
        let local = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(2)))
            // Loopback must never go through a proxy from the environment.
            .proxy(None)
            .build()
            .new_agent();
        let public_config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(15)))
            .build();
        let overrides = test_overrides();
        let public = if overrides.is_empty() {
            Agent::new_with_config(public_config)
        } else {
            log::warn!("{TEST_RESOLVE_ENV} is set: test-only name overrides are in effect");
            Agent::with_parts(
                public_config,
                DefaultConnector::default(),
                Overrides(overrides),
            )
        };
        Http { local, public }
    }

    pub fn ready(&self, metrics: SocketAddr) -> Readiness {
        match self.local.get(format!("http://{metrics}/ready")).call() {
            Ok(r) if r.status() == 200 => Readiness::Ready,
            Ok(r) => Readiness::NotReady(r.status().as_u16()),
            Err(e) => Readiness::Unreachable(e.to_string()),
        }
    }

    /// The quick tunnel's URL from `/quicktunnel`, if the endpoint exists and has it.
    pub fn quick_url(&self, metrics: SocketAddr) -> Option<String> {
        let mut r = self
            .local
            .get(format!("http://{metrics}/quicktunnel"))
            .call()
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        let body = r.body_mut().with_config().limit(4096).read_to_vec().ok()?;
        output::parse_quicktunnel(&body)
    }

    /// Fetches the probe link through `public_url` and compares the bytes. The error says
    /// what came back instead, without the link's path (it holds a token).
    pub fn probe(&self, public_url: &str, link: &ProbeLink) -> Result<(), String> {
        let url = format!("{public_url}{}", link.path);
        let mut r = self
            .public
            .get(&url)
            .call()
            .map_err(|e| format!("probe through {public_url} failed: {e}"))?;
        let status = r.status().as_u16();
        if status != 200 {
            return Err(format!(
                "probe through {public_url} got HTTP {status} instead of the probe file"
            ));
        }
        // One byte more than expected is enough to tell "longer" from "equal".
        let limit = link.expected.len() as u64 + 1;
        let mut body = Vec::new();
        r.body_mut()
            .as_reader()
            .take(limit)
            .read_to_end(&mut body)
            .map_err(|e| format!("probe through {public_url}: reading the body: {e}"))?;
        if body != link.expected {
            return Err(format!(
                "probe through {public_url} got different bytes ({} instead of {}): \
                 the URL does not lead to this postflow",
                body.len(),
                link.expected.len()
            ));
        }
        Ok(())
    }
}

/// Parses `host:port=ip:port[,…]`; bad entries are ignored with a warning.
fn test_overrides() -> Vec<(String, SocketAddr)> {
    let Ok(spec) = std::env::var(TEST_RESOLVE_ENV) else {
        return Vec::new();
    };
    parse_overrides(&spec)
}

fn parse_overrides(spec: &str) -> Vec<(String, SocketAddr)> {
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .filter_map(|entry| {
            let parsed = entry.split_once('=').and_then(|(name, addr)| {
                Some((name.trim().to_ascii_lowercase(), addr.trim().parse().ok()?))
            });
            if parsed.is_none() {
                log::warn!("{TEST_RESOLVE_ENV}: ignoring {entry:?} (expected host:port=ip:port)");
            }
            parsed
        })
        .collect()
}

#[derive(Debug)]
struct Overrides(Vec<(String, SocketAddr)>);

impl Resolver for Overrides {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let key = format!("{}:{port}", uri.host().unwrap_or("").to_ascii_lowercase());
        match self.0.iter().find(|(name, _)| *name == key) {
            Some((_, addr)) => {
                let mut out = self.empty();
                out.push(*addr);
                Ok(out)
            }
            None => DefaultResolver::default().resolve(uri, config, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_overrides_parse_like_curl() {
        assert_eq!(
            parse_overrides("Files.Example.test:80=127.0.0.1:4000, bad, x:1=nope"),
            vec![(
                "files.example.test:80".to_string(),
                "127.0.0.1:4000".parse().unwrap()
            )]
        );
    }
}
