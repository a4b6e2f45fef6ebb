//! `frameio-sim`: the Frame.io v4 + Adobe IMS + S3 simulator as a process, for the demo and
//! for people. Prints what a postflow config needs, then serves until Ctrl-C / SIGTERM.

use sim::{FetchMode, FrameIo, Options, RetryHint, SimProject};
use std::process::ExitCode;

const USAGE: &str = "\
usage: frameio-sim [options]

  --listen ADDR            listen address (default 127.0.0.1:9090)
  --registry DIR           tunnel hostname registry (default: env SIM_TUNNEL_REGISTRY)
  --client-id ID           OAuth client id
  --client-secret SECRET   OAuth client secret
  --redirect-uri URI       registered redirect URI (default https://localhost/postflow/callback)
  --token-lifetime SECS    access token lifetime (default 86399)
  --refresh-lifetime SECS  refresh token lifetime (default 1209600)
  --rotation-reuse         used refresh tokens keep working
  --fetch MODE             plain | ranges | alternate (default plain)
  --fetch-parallelism N    parallel Range GETs (default 4)
  --fault-5xx FRACTION     share of /v4 calls answered 5xx (default 0)
  --retry-hint HINT        retry_after | window_only | none (default retry_after)
  --no-rate-limits         do not enforce rate limits (headers still sent)
  --delay-ms MS            delay every response
  --part-size BYTES        local upload part size (default 26214400)
  --media-type-null        files carry media_type null
  --remote-size-limit N    remote upload limit in bytes (default 50000000000)
  --extra-accounts N       accounts besides the project's
  --project NAME[@N]       one more project, in the main account (N = 0, the default) or in
                           extra account N (needs --extra-accounts N or more); repeatable
  --data-dir DIR           staging directory (default: a temp dir)
  --originals-dir DIR      keep every file's bytes there as DIR/<file_id>, so that show file
                           with include=media_links.original hands out a download URL
  --seed N                 PRNG seed (fixed ids)

Knobs can be changed while running: POST /_sim/faults with a JSON object (webhook retries
and repeats, file.ready delay: webhook_retry_secs, webhook_duplicates, ready_delay_ms).
Reviewers, for the demo (each fires its webhook event): POST /_sim/comments
{\"file_id\",\"author\",\"text\",\"timestamp\"}, /_sim/comments/ID/reply {\"author\",\"text\"},
/_sim/comments/ID/complete, /_sim/status {\"file_id\",\"status\"}. See sim/README.md.
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("frameio-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: cannot parse {v:?}\n\n{USAGE}"))
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        listen: "127.0.0.1:9090".into(),
        tunnel_registry: std::env::var_os("SIM_TUNNEL_REGISTRY").map(Into::into),
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        let f = &mut o.faults;
        match flag {
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--listen" => o.listen = value()?,
            "--registry" => o.tunnel_registry = Some(value()?.into()),
            "--client-id" => o.client_id = value()?,
            "--client-secret" => o.client_secret = value()?,
            "--redirect-uri" => o.redirect_uri = value()?,
            "--token-lifetime" => f.access_token_lifetime_secs = parse(flag, &value()?)?,
            "--refresh-lifetime" => f.refresh_token_lifetime_secs = parse(flag, &value()?)?,
            "--rotation-reuse" => f.rotation_reuse_allowed = true,
            "--fetch" => {
                f.fetch_mode = match value()?.as_str() {
                    "plain" => FetchMode::Plain,
                    "ranges" => FetchMode::Ranges,
                    "alternate" => FetchMode::Alternate,
                    other => return Err(format!("--fetch: unknown mode {other:?}")),
                }
            }
            "--fetch-parallelism" => f.fetch_parallelism = parse(flag, &value()?)?,
            "--fault-5xx" => f.error_5xx_fraction = parse(flag, &value()?)?,
            "--retry-hint" => {
                f.retry_hint = match value()?.as_str() {
                    "retry_after" => RetryHint::RetryAfter,
                    "window_only" => RetryHint::WindowOnly,
                    "none" => RetryHint::None,
                    other => return Err(format!("--retry-hint: unknown hint {other:?}")),
                }
            }
            "--no-rate-limits" => f.rate_limits = false,
            "--delay-ms" => f.response_delay_ms = parse(flag, &value()?)?,
            "--part-size" => f.part_size = parse(flag, &value()?)?,
            "--media-type-null" => f.media_type_null = true,
            "--remote-size-limit" => f.remote_size_limit = parse(flag, &value()?)?,
            "--extra-accounts" => o.extra_accounts = parse(flag, &value()?)?,
            "--project" => o.projects.push(project(&value()?)?),
            "--data-dir" => o.data_dir = Some(value()?.into()),
            "--originals-dir" => o.originals_dir = Some(value()?.into()),
            "--seed" => o.seed = Some(parse(flag, &value()?)?),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    Ok(o)
}

/// `NAME` or `NAME@ACCOUNT_INDEX` (the last `@` splits, so a name may hold one).
fn project(v: &str) -> Result<SimProject, String> {
    let (name, account) = match v.rsplit_once('@') {
        Some((name, n)) => (name, parse("--project", n)?),
        None => (v, 0),
    };
    if name.is_empty() {
        return Err(format!("--project: no name in {v:?}\n\n{USAGE}"));
    }
    Ok(SimProject {
        name: name.to_string(),
        account,
    })
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = options(&args)?;
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    let sim = FrameIo::start(opts).map_err(|e| e.to_string())?;
    println!("base_url={}", sim.base_url());
    println!("client_id={}", sim.client_id());
    println!("client_secret={}", sim.client_secret());
    println!("redirect_uri={}", sim.redirect_uri());
    println!("account_id={}", sim.account_id());
    println!("workspace_id={}", sim.workspace_id());
    println!("project_id={}", sim.project_id());
    println!("root_folder_id={}", sim.root_folder_id());
    for p in sim.projects().iter().skip(1) {
        println!("project.{}={}", p.name, p.id);
    }
    println!("ready");
    let _ = rx.recv();
    eprintln!("frameio-sim: stopping");
    drop(sim);
    Ok(())
}
