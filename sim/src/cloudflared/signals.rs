//! SIGTERM/SIGINT handling the way cloudflared does it: the first signal
//! starts a graceful shutdown and restores the default action (Go's
//! `signal.Stop`), so a second signal kills the process at once.
//!
//! On Windows, as Go's runtime does there: Ctrl-C and Ctrl-Break (what postflow sends to
//! cloudflared's process group) are an interrupt and start the same graceful shutdown; a
//! second one ends the process at once, as the default console handler does.
//!
//! SIGUSR1 is the stand-in's own: "the edge drops the connection now" (the real
//! binary has no such signal; this is how a person or a test cuts the tunnel
//! mid-transfer without touching the network).

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);
static DROPS: AtomicU32 = AtomicU32::new(0);

#[cfg(unix)]
extern "C" fn on_usr1(_sig: libc::c_int) {
    DROPS.fetch_add(1, Ordering::SeqCst);
}

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic store and signal().
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Windows' SIGINT number (the C runtime's), for Go's `os.Interrupt`.
#[cfg(windows)]
const INTERRUPT: i32 = 2;

/// Installs the one-shot handler for Ctrl-C/Ctrl-Break (and a console close, which the
/// `ctrlc` crate reports the same way).
#[cfg(windows)]
pub fn install() {
    let installed = ctrlc::set_handler(|| {
        if RECEIVED
            .compare_exchange(0, INTERRUPT, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // The second one: what the default handler does, STATUS_CONTROL_C_EXIT.
            std::process::exit(0xC000_013A_u32 as i32);
        }
    });
    if let Err(e) = installed {
        eprintln!("fake-cloudflared: cannot handle Ctrl-Break: {e}");
    }
}

/// Installs the one-shot handler for SIGTERM and SIGINT.
#[cfg(unix)]
pub fn install() {
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        let usr1 = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = usr1;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Takes the SIGUSR1s received since the last call: whether there was any.
pub fn take_drop_request() -> bool {
    DROPS.swap(0, Ordering::SeqCst) > 0
}

/// The first signal received, if any (raw number).
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Go's `os.Signal.String()` for the two signals we handle.
pub fn name(sig: i32) -> &'static str {
    #[cfg(unix)]
    {
        if sig == libc::SIGINT {
            return "interrupt";
        }
        if sig == libc::SIGTERM {
            return "terminated";
        }
    }
    #[cfg(windows)]
    if sig == INTERRUPT {
        return "interrupt";
    }
    "signal"
}

/// A Go program whose write to fd 2 fails with EPIPE dies of SIGPIPE.
pub fn die_of_sigpipe() -> ! {
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(2)
}
