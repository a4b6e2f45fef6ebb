//! What the front asks of the OS: waiting for sockets to become readable or writable with a
//! timeout, and the number of descriptors it may hold.
//!
//! On unix this is poll(2) (Linux and macOS alike). Not `mio`, although it is in the Linux
//! dependency tree through notify: there it is built without its `net` feature, on macOS it
//! is not in the tree at all (notify uses FSEvents), and the workers need a timed wait on one
//! socket (a `sendfile` that would block), which poll(2) gives in one call and mio only
//! through a poller of its own per transfer. The front holds at most a few thousand sockets;
//! poll(2) scans them in microseconds, so epoll/kqueue would buy nothing measurable here.
//!
//! Elsewhere (Windows) there is no poll(2) in std: the fallback sleeps a few milliseconds and
//! reports every socket as ready. Callers treat readiness as a hint anyway (non-blocking
//! sockets, `WouldBlock` means "not yet"), so the behaviour is the same, at some CPU cost.
// poll(2) takes a pointer to a slice of pollfd we own and its length; getrlimit/setrlimit a
// pointer to a local struct. Nothing else is unsafe.
#![allow(unsafe_code)]

use std::io;
#[cfg(not(unix))]
use std::net::TcpListener;
use std::net::TcpStream;
use std::time::Duration;

/// Something the poll set can watch: a socket, or the front's waker.
pub(crate) trait Pollable {
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::RawFd;
}

#[cfg(unix)]
impl<T: std::os::fd::AsRawFd> Pollable for T {
    fn fd(&self) -> std::os::fd::RawFd {
        self.as_raw_fd()
    }
}

#[cfg(not(unix))]
impl Pollable for TcpStream {}
#[cfg(not(unix))]
impl Pollable for TcpListener {}

/// A set of sockets to wait on for input, rebuilt before every wait.
#[derive(Default)]
pub(crate) struct PollSet {
    #[cfg(unix)]
    fds: Vec<libc::pollfd>,
    #[cfg(not(unix))]
    len: usize,
}

impl PollSet {
    pub fn clear(&mut self) {
        #[cfg(unix)]
        self.fds.clear();
        #[cfg(not(unix))]
        {
            self.len = 0;
        }
    }

    /// Adds `source` (waiting for input or hang-up); returns its index for [`PollSet::ready`].
    pub fn push(&mut self, source: &impl Pollable) -> usize {
        #[cfg(unix)]
        {
            self.fds.push(libc::pollfd {
                fd: source.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            self.fds.len() - 1
        }
        #[cfg(not(unix))]
        {
            let _ = source;
            self.len += 1;
            self.len - 1
        }
    }

    /// Waits until one of the sockets has input (or an error, or hang-up), or `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        #[cfg(unix)]
        return poll(&mut self.fds, timeout);
        #[cfg(not(unix))]
        {
            std::thread::sleep(timeout.min(FALLBACK_TICK));
            Ok(())
        }
    }

    /// Whether the socket at `index` is worth reading (a hint: it may still say `WouldBlock`).
    pub fn ready(&self, index: usize) -> bool {
        #[cfg(unix)]
        return self.fds[index].revents != 0;
        #[cfg(not(unix))]
        {
            let _ = index;
            true
        }
    }
}

/// Waits until `stream` can take more bytes, or `timeout` passes. `Ok(false)` on timeout.
pub(crate) fn wait_writable(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    wait_one(stream, Interest::Write, timeout)
}

/// Waits until `stream` has input (or hung up), or `timeout` passes. `Ok(false)` on timeout.
pub(crate) fn wait_readable(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    wait_one(stream, Interest::Read, timeout)
}

#[derive(Clone, Copy)]
enum Interest {
    Read,
    Write,
}

#[cfg(unix)]
fn wait_one(stream: &TcpStream, interest: Interest, timeout: Duration) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut fds = [libc::pollfd {
        fd: stream.fd(),
        events,
        revents: 0,
    }];
    poll(&mut fds, timeout)?;
    Ok(fds[0].revents != 0)
}

#[cfg(not(unix))]
fn wait_one(_stream: &TcpStream, _interest: Interest, timeout: Duration) -> io::Result<bool> {
    std::thread::sleep(timeout.min(FALLBACK_TICK));
    Ok(true)
}

/// How long the fallback sleeps before calling everything ready.
#[cfg(not(unix))]
const FALLBACK_TICK: Duration = Duration::from_millis(5);

#[cfg(unix)]
fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
    // Rounded up: a wait rounded down to 0 ms would spin until the deadline.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    let nfds = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets to poll"))?;
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `nfds` pollfd structs; poll(2)
    // writes only their `revents` fields.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
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
            stream.fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Elsewhere the close is an ordinary one.
#[cfg(not(unix))]
pub(crate) fn reset_on_close(_stream: &TcpStream) {}

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

/// Without getrlimit: assume the common default.
#[cfg(not(unix))]
pub(crate) fn descriptor_limit() -> u64 {
    1024
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
        #[cfg(unix)]
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
        #[cfg(unix)]
        assert!(!wait_readable(&server, Duration::from_millis(50)).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(5));
        client.write_all(b"x").unwrap();
        assert!(wait_readable(&server, Duration::from_secs(5)).unwrap());
        assert!(wait_writable(&server, Duration::from_secs(5)).unwrap());
    }
}
