//! The Windows room of [`crate::process`]: a child in a process group of its own, inside a job
//! object that the kernel empties when postflow ends; Ctrl-Break to ask it to stop;
//! TerminateProcess to kill it; OpenProcess to ask whether a pid is alive.
//!
//! Why each `unsafe` is sound: every call takes integers, a handle we own (opened here and
//! closed by an `OwnedHandle`, or the `Child`'s own process handle, alive for the call), or a
//! pointer to a local struct whose size we pass along; none keeps a pointer after it returns.
#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Console::{GenerateConsoleCtrlEvent, CTRL_BREAK_EVENT};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    OpenProcess, OpenThread, ResumeThread, TerminateProcess, WaitForSingleObject,
    CREATE_NEW_PROCESS_GROUP, CREATE_SUSPENDED, PROCESS_QUERY_LIMITED_INFORMATION,
    PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, THREAD_SUSPEND_RESUME,
};

/// Starts `cmd` in a new process group (so Ctrl-Break can be sent to it alone, and a Ctrl-C
/// at our console does not reach it) inside postflow's job object.
///
/// No moment where the child runs outside the job: it is created suspended, assigned to the
/// job, and only then resumed. Its pid cannot be reused meanwhile, since the `Child` holds
/// its process handle, so the threads the snapshot lists for that pid are its own (a process
/// created suspended has exactly one, its first).
pub(super) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED);
    let mut child = cmd.spawn()?;
    match job() {
        Ok(job) => {
            // SAFETY: two handles we own, alive for the call.
            let assigned = unsafe {
                AssignProcessToJobObject(job.as_raw_handle(), child.as_raw_handle()) != 0
            };
            if !assigned {
                warn_outside_job(cmd, &io::Error::last_os_error());
            }
        }
        Err(e) => warn_outside_job(cmd, e),
    }
    if let Err(e) = resume(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::new(
            e.kind(),
            format!("it was started suspended and could not be resumed: {e}"),
        ));
    }
    Ok(child)
}

/// The job every child joins: created on first use and never closed, so that it is closed
/// only when postflow's process ends (exit, crash, `kill -9`, TerminateProcess), and then
/// the kernel kills whatever is still in it.
fn job() -> Result<&'static OwnedHandle, &'static io::Error> {
    static JOB: OnceLock<io::Result<OwnedHandle>> = OnceLock::new();
    JOB.get_or_init(create_job).as_ref()
}

fn create_job() -> io::Result<OwnedHandle> {
    // SAFETY: null attributes and name: an unnamed job, not inherited by children.
    let raw = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a handle CreateJobObjectW just gave us, owned by nobody else.
    let job = unsafe { OwnedHandle::from_raw_handle(raw) };
    // SAFETY: JOBOBJECT_EXTENDED_LIMIT_INFORMATION is plain data; all zeroes is "no limits".
    let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: a pointer to a local of the size passed, read during the call only.
    let set = unsafe {
        SetInformationJobObject(
            job.as_raw_handle(),
            JobObjectExtendedLimitInformation,
            std::ptr::from_ref(&limits).cast(),
            std::mem::size_of_val(&limits) as u32,
        )
    };
    if set == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(job)
}

/// Said once per postflow: the child runs anyway, but may outlive a postflow that is killed.
fn warn_outside_job(cmd: &Command, e: &io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "cannot put {} in a job object that ends it with postflow ({e}): it runs, but if \
             postflow is killed it may keep running",
            cmd.get_program().to_string_lossy()
        );
    }
}

/// Resumes every thread of the (suspended) process `pid`.
fn resume(pid: u32) -> io::Result<()> {
    // SAFETY: integers only; the result is checked before use.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snapshot == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a handle CreateToolhelp32Snapshot just gave us.
    let snapshot = unsafe { OwnedHandle::from_raw_handle(snapshot) };
    // SAFETY: THREADENTRY32 is plain data; dwSize is set as the API requires.
    let mut entry: THREADENTRY32 = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<THREADENTRY32>() as u32;
    let mut resumed = 0;
    // SAFETY: our snapshot handle and a pointer to a local entry of the size it says.
    let mut more = unsafe { Thread32First(snapshot.as_raw_handle(), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            resume_thread(entry.th32ThreadID)?;
            resumed += 1;
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snapshot.as_raw_handle(), &mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no thread of pid {pid} in the snapshot"),
        ));
    }
    Ok(())
}

fn resume_thread(thread_id: u32) -> io::Result<()> {
    // SAFETY: integers only; the result is checked before use.
    let raw = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, thread_id) };
    let thread = owned(raw)?;
    // SAFETY: a thread handle we own, opened with THREAD_SUSPEND_RESUME.
    if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the process group `pid` to stop with Ctrl-Break, which cloudflared (a Go program)
/// takes as an interrupt and answers with its graceful shutdown. It only reaches a group on
/// the console we are attached to: without a console (a service, or under Wine) it fails,
/// and the error says so.
pub(super) fn ctrl_break(pid: u32) -> io::Result<()> {
    // Group 0 would mean every process on our console, postflow included.
    if pid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid 0 is not a process group of its own",
        ));
    }
    // SAFETY: integers only.
    if unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TerminateProcess; false if `pid` cannot be opened for it (gone, or not ours).
pub(super) fn terminate_process(pid: u32) -> bool {
    // SAFETY: integers only; the result is checked before use.
    let Ok(process) = owned(unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) }) else {
        return false;
    };
    // SAFETY: a process handle we own, opened with PROCESS_TERMINATE. Exit code 1, as std's
    // `Child::kill`.
    unsafe { TerminateProcess(process.as_raw_handle(), 1) != 0 }
}

/// True while `pid` is a process that has not exited. One we may not open (another user's)
/// exists, so it counts as running.
pub(super) fn is_running(pid: u32) -> bool {
    let access = PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE;
    // SAFETY: integers only; the result is checked before use.
    match owned(unsafe { OpenProcess(access, 0, pid) }) {
        // An exited process stays signalled while someone holds a handle to it: a zero wait
        // tells "exited" from "running" without the ambiguity of exit code 259 (STILL_ACTIVE).
        // SAFETY: a process handle we own, opened with SYNCHRONIZE.
        Ok(process) => unsafe { WaitForSingleObject(process.as_raw_handle(), 0) == WAIT_TIMEOUT },
        Err(e) => e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32),
    }
}

/// Takes ownership of a handle an Open* call returned, or its error when it returned null.
fn owned(raw: HANDLE) -> io::Result<OwnedHandle> {
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle from an Open* call, owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(raw) })
}
