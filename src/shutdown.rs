//! Every way to ask a running postflow to stop feeds one channel, so each takes the same
//! ordered stop (`cmd::pipeline::Pipeline::shut_down`): Ctrl-C, Ctrl-Break and SIGTERM
//! (through `ctrlc`), and on Windows a closed console window, logoff or shutdown, `postflow
//! stop` (a named event), and the Service Control Manager's stop.
//!
//! Some callers must not return before the stop is done: Windows ends a process as soon as
//! its handler for a closed console returns. They wait for `finished`.

use std::sync::{Condvar, LazyLock, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

#[cfg(windows)]
pub mod windows;

/// What asked us to stop (for the log line that starts the stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequested {
    /// Ctrl-C, Ctrl-Break, SIGTERM or SIGHUP.
    Signal,
    /// The console window was closed, the user logged off or Windows is shutting down.
    ConsoleClosed,
    /// `postflow stop` set our named stop event.
    StopCommand,
    /// The Service Control Manager sent stop or shutdown.
    Service,
}

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopRequested::Signal => "signal received",
            StopRequested::ConsoleClosed => "console closed, logoff or system shutdown",
            StopRequested::StopCommand => "asked by `postflow stop`",
            StopRequested::Service => "asked by the Service Control Manager",
        })
    }
}

/// One slot is enough: the first request starts the stop, later ones change nothing. A request
/// that comes before the pipeline listens waits here, so it is not lost.
static REQUESTS: LazyLock<(Sender<StopRequested>, Receiver<StopRequested>)> =
    LazyLock::new(|| bounded(1));

/// Set once the ordered stop is done.
static FINISHED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// Asks for the ordered stop; never blocks (it runs inside signal and service handlers).
pub fn request(why: StopRequested) {
    let _ = REQUESTS.0.try_send(why);
}

/// Installs every stop source of this platform and returns where requests arrive. Call once,
/// before anything that may take a while: a signal must never find us without a handler.
/// `as_service`: started by the Windows Service Control Manager (no console of our own).
pub fn listen(as_service: bool) -> Result<Receiver<StopRequested>, String> {
    ctrlc::set_handler(|| request(StopRequested::Signal))
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    #[cfg(windows)]
    windows::listen(as_service)?;
    #[cfg(not(windows))]
    let _ = as_service; // services exist on Windows only; systemd and launchd send SIGTERM
    Ok(REQUESTS.1.clone())
}

/// Says the ordered stop is done (the lock is released), waking whoever waits for it.
pub fn finished() {
    let (done, cond) = &FINISHED;
    *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
    cond.notify_all();
}

/// Waits until the ordered stop is done or `limit` has passed; true if it is done.
pub fn wait_finished(limit: Duration) -> bool {
    let (done, cond) = &FINISHED;
    let guard = done.lock().unwrap_or_else(|p| p.into_inner());
    let (guard, _) = cond
        .wait_timeout_while(guard, limit, |done| !*done)
        .unwrap_or_else(|p| p.into_inner());
    *guard
}

/// The console events Windows sends a process's handlers.
#[cfg(any(windows, test))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleEvent {
    CtrlC,
    CtrlBreak,
    /// The console window was closed (or "End task" on it).
    Close,
    Logoff,
    Shutdown,
}

/// What our console handler does with an event.
#[cfg(any(windows, test))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleAnswer {
    /// Leave it to the next handler (`ctrlc`'s), which requests the stop and returns: the
    /// process lives on and stops in order.
    PassOn,
    /// Request the stop and hold the handler until it is done (or nearly out of time):
    /// Windows ends the process as soon as the handlers for these events return, and gives
    /// them 5 s for a closed window.
    StopAndWait,
    /// Take it and do nothing.
    Ignore,
}

/// How long a handler for a closed console may hold the process: Windows gives 5 s.
#[cfg(any(windows, test))]
pub const CONSOLE_CLOSE_WAIT: Duration = Duration::from_millis(4500);

/// Which console events make us stop and wait. A service receives the logoff event of every
/// user who logs off; it is no reason for the service to stop.
#[cfg(any(windows, test))]
pub fn console_answer(event: ConsoleEvent, as_service: bool) -> ConsoleAnswer {
    match event {
        ConsoleEvent::CtrlC | ConsoleEvent::CtrlBreak => ConsoleAnswer::PassOn,
        ConsoleEvent::Logoff if as_service => ConsoleAnswer::Ignore,
        ConsoleEvent::Close | ConsoleEvent::Logoff | ConsoleEvent::Shutdown => {
            ConsoleAnswer::StopAndWait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_c_and_ctrl_break_go_through_ctrlc_as_before() {
        for as_service in [false, true] {
            assert_eq!(
                console_answer(ConsoleEvent::CtrlC, as_service),
                ConsoleAnswer::PassOn
            );
            assert_eq!(
                console_answer(ConsoleEvent::CtrlBreak, as_service),
                ConsoleAnswer::PassOn
            );
        }
    }

    #[test]
    fn closing_the_window_logging_off_or_shutting_down_waits_for_the_ordered_stop() {
        for event in [
            ConsoleEvent::Close,
            ConsoleEvent::Logoff,
            ConsoleEvent::Shutdown,
        ] {
            assert_eq!(console_answer(event, false), ConsoleAnswer::StopAndWait);
        }
        assert!(CONSOLE_CLOSE_WAIT < Duration::from_secs(5));
    }

    #[test]
    fn a_service_keeps_running_when_a_user_logs_off() {
        assert_eq!(
            console_answer(ConsoleEvent::Logoff, true),
            ConsoleAnswer::Ignore
        );
        assert_eq!(
            console_answer(ConsoleEvent::Shutdown, true),
            ConsoleAnswer::StopAndWait
        );
    }

    #[test]
    fn a_request_made_before_anyone_listens_is_kept_and_the_stop_can_be_waited_for() {
        request(StopRequested::StopCommand);
        request(StopRequested::Signal);
        assert_eq!(REQUESTS.1.try_recv(), Ok(StopRequested::StopCommand));
        assert!(
            REQUESTS.1.try_recv().is_err(),
            "one stop, however many asks"
        );

        assert!(!wait_finished(Duration::from_millis(10)));
        let waiter = std::thread::spawn(|| wait_finished(Duration::from_secs(10)));
        finished();
        assert!(waiter.join().unwrap());
    }
}
