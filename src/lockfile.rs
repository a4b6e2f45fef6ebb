//! An exclusive lock on a file that leaves the file's bytes readable by everyone else, so the
//! holder can write its pid there for a second instance to read.
//!
//! Unix: `flock` (std's `File::try_lock`), advisory: reads are never blocked. Windows:
//! `LockFileEx` locks are mandatory for the bytes they cover, and std's `try_lock` covers the
//! whole file, so a second instance could not read the pid. The lock there covers one byte far
//! past any data (offset `u64::MAX - 1`): the holder is still exclusive, the pid stays readable.
//! On both, the OS drops the lock when the handle closes or the process dies, however it dies.

// `LockFileEx` is a Win32 call std does not wrap; see `try_lock` below for why it is sound.
#![cfg_attr(windows, allow(unsafe_code))]

use std::fs::File;
use std::io;

/// Takes the lock without waiting: `Ok(true)` when taken, `Ok(false)` when another handle
/// (in this process or another) holds it.
#[cfg(not(windows))]
pub fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Where the Windows lock sits: past any data a lock file will ever hold.
#[cfg(windows)]
const LOCKED_BYTE: u64 = u64::MAX - 1;

/// Takes the lock without waiting: `Ok(true)` when taken, `Ok(false)` when another handle
/// (in this process or another) holds it.
#[cfg(windows)]
pub fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::ERROR_LOCK_VIOLATION;
    use windows_sys::Win32::Storage::FileSystem::{
        LockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;

    let mut at = OVERLAPPED::default();
    at.Anonymous.Anonymous.Offset = LOCKED_BYTE as u32;
    at.Anonymous.Anonymous.OffsetHigh = (LOCKED_BYTE >> 32) as u32;
    // SAFETY: the handle is a live file handle borrowed from `file` for the call; `at` lives
    // on this stack frame for the whole call, which is synchronous: std opens files without
    // FILE_FLAG_OVERLAPPED, and LOCKFILE_FAIL_IMMEDIATELY returns at once either way.
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut at,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_second_handle_finds_the_lock_taken_and_can_still_read_the_file() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("lock");
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let mut holder = open();
        assert!(
            try_lock(&holder).unwrap(),
            "the first handle takes the lock"
        );
        writeln!(holder, "4242").unwrap();

        let mut other = open();
        assert!(!try_lock(&other).unwrap(), "the second handle does not");
        let mut text = String::new();
        other.read_to_string(&mut text).unwrap();
        assert_eq!(text.trim(), "4242", "the holder's pid stays readable");

        drop(holder);
        assert!(
            try_lock(&other).unwrap(),
            "closing the holder frees the lock"
        );
    }
}
