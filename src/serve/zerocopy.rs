//! Linux `sendfile(2)`: file bytes go to the socket inside the kernel, with no copy through a
//! user-space buffer. This is what keeps the file server close to nginx on throughput and CPU
//! (bench/serve), and it needs no buffer memory per transfer at all.
//!
//! The one `unsafe` call has no memory-safety preconditions: it takes two file descriptors
//! we borrow for the duration of the call and a pointer to a local `off_t`.
//!
//! The socket is non-blocking: a full socket buffer is `WouldBlock`, and the caller waits for
//! it with a deadline. A blocking `sendfile` cannot be bounded: `SO_SNDTIMEO` restarts on
//! every bit of progress, so a client reading a byte now and then kept one call blocked for
//! minutes.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Sends up to `count` bytes of `file` from `offset` to `stream`; returns how many were sent
/// (0: the file ends at `offset`). `WouldBlock` when the socket takes nothing right now.
pub(super) fn sendfile(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    loop {
        // SAFETY: both descriptors are open for the whole call (borrowed), and `off` is a
        // valid, exclusively borrowed off_t; the kernel writes nothing else.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
