//! Free space on the file system that holds a path: `statvfs(3)` on Unix,
//! `GetDiskFreeSpaceExW` on Windows (std has neither).
#![allow(unsafe_code)]

use std::io;
use std::path::Path;

/// Bytes an unprivileged writer can still use on the file system that holds `path`.
#[cfg(unix)]
pub fn available(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string for the call's duration, and `st`
    // points to writable memory the size of a `statvfs`, which the call fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let st = unsafe { st.assume_init() };
    // f_bavail: blocks free to non-root (root may also have the reserved ones), in f_frsize.
    // The casts are needed where the fields are narrower (macOS's f_bavail is 32 bits).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Bytes the caller can still use on the volume that holds `path` (quotas counted).
#[cfg(windows)]
pub fn available(path: &Path) -> io::Result<u64> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut free_to_caller = 0u64;
    // SAFETY: `wide` is NUL-terminated and outlives the call; the one out pointer is a valid
    // u64, and the two totals we do not need may be null as the API documents.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut free_to_caller,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(free_to_caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_dir_has_some_space_and_a_missing_one_is_an_error() {
        let dir = std::env::temp_dir();
        assert!(available(&dir).unwrap() > 0, "{}", dir.display());
        assert!(available(&dir.join("no such dir here")).is_err());
    }
}
