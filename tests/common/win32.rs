//! The harness's process calls on Windows, where there is no `kill` command and no /proc.
//!
//! Unsafe calls, each sound for the same reasons: the Win32 functions are called with handles
//! this module opened and checked for null (or that a live `OwnedHandle` owns), with
//! NUL-terminated UTF-16 strings that outlive the call, and every handle opened here is closed
//! exactly once, by `OwnedHandle`'s drop (the one security descriptor, by `LocalFree`).
#![allow(unsafe_code)]

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{LocalFree, WAIT_TIMEOUT};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    SetFileSecurityW, DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};
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

/// What mode 0600 is on unix: `path` readable and writable by its owner only, through a
/// protected DACL (nothing inherited from the folder) granting full control to the owner,
/// SYSTEM and Administrators, as postflow gives its own secrets.
pub fn owner_only(path: &std::path::Path) {
    use std::os::windows::ffi::OsStrExt;
    let sddl: Vec<u16> = "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;BA)"
        .encode_utf16()
        .chain([0])
        .collect();
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated; `descriptor` receives a LocalAlloc'ed descriptor.
    let parsed = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            std::ptr::null_mut(),
        )
    };
    assert!(
        parsed != 0,
        "cannot parse the owner-only DACL: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `wide` is NUL-terminated and `descriptor` a valid descriptor until freed below.
    let set = unsafe {
        SetFileSecurityW(
            wide.as_ptr(),
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            descriptor,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
    unsafe { LocalFree(descriptor) };
    assert!(
        set != 0,
        "cannot make {} readable by its owner only: {error}",
        path.display()
    );
}
