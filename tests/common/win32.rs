//! The harness's process calls on Windows, where there is no `kill` command and no /proc.
//!
//! Unsafe calls, each sound for the same reasons: the Win32 functions are called with handles
//! this module opened and checked for null (or that a live `OwnedHandle` owns), with a
//! NUL-terminated UTF-16 name that outlives the call, and every handle opened here is closed
//! exactly once, by `OwnedHandle`'s drop.
#![allow(unsafe_code)]

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::WAIT_TIMEOUT;
use windows_sys::Win32::System::Threading::{
    OpenEventW, OpenProcess, SetEvent, TerminateProcess, WaitForSingleObject, EVENT_MODIFY_STATE,
    PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
};

/// The exit code a killed process gets, as `kill -9` gives 137 in a shell.
const KILLED: u32 = 137;

/// Asks postflow `pid` to stop as a service stop or a console Ctrl-C would: it sets the named
/// event `Local\postflow-stop-<pid>` that postflow creates at start and waits on. A postflow
/// just started may not have created it yet, so it is tried for a while.
pub fn ask_to_stop(pid: u32) {
    let name = format!("Local\\postflow-stop-{pid}");
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    let limit = Duration::from_secs(15);
    let start = Instant::now();
    let event = loop {
        // SAFETY: `wide` is NUL-terminated and lives until the call returns.
        let raw = unsafe { OpenEventW(EVENT_MODIFY_STATE, 0, wide.as_ptr()) };
        if !raw.is_null() {
            // SAFETY: a non-null handle OpenEventW just returned, owned by nothing else.
            break unsafe { OwnedHandle::from_raw_handle(raw) };
        }
        let error = std::io::Error::last_os_error();
        assert!(
            start.elapsed() < limit && is_alive(pid),
            "cannot ask postflow (pid {pid}) to stop: no event {name} after {:?} ({error}); \
             postflow on Windows creates it at start and stops when it is set",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: `event` is an open event handle with EVENT_MODIFY_STATE access.
    let set = unsafe { SetEvent(event.as_raw_handle()) };
    assert!(
        set != 0,
        "SetEvent({name}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// `kill -9` for Windows: TerminateProcess. Panics when `pid` runs and cannot be killed.
pub fn terminate_pid(pid: u32) {
    // SAFETY: plain call; a null result is checked below.
    let raw = unsafe { OpenProcess(PROCESS_TERMINATE | PROCESS_SYNCHRONIZE, 0, pid) };
    assert!(
        !raw.is_null(),
        "cannot open process {pid} to kill it: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a non-null handle OpenProcess just returned, owned by nothing else.
    let process = unsafe { OwnedHandle::from_raw_handle(raw) };
    assert!(
        terminate(&process),
        "TerminateProcess({pid}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Kills the process behind `process` unless it has exited; true when it is gone or killed.
pub fn terminate(process: &OwnedHandle) -> bool {
    // SAFETY: `process` is an open process handle (its owner keeps it open during the calls).
    unsafe {
        WaitForSingleObject(process.as_raw_handle(), 0) != WAIT_TIMEOUT
            || TerminateProcess(process.as_raw_handle(), KILLED) != 0
    }
}

/// True while `pid` runs (its process object is not signalled).
pub fn is_alive(pid: u32) -> bool {
    // SAFETY: plain call; a null result (no such process) is checked below.
    let raw = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
    if raw.is_null() {
        return false;
    }
    // SAFETY: a non-null handle OpenProcess just returned, owned by nothing else.
    let process = unsafe { OwnedHandle::from_raw_handle(raw) };
    // SAFETY: `process` is open for SYNCHRONIZE.
    unsafe { WaitForSingleObject(process.as_raw_handle(), 0) == WAIT_TIMEOUT }
}
