//! What the front asks of the OS: waiting for sockets to become readable or writable with a
//! timeout, a reset instead of a graceful close, and the number of descriptors it may hold.
//!
//! On unix this is poll(2) (Linux and macOS alike), on Windows its Winsock twin WSAPoll: the
//! same array of {socket, events, revents} and the same millisecond timeout, so everything
//! but the call itself is shared. Not `mio` or `polling`, although mio is in the Linux
//! dependency tree through notify: there it is built without its `net` feature, on macOS it
//! is not in the tree at all (notify uses FSEvents), and the workers need a timed wait on one
//! socket (a `sendfile` that would block), which poll(2) gives in one call and mio only
//! through a poller of its own per transfer. The front holds at most a few thousand sockets;
//! poll(2) scans them in microseconds, so epoll/kqueue/IOCP would buy nothing measurable here.
//!
//! Where WSAPoll differs from poll(2), the Windows room below says how it is met: it is asked
//! only for "normal data" (POLLRDNORM, POLLWRNORM), an empty set is not handed to it, and it
//! reports errors and hang-ups in `revents` as poll(2) does. Its one known flaw, a failed
//! non-blocking connect never reported, does not apply: the front polls listeners and
//! accepted sockets only.
// poll(2)/WSAPoll take a pointer to a slice of pollfd/WSAPOLLFD we own and its length;
// setsockopt a pointer to a local struct and its size; getrlimit/setrlimit a pointer to a
// local struct; WSAGetLastError nothing. Nothing else is unsafe.
#![allow(unsafe_code)]

use std::io;
use std::net::TcpStream;
use std::time::Duration;

#[cfg(unix)]
use libc::{pollfd as PollFd, POLLIN as READABLE, POLLOUT as WRITABLE};
// WSAPoll takes only the flags Winsock supports: POLLPRI fails the whole call (WSAEINVAL),
// and its POLLIN also asks for out-of-band data (POLLRDBAND). Normal data, POLLRDNORM and
// POLLWRNORM, is what a TCP server waits for.
#[cfg(windows)]
use windows_sys::Win32::Networking::WinSock::{
    POLLRDNORM as READABLE, POLLWRNORM as WRITABLE, WSAPOLLFD as PollFd,
};

/// Something the poll set can watch: a socket, or the front's waker.
pub(crate) trait Pollable {
    /// The descriptor (unix) or SOCKET (Windows) poll(2)/WSAPoll take.
    fn raw(&self) -> Raw;
}

#[cfg(unix)]
type Raw = std::os::fd::RawFd;

#[cfg(unix)]
impl<T: std::os::fd::AsRawFd> Pollable for T {
    fn raw(&self) -> Raw {
        self.as_raw_fd()
    }
}

#[cfg(windows)]
type Raw = windows_sys::Win32::Networking::WinSock::SOCKET;

#[cfg(windows)]
impl<T: std::os::windows::io::AsRawSocket> Pollable for T {
    fn raw(&self) -> Raw {
        // std hands out the SOCKET it holds widened to u64; it fits a SOCKET by construction.
        self.as_raw_socket() as Raw
    }
}

/// A set of sockets to wait on for input, rebuilt before every wait.
#[derive(Default)]
pub(crate) struct PollSet {
    fds: Vec<PollFd>,
}

impl PollSet {
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Adds `source` (waiting for input or hang-up); returns its index for [`PollSet::ready`].
    pub fn push(&mut self, source: &impl Pollable) -> usize {
        self.fds.push(PollFd {
            fd: source.raw(),
            events: READABLE,
            revents: 0,
        });
        self.fds.len() - 1
    }

    /// Waits until one of the sockets has input (or an error, or hang-up), or `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        poll(&mut self.fds, timeout)
    }

    /// Whether the socket at `index` is worth reading (a hint: it may still say `WouldBlock`).
    /// Errors and hang-ups count: the read that follows is what reports them.
    pub fn ready(&self, index: usize) -> bool {
        self.fds[index].revents != 0
    }
}

/// Waits until `stream` can take more bytes, or `timeout` passes. `Ok(false)` on timeout.
pub(crate) fn wait_writable(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    wait_one(stream, WRITABLE, timeout)
}

/// Waits until `stream` has input (or hung up), or `timeout` passes. `Ok(false)` on timeout.
pub(crate) fn wait_readable(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    wait_one(stream, READABLE, timeout)
}

fn wait_one(stream: &TcpStream, events: i16, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd {
        fd: stream.raw(),
        events,
        revents: 0,
    }];
    poll(&mut fds, timeout)?;
    Ok(fds[0].revents != 0)
}

/// `timeout` in whole milliseconds, rounded up: a wait rounded down to 0 ms would return at
/// once, and the caller would spin until its deadline.
fn millis(timeout: Duration) -> i32 {
    timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
}

