//! Development entry for `bench/serve`: starts the public file server on 127.0.0.1 and
//! registers one link, printing its URL on stdout. Not part of the product.
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
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
