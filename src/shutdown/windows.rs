//! The Windows stop sources `ctrlc` does not cover: a closed console window (and logoff,
//! shutdown), and a named event that `postflow stop` sets, which works with no console at
//! all (Task Scheduler's "End" and `taskkill /F` are TerminateProcess, no stop at all).
//!
//! The event is `Local\postflow-stop-<pid>` (the session's namespace, where `postflow stop`
//! run by the same user finds it), and for a service also `Global\postflow-stop-<pid>`: a
//! service runs in session 0, whose `Local\` a user's session cannot see.
//!
//! Unsafe: the Win32 calls below. Each takes plain integers or pointers to NUL-terminated
//! UTF-16 buffers that live across the call; handles are checked before use and the ones kept
//! for the life of the process are never closed, so none is used after being freed.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_sys::core::BOOL;
use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, ERROR_FILE_NOT_FOUND, HANDLE, WAIT_FAILED,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::System::Console::{
    AllocConsole, SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
    CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, OpenEventW, SetEvent, WaitForMultipleObjects, EVENT_MODIFY_STATE, INFINITE,
};

use super::CONSOLE_CLOSE_WAIT;
use super::{console_answer, request, wait_finished, ConsoleAnswer, ConsoleEvent, StopRequested};

const TRUE: BOOL = 1;
const FALSE: BOOL = 0;

/// Read by the console handler, which cannot capture anything.
static AS_SERVICE: AtomicBool = AtomicBool::new(false);

/// The stop event's name in a namespace (`Local` or `Global`). The Windows test harness opens
/// exactly `Local\postflow-stop-<pid>`: keep the form.
pub fn stop_event_name(namespace: &str, pid: u32) -> String {
    format!("{namespace}\\postflow-stop-{pid}")
}

fn wide(s: &str) -> Vec<u16> {
    OsStr::new(s).encode_wide().chain(Some(0)).collect()
}

/// Installs the console handler and the stop events; as a service, also gives the process a
/// console first.
pub(super) fn listen(as_service: bool) -> Result<(), String> {
    AS_SERVICE.store(as_service, Ordering::Relaxed);
    if as_service {
        // A service has no console, and without one it cannot send cloudflared (started in a
        // process group of its own on our console) the Ctrl-Break that asks it to stop. The
        // console a service allocates lives in session 0, where no one sees it. If this
        // fails, the tunnel's stop falls back to killing cloudflared after the grace period,
        // and says so in the log.
        // SAFETY: no arguments; fails harmlessly if we already have a console.
        if unsafe { AllocConsole() } == FALSE {
            log::warn!(
                "no console for cloudflared's Ctrl-Break (AllocConsole: {}); at stop it is \
                 killed after its grace period instead",
                io::Error::last_os_error()
            );
        }
    }
    // Handlers run last-registered-first: this one comes after ctrlc's, so it sees every
    // event first and passes Ctrl-C and Ctrl-Break on to ctrlc.
    // SAFETY: `on_console_event` is a plain function that lives as long as the process.
    if unsafe { SetConsoleCtrlHandler(Some(on_console_event), TRUE) } == FALSE {
        return Err(format!(
            "cannot install the console handler: {}",
            io::Error::last_os_error()
        ));
    }
    let pid = std::process::id();
    let mut events = vec![create_event(&stop_event_name("Local", pid), false)
        .map_err(|e| format!("cannot create the stop event: {e}"))?];
    if as_service {
        match create_event(&stop_event_name("Global", pid), true) {
            Ok(event) => events.push(event),
            // `postflow stop` from another session cannot reach us; `sc.exe stop` still can.
            Err(e) => log::warn!("cannot create the global stop event: {e}"),
        }
    }
    // Handles are not Send; they are numbers the thread owns from here on.
    let events: Vec<usize> = events.into_iter().map(|h| h as usize).collect();
    std::thread::Builder::new()
        .name("stop-event".into())
        .spawn(move || wait_for_stop_event(&events))
        .map_err(|e| format!("cannot start the stop-event thread: {e}"))?;
    Ok(())
}