#[cfg(unix)]
fn poll(fds: &mut [PollFd], timeout: Duration) -> io::Result<()> {
    let nfds = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets to poll"))?;
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `nfds` pollfd structs; poll(2)
    // writes only their `revents` fields.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, millis(timeout)) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A signal (SIGTERM on its way to the ctrlc handler) is not an error: the caller
        // loops and recomputes its deadlines.
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(windows)]
fn poll(fds: &mut [PollFd], timeout: Duration) -> io::Result<()> {
    use windows_sys::Win32::Networking::WinSock::{WSAGetLastError, WSAPoll, SOCKET_ERROR};

    let ms = millis(timeout);
    if fds.is_empty() {
        // WSAPoll refuses an empty set (WSAEINVAL) where poll(2) simply sleeps.
        std::thread::sleep(Duration::from_millis(ms.unsigned_abs().into()));
        return Ok(());
    }
    let nfds = u32::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets to poll"))?;
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `nfds` WSAPOLLFD structs;
    // WSAPoll writes only their `revents` fields.
    if unsafe { WSAPoll(fds.as_mut_ptr(), nfds, ms) } == SOCKET_ERROR {
        // SAFETY: reads this thread's last Winsock error; no arguments.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    Ok(())
}

/// Makes closing `stream` send a reset (SO_LINGER with a zero timeout): what is still in the
/// socket buffer is dropped instead of trickling out, for minutes, to a client that stopped
/// reading, and the kernel memory is free at once.
#[cfg(unix)]
pub(crate) fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a valid `linger` that outlives the call, and its size is
    // passed along; the descriptor is borrowed for the call.
    let _ = unsafe {
        libc::setsockopt(
            stream.raw(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Makes closing `stream` send a reset: Winsock's SO_LINGER with a zero timeout turns
/// `closesocket` into an abortive close, for the same reasons as on unix.
#[cfg(windows)]
pub(crate) fn reset_on_close(stream: &TcpStream) {
    use windows_sys::Win32::Networking::WinSock::{setsockopt, LINGER, SOL_SOCKET, SO_LINGER};

    let linger = LINGER {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a valid `LINGER` that outlives the call, and its size is
    // passed along; the socket is borrowed for the call.
    let _ = unsafe {
        setsockopt(
            stream.raw(),
            SOL_SOCKET,
            SO_LINGER,
            (&linger as *const LINGER).cast(),
            std::mem::size_of::<LINGER>() as i32,
        )
    };
}

/// Raises the soft limit on open descriptors to the hard one (as Go's runtime does), once,
/// and returns the soft limit then in force. The front holds a socket for every client that
/// is still sending its head; a default soft limit of 1024 would let a slowloris run the
/// whole process (ledger, files to upload) out of descriptors.
#[cfg(unix)]
pub(crate) fn descriptor_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass, which lives for the whole call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 1024;
        }
        // macOS reports an infinite hard limit that setrlimit refuses; 64 Ki is plenty.
        let wanted = lim.rlim_max.min(65_536);
        if lim.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above; the kernel only reads the struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                log::debug!("open file limit raised from {} to {wanted}", lim.rlim_cur);
                lim.rlim_cur = wanted;
            }
        }
        // rlim_t is narrower than u64 on some targets.
        #[allow(clippy::useless_conversion)]
        u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX)
    })
}

/// Windows has no per-process limit on sockets to raise: they are kernel handles, and a
/// process's handle table holds 2^24 of them, far beyond what memory allows first.
#[cfg(windows)]
pub(crate) fn descriptor_limit() -> u64 {
    1 << 24
}

/// How the connection ended for `stream`, its client end: "reset" or "closed"
/// (tests only). Reads whatever is still on its way first.
#[cfg(test)]
pub(crate) fn how_it_ended(stream: &mut TcpStream) -> String {
    use std::io::{Read, Write};

    let mut sink = vec![0u8; 1 << 20];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return "reset".into(),
            Err(e) => return format!("read failed: {e}"),
        }
    }
    // Wine 8 lets its server take the reset's error off the socket, so the read says "end";
    // the reset still shows in the next write, refused at once. After an orderly end the
    // first write still goes out (everywhere).
    match stream.write(b"x") {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => "reset".into(),
        _ => "closed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn a_listener_becomes_ready_when_someone_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut set = PollSet::default();
        let i = set.push(&listener);
        set.wait(Duration::from_millis(10)).unwrap();
        assert!(!set.ready(i), "nobody connected yet");
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        set.clear();
        let i2 = set.push(&listener);
        assert_eq!(i, i2);
        set.wait(Duration::from_secs(5)).unwrap();
        assert!(set.ready(i2));
    }

    #[test]
    fn waits_time_out_and_see_data() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let start = Instant::now();
        assert!(!wait_readable(&server, Duration::from_millis(50)).unwrap());
        // Some slack: a Windows wait may end up to a clock tick early.
        assert!(start.elapsed() >= Duration::from_millis(30));
        client.write_all(b"x").unwrap();
        assert!(wait_readable(&server, Duration::from_secs(5)).unwrap());
        assert!(wait_writable(&server, Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn a_peer_hanging_up_counts_as_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(client);
        let mut set = PollSet::default();
        let i = set.push(&server);
        set.wait(Duration::from_secs(5)).unwrap();
        assert!(set.ready(i), "the read that follows sees the end");
    }

    #[test]
    fn an_empty_set_or_a_wait_under_a_millisecond_still_waits() {
        // WSAPoll refuses an empty set, and a wait rounded down to 0 ms would spin: both
        // must sleep their time like poll(2) does.
        let mut set = PollSet::default();
        let start = Instant::now();
        set.wait(Duration::from_millis(30)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set.push(&listener);
        let start = Instant::now();
        set.wait(Duration::from_micros(200)).unwrap();
        assert!(start.elapsed() >= Duration::from_micros(200));
    }

    #[test]
    fn a_socket_set_to_reset_on_close_resets_its_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        reset_on_close(&server);
        drop(server);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(how_it_ended(&mut client), "reset");
    }
}
