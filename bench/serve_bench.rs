//! Development entry for `bench/serve` and `bench/attack`: starts the public file server on
//! 127.0.0.1 and registers one link, printing its URL on stdout; then opens the webhook door
//! (`POST /hooks/frameio/<token>`, as the review loop does) and prints its URL on a second
//! line, so bogus deliveries meet the real checks. Not part of the product.
//!
//! Usage: serve-bench FILE [PORT]   (PORT 0 or absent picks a free one)

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use postflow::serve::{FileServer, ServeOptions};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(file) = args.next().map(PathBuf::from) else {
        eprintln!("usage: serve-bench FILE [PORT]");
        return ExitCode::from(2);
    };
    let port = match args.next().map(|p| p.to_string_lossy().parse::<u16>()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("serve-bench: bad port: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = ServeOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..ServeOptions::default()
    };
    // Nobody reads the events; the server drops them when the channel is full.
    let (events, _unread) = crossbeam_channel::bounded(1);
    let server = match FileServer::start(opts, events) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("serve-bench: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let link = match server.links().register(1, &file) {
        Ok(link) => link,
        Err(e) => {
            eprintln!("serve-bench: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    println!("http://{}{}", server.local_addr(), link.url_path);
    // A secret nobody else knows: every delivery the bench sends is refused (401), as a
    // stranger's would be; the receiver stays alive so that none is refused for being unread.
    let (deliveries, _kept) = crossbeam_channel::bounded(256);
    let secret = postflow::frameio::random_hex(16).unwrap_or_default();
    let token = "bench0123456789abcdef0123456789ab";
    server.hooks().open(token, vec![secret], deliveries);
    println!("http://{}/hooks/frameio/{token}", server.local_addr());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