/// A manual-reset event, not set. `shared`: Administrators and SYSTEM may set it too, so an
/// elevated `postflow stop` stops a service running under any account.
fn create_event(name: &str, shared: bool) -> io::Result<HANDLE> {
    let name = wide(name);
    let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
    if shared {
        // Full access for SYSTEM, Administrators and the owner.
        let sddl = wide("D:(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)");
        // SAFETY: `sddl` is NUL-terminated and outlives the call; `descriptor` is written by
        // the call and freed below with LocalFree, as its documentation requires.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                ptr::null_mut(),
            )
        };
        if ok == FALSE {
            return Err(io::Error::last_os_error());
        }
    }
    let attributes = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor,
        bInheritHandle: FALSE,
    };
    let attributes_ptr: *const SECURITY_ATTRIBUTES = if shared { &attributes } else { ptr::null() };
    // SAFETY: `name` is NUL-terminated; `attributes` (and the descriptor it points to) live
    // across the call.
    let event = unsafe { CreateEventW(attributes_ptr, TRUE, FALSE, name.as_ptr()) };
    let created = if event.is_null() {
        Err(io::Error::last_os_error())
    } else {
        Ok(event)
    };
    if !descriptor.is_null() {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW above;
        // the event keeps its own copy of the security.
        unsafe { LocalFree(descriptor) };
    }
    created
}

/// The stop-event thread: waits for one of our events to be set, then asks for the stop.
fn wait_for_stop_event(events: &[usize]) {
    let handles: Vec<HANDLE> = events.iter().map(|&h| h as HANDLE).collect();
    // SAFETY: the handles are valid events that are never closed.
    let woke =
        unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), FALSE, INFINITE) };
    if woke == WAIT_FAILED {
        log::warn!(
            "waiting for the stop event failed ({}); `postflow stop` cannot reach this \
             instance, Ctrl-C can",
            io::Error::last_os_error()
        );
        return;
    }
    request(StopRequested::StopCommand);
}

/// Our console handler. For a closed window, logoff and shutdown, Windows ends the process as
/// soon as the handlers return: so request the stop and hold on until it is done (or almost
/// out of time; kill-on-close takes cloudflared down with us if it comes to that).
unsafe extern "system" fn on_console_event(event: u32) -> BOOL {
    let event = match event {
        CTRL_C_EVENT => ConsoleEvent::CtrlC,
        CTRL_BREAK_EVENT => ConsoleEvent::CtrlBreak,
        CTRL_CLOSE_EVENT => ConsoleEvent::Close,
        CTRL_LOGOFF_EVENT => ConsoleEvent::Logoff,
        CTRL_SHUTDOWN_EVENT => ConsoleEvent::Shutdown,
        _ => return FALSE,
    };
    match console_answer(event, AS_SERVICE.load(Ordering::Relaxed)) {
        ConsoleAnswer::PassOn => FALSE,
        ConsoleAnswer::Ignore => TRUE,
        ConsoleAnswer::StopAndWait => {
            request(StopRequested::ConsoleClosed);
            wait_finished(CONSOLE_CLOSE_WAIT);
            TRUE
        }
    }
}

/// Why `postflow stop` could not reach an instance.
#[derive(Debug)]
pub enum SignalError {
    /// Neither event exists: the process is gone, or it is a postflow without stop events.
    NoEvent,
    /// The event exists but we may not set it (a service's, from a prompt that is not
    /// elevated).
    Denied(io::Error),
}

/// Sets the stop event of the instance `pid`: the global one first (a service), then the
/// session's.
pub fn signal_stop(pid: u32) -> Result<(), SignalError> {
    let mut denied = None;
    for namespace in ["Global", "Local"] {
        let name = wide(&stop_event_name(namespace, pid));
        // SAFETY: `name` is NUL-terminated and outlives the call.
        let event = unsafe { OpenEventW(EVENT_MODIFY_STATE, FALSE, name.as_ptr()) };
        if event.is_null() {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(ERROR_FILE_NOT_FOUND as i32) {
                denied = Some(e);
            }
            continue;
        }
        // SAFETY: `event` was just opened with EVENT_MODIFY_STATE and is closed once, here.
        let set = unsafe { SetEvent(event) };
        let e = io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { CloseHandle(event) };
        if set == FALSE {
            denied = Some(e);
            continue;
        }
        return Ok(());
    }
    Err(denied.map_or(SignalError::NoEvent, SignalError::Denied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_event_name_is_the_one_the_harness_opens() {
        assert_eq!(stop_event_name("Local", 42), "Local\\postflow-stop-42");
        assert_eq!(stop_event_name("Global", 7), "Global\\postflow-stop-7");
    }

    #[test]
    fn setting_an_instance_s_event_wakes_it_and_a_missing_one_is_named() {
        let pid = std::process::id().wrapping_add(1_000_000);
        assert!(matches!(signal_stop(pid), Err(SignalError::NoEvent)));
        let event = create_event(&stop_event_name("Local", pid), false).unwrap();
        signal_stop(pid).unwrap();
        let handles = [event];
        // SAFETY: a valid event handle, closed right after.
        let woke = unsafe { WaitForMultipleObjects(1, handles.as_ptr(), FALSE, 0) };
        unsafe { CloseHandle(event) };
        assert_eq!(woke, 0, "the event is set");
    }
}
