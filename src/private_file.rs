//! Files holding secrets (`tokens.json`, the part-URL sidecars): readable by their owner only,
//! from the instant they exist, and whether a file someone else wrote (`config.json`) is
//! readable by others.
//!
//! Unix: mode 0600 at creation. Windows: a protected DACL (no inherited entries) granting full
//! control to the current user, SYSTEM and Administrators only, given to `CreateFileW`, so the
//! file never exists with the folder's inherited ACL, which under `C:\ProgramData` lets every
//! user read. cloudflared protects its service token the same way
//! (`cmd/cloudflared/windows_service.go`).

// The Windows half calls Win32 functions std does not wrap (CreateFileW with security
// attributes, the process token, SDDL and DACL reading); each `unsafe` block says why it is
// sound.
#![cfg_attr(windows, allow(unsafe_code))]

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` atomically: a temp file in the same folder, created
/// owner-only, written and flushed, renamed over `path`, and the rename made durable. A reader
/// sees the old bytes or the new ones, never a mix, and a crash at any instant leaves one of
/// the two. `inspect` is called with the written file just before the rename, which keeps its
/// identity, size and mtime: what it reads is true of the file then at `path`. (Not after: a
/// handle renamed under it no longer knows its volume under Wine.)
pub fn write_atomic<T>(
    path: &Path,
    bytes: &[u8],
    inspect: impl FnOnce(&File) -> io::Result<T>,
) -> io::Result<T> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let (tmp, mut file) = create_temp(dir, &name)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        let seen = inspect(&file)?;
        // Replaces an existing file on every platform: std renames with POSIX semantics
        // where Windows offers them, else MoveFileExW with MOVEFILE_REPLACE_EXISTING.
        rename_replacing(&tmp, path)?;
        sync_rename(dir, &file)?;
        Ok(seen)
    })();
    if written.is_err() {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `std::fs::rename`, tried again for a moment on Windows when the target is busy: another
/// process that has it open without delete sharing (a virus scanner, a backup agent, an
/// editor showing it; Wine too, at times) makes the rename fail with "access denied" or a
/// sharing violation for as long as it holds it, usually milliseconds.
fn rename_replacing(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(windows)]
    {
        const ERROR_SHARING_VIOLATION: i32 = 32;
        let mut tries = 0;
        loop {
            match std::fs::rename(from, to) {
                Err(e)
                    if tries < 20
                        && (e.kind() == io::ErrorKind::PermissionDenied
                            || e.raw_os_error() == Some(ERROR_SHARING_VIOLATION)) =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }
    #[cfg(not(windows))]
    std::fs::rename(from, to)
}

/// Opens `path` to append to it, creating it owner-only if it is not there.
pub fn open_append(path: &Path) -> io::Result<File> {
    create(path, Create::Append)
}

/// A new temp file beside the target, `.<name>.<pid>.<n>.tmp`: the pid keeps processes apart,
/// the counter threads; a leftover of a crashed process with the same pid is stepped over.
fn create_temp(dir: &Path, name: &str) -> io::Result<(std::path::PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match create(&tmp, Create::New) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

#[derive(Clone, Copy)]
enum Create {
    /// A file that must not exist yet, for reading and writing.
    New,
    /// Appending; created if missing.
    Append,
}

#[cfg(unix)]
fn create(path: &Path, how: Create) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    match how {
        Create::New => options.read(true).write(true).create_new(true),
        Create::Append => options.append(true).create(true),
    };
    options.mode(0o600).open(path)
}

/// Makes a rename durable: on unix by syncing the folder that holds the new name.
#[cfg(unix)]
fn sync_rename(dir: &Path, _file: &File) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes a rename durable. Windows cannot flush a folder; flushing the renamed file's own
/// handle makes NTFS commit its journal, which holds the rename.
#[cfg(windows)]
fn sync_rename(_dir: &Path, file: &File) -> io::Result<()> {
    file.sync_all()
}

/// Whether users other than the owner (and the system's own accounts) may read the file.
/// False when that cannot be told (the file is gone, or its ACL cannot be read).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

/// Whether users other than the owner (and the system's own accounts) may read the file.
/// False when that cannot be told (the file is gone, or its ACL cannot be read).
#[cfg(windows)]
pub fn readable_by_others(path: &Path) -> bool {
    win::dacl(path).is_ok_and(|dacl| grants_read_to_others(&dacl.allowed))
}

/// The command that makes a file readable by its owner only, for a warning to quote.
pub fn how_to_restrict(path: &Path) -> String {
    if cfg!(windows) {
        // SIDs, not names: "Administrators" is spelled otherwise on a German Windows. SYSTEM
        // keeps access, so postflow running as a service can still read the file.
        format!(
            "icacls \"{}\" /inheritance:r /grant:r \"%USERNAME%:F\" *S-1-5-18:F *S-1-5-32-544:F",
            path.display()
        )
    } else {
        format!("chmod 600 {}", path.display())
    }
}

/// The DACL of an owner-only file, in SDDL: protected (`P`: nothing inherited from the
/// folder), full control (`FA`) for the user, SYSTEM (`SY`) and Administrators (`BA`).
#[cfg(any(windows, test))]
fn owner_only_sddl(user_sid: &str) -> String {
    format!("D:P(A;;FA;;;{user_sid})(A;;FA;;;SY)(A;;FA;;;BA)")
}

/// One entry of a DACL that allows access: to whom (a SID in its `S-1-…` form) and what.
#[cfg(any(windows, test))]
#[derive(Clone, Debug, PartialEq, Eq)]
struct Allowed {
    sid: String,
    mask: u32,
}

/// Whether allow entries let someone other than the owner read: one granting read to Everyone,
/// Users, Authenticated Users or Guests. (Deny entries are not weighed: a warning too many is
/// better than a secret left open.)
#[cfg(any(windows, test))]
fn grants_read_to_others(allowed: &[Allowed]) -> bool {
    const OTHERS: &[&str] = &[
        "S-1-1-0",      // Everyone
        "S-1-5-32-545", // Users
        "S-1-5-11",     // Authenticated Users
        "S-1-5-32-546", // Guests
    ];
    // FILE_READ_DATA (also in FILE_GENERIC_READ and FILE_ALL_ACCESS), GENERIC_ALL, GENERIC_READ.
    const READ: u32 = 0x0000_0001 | 0x1000_0000 | 0x8000_0000;
    allowed
        .iter()
        .any(|a| a.mask & READ != 0 && OTHERS.contains(&a.sid.as_str()))
}

#[cfg(windows)]
fn create(path: &Path, how: Create) -> io::Result<File> {
    win::create(path, how)
}

#[cfg(windows)]
mod win {
    use std::ffi::c_void;
    use std::fs::File;
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::os::windows::io::FromRawHandle;
    use std::path::Path;
    use std::ptr::null_mut;

    use windows_sys::core::PWSTR;
    use windows_sys::Win32::Foundation::{
        CloseHandle, LocalFree, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
        GetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{
        AclSizeInformation, GetAce, GetAclInformation, GetSecurityDescriptorControl,
        GetTokenInformation, TokenUser, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_SIZE_INFORMATION,
        DACL_SECURITY_INFORMATION, INHERIT_ONLY_ACE, PSECURITY_DESCRIPTOR, PSID,
        SECURITY_ATTRIBUTES, SE_DACL_PROTECTED, TOKEN_QUERY, TOKEN_USER,
    };
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, FILE_GENERIC_WRITE, FILE_READ_ATTRIBUTES,
        FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_WRITE_DATA, OPEN_ALWAYS,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    use super::{owner_only_sddl, Allowed, Create};

    /// winnt.h's ACCESS_ALLOWED_ACE_TYPE (windows-sys has it behind a feature of its own).
    const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;

    /// Memory Windows allocated for us with LocalAlloc, freed on drop.
    struct Local(*mut c_void);

    impl Drop for Local {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the pointer came from a Win32 call documented to allocate with
                // LocalAlloc, and is freed once, here.
                unsafe { LocalFree(self.0) };
            }
        }
    }

    fn wide(path: &Path) -> Vec<u16> {
        path.as_os_str().encode_wide().chain(Some(0)).collect()
    }

    fn check(ok: i32) -> io::Result<()> {
        if ok != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Creates (or, appending, opens) the file with the owner-only DACL. The DACL only
    /// applies when the call creates the file; an existing file keeps its own.
    pub(super) fn create(path: &Path, how: Create) -> io::Result<File> {
        let sddl = owner_only_sddl(&current_user_sid()?);
        let sddl: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
        let mut descriptor = Local(null_mut());
        // SAFETY: `sddl` is a NUL-terminated UTF-16 string alive for the call; the descriptor
        // is written to `descriptor.0`, which `Local` frees with LocalFree as documented.
        check(unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor.0,
                null_mut(),
            )
        })?;
        let attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor.0,
            bInheritHandle: 0,
        };
        let (access, disposition) = match how {
            Create::New => (GENERIC_READ | GENERIC_WRITE, CREATE_NEW),
            // As std's `append(true)`: write access without FILE_WRITE_DATA, so every write
            // lands at the end of the file.
            Create::Append => (
                (FILE_GENERIC_WRITE & !FILE_WRITE_DATA) | FILE_READ_ATTRIBUTES,
                OPEN_ALWAYS,
            ),
        };
        let name = wide(path);
        // SAFETY: `name` is NUL-terminated and alive for the call, `attributes` and the
        // descriptor it points to outlive the call; the result is checked before use.
        let handle: HANDLE = unsafe {
            CreateFileW(
                name.as_ptr(),
                access,
                // As std opens files: others may read, write, rename or delete meanwhile.
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                &attributes,
                disposition,
                FILE_ATTRIBUTE_NORMAL,
                null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a valid file handle we own; File closes it once.
        Ok(unsafe { File::from_raw_handle(handle) })
    }

    /// The SID of the user this process runs as, `S-1-5-21-…`.
    pub(super) fn current_user_sid() -> io::Result<String> {
        let mut token: HANDLE = null_mut();
        // SAFETY: the pseudo-handle of the current process needs no closing; `token` receives
        // a handle we close below.
        check(unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) })?;
        let sid = (|| {
            let mut len = 0u32;
            // SAFETY: a size query: no buffer, the needed length is written to `len`. It
            // "fails" with ERROR_INSUFFICIENT_BUFFER by design, so only `len` is looked at.
            unsafe { GetTokenInformation(token, TokenUser, null_mut(), 0, &mut len) };
            // u64 elements: TOKEN_USER holds pointers and needs their alignment.
            let mut buf = vec![0u64; (len as usize).div_ceil(8)];
            // SAFETY: `buf` holds at least `len` bytes, suitably aligned, alive for the call.
            check(unsafe {
                GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), len, &mut len)
            })?;
            // SAFETY: on success the buffer starts with a TOKEN_USER whose SID points into
            // the same buffer, which lives until the end of this closure.
            let user = unsafe { &*(buf.as_ptr() as *const TOKEN_USER) };
            sid_string(user.User.Sid)
        })();
        // SAFETY: `token` is the handle OpenProcessToken gave us, closed once.
        unsafe { CloseHandle(token) };
        sid
    }

    /// `S-1-…` for a SID.
    fn sid_string(sid: PSID) -> io::Result<String> {
        let mut text: PWSTR = null_mut();
        // SAFETY: `sid` points to a valid SID for the call; the string is allocated by the
        // call and freed by `Local`.
        check(unsafe { ConvertSidToStringSidW(sid, &mut text) })?;
        let text = Local(text.cast());
        let ptr = text.0 as *const u16;
        // SAFETY: a NUL-terminated UTF-16 string, alive until `text` drops.
        let units = unsafe {
            let len = (0..).take_while(|&i| *ptr.add(i) != 0).count();
            std::slice::from_raw_parts(ptr, len)
        };
        Ok(String::from_utf16_lossy(units))
    }

    /// A file's DACL as far as access goes: whether it is protected from inheritance, and
    /// its allow entries that apply to the file itself.
    pub(super) struct Dacl {
        /// Read by the test that checks what `create` made.
        #[cfg_attr(not(test), allow(dead_code))]
        pub(super) protected: bool,
        pub(super) allowed: Vec<Allowed>,
    }

    pub(super) fn dacl(path: &Path) -> io::Result<Dacl> {
        let name = wide(path);
        let mut acl: *mut ACL = null_mut();
        let mut descriptor = Local(null_mut());
        // SAFETY: `name` is NUL-terminated; `acl` points into the descriptor, which the call
        // allocates and `Local` frees after the last use of `acl` below.
        let err = unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                &mut acl,
                null_mut(),
                &mut descriptor.0 as *mut *mut c_void as *mut PSECURITY_DESCRIPTOR,
            )
        };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err as i32));
        }
        let (mut control, mut revision) = (0u16, 0u32);
        // SAFETY: the descriptor is the valid one returned above.
        check(unsafe { GetSecurityDescriptorControl(descriptor.0, &mut control, &mut revision) })?;
        let protected = control & SE_DACL_PROTECTED != 0;
        if acl.is_null() {
            // A NULL DACL grants everyone everything.
            return Ok(Dacl {
                protected,
                allowed: vec![Allowed {
                    sid: "S-1-1-0".into(),
                    mask: GENERIC_READ,
                }],
            });
        }
        let mut size = ACL_SIZE_INFORMATION::default();
        // SAFETY: `acl` is valid while `descriptor` lives; `size` is the documented struct
        // for AclSizeInformation, with its size passed.
        check(unsafe {
            GetAclInformation(
                acl,
                (&mut size as *mut ACL_SIZE_INFORMATION).cast(),
                std::mem::size_of::<ACL_SIZE_INFORMATION>() as u32,
                AclSizeInformation,
            )
        })?;
        let mut allowed = Vec::new();
        for i in 0..size.AceCount {
            let mut ace: *mut c_void = null_mut();
            // SAFETY: `i` is below the ACE count; `ace` points into the ACL.
            check(unsafe { GetAce(acl, i, &mut ace) })?;
            // SAFETY: every ACE starts with an ACE_HEADER.
            let header = unsafe { *(ace as *const ACE_HEADER) };
            if header.AceType != ACCESS_ALLOWED_ACE_TYPE
                || u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0
            {
                continue;
            }
            // SAFETY: the header says it is an ACCESS_ALLOWED_ACE, whose SID starts at
            // `SidStart` and lies within the ACE.
            let (mask, sid) = unsafe {
                let a = ace as *const ACCESS_ALLOWED_ACE;
                ((*a).Mask, std::ptr::addr_of!((*a).SidStart) as PSID)
            };
            allowed.push(Allowed {
                sid: sid_string(sid)?,
                mask,
            });
        }
        Ok(Dacl { protected, allowed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[(&str, u32)]) -> Vec<Allowed> {
        entries
            .iter()
            .map(|&(sid, mask)| Allowed {
                sid: sid.into(),
                mask,
            })
            .collect()
    }

    const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
    const FILE_GENERIC_READ: u32 = 0x0012_0089;
    const GENERIC_READ: u32 = 0x8000_0000;
    const GENERIC_ALL: u32 = 0x1000_0000;
    /// FILE_WRITE_DATA | FILE_APPEND_DATA: may write, not read.
    const WRITE_ONLY: u32 = 0x0000_0006;
    const USER: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";

    #[test]
    fn the_owner_only_acl_names_the_user_system_and_administrators_and_nothing_inherited() {
        assert_eq!(
            owner_only_sddl(USER),
            format!("D:P(A;;FA;;;{USER})(A;;FA;;;SY)(A;;FA;;;BA)")
        );
    }

    #[test]
    fn a_file_only_its_owner_system_and_administrators_read_is_not_readable_by_others() {
        let owner_only = allowed(&[
            (USER, FILE_ALL_ACCESS),
            ("S-1-5-18", FILE_ALL_ACCESS),
            ("S-1-5-32-544", FILE_ALL_ACCESS),
        ]);
        assert!(!grants_read_to_others(&owner_only));
        assert!(!grants_read_to_others(&[]));
    }

    #[test]
    fn read_for_everyone_users_authenticated_users_or_guests_is_readable_by_others() {
        for sid in ["S-1-1-0", "S-1-5-32-545", "S-1-5-11", "S-1-5-32-546"] {
            for mask in [
                FILE_GENERIC_READ,
                FILE_ALL_ACCESS,
                GENERIC_READ,
                GENERIC_ALL,
                1,
            ] {
                let entries = allowed(&[(USER, FILE_ALL_ACCESS), (sid, mask)]);
                assert!(grants_read_to_others(&entries), "{sid} {mask:#x}");
            }
        }
    }

    #[test]
    fn others_who_may_only_write_or_are_not_in_the_list_do_not_count() {
        assert!(!grants_read_to_others(&allowed(&[(
            "S-1-5-32-545",
            WRITE_ONLY
        )])));
        assert!(!grants_read_to_others(&allowed(&[(
            "S-1-5-21-1-2-3-1002",
            FILE_GENERIC_READ
        )])));
    }

    #[test]
    fn a_secret_replaced_atomically_is_owner_only_and_leaves_no_temp_file() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("tokens.json");
        write_atomic(&path, b"old", |_| Ok(())).unwrap();
        write_atomic(&path, b"new", |_| Ok(())).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"new",
            "renamed over the old"
        );
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        assert!(!readable_by_others(&path));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn appending_creates_the_file_owner_only_and_adds_at_the_end() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("7.done");
        for line in ["1\n", "2\n"] {
            let mut f = open_append(&path).unwrap();
            f.write_all(line.as_bytes()).unwrap();
            f.sync_data().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        assert!(!readable_by_others(&path));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_with_group_or_other_bits_is_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("config.json");
        std::fs::write(&path, b"{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&path));
        assert!(how_to_restrict(&path).starts_with("chmod 600 "));
    }

    /// The DACL read back from disk: protected, exactly the user, SYSTEM and Administrators.
    #[cfg(windows)]
    #[test]
    fn on_windows_a_secret_file_carries_a_protected_dacl_for_exactly_three_accounts() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("tokens.json");
        write_atomic(&path, b"secret", |_| Ok(())).unwrap();
        let user = win::current_user_sid().unwrap();
        let dacl = win::dacl(&path).unwrap();
        let mut sids: Vec<&str> = dacl.allowed.iter().map(|a| a.sid.as_str()).collect();
        sids.sort();
        assert!(!readable_by_others(&path));
        assert!(sids.contains(&user.as_str()), "{sids:?}");
        if under_wine() {
            // Wine keeps no DACL: it stores the file's unix mode (0600 here) and reads back a
            // DACL made from it (the owner and SYSTEM, never protected). Only real Windows can
            // show what `create` asked for.
            eprintln!(
                "under Wine: DACL read back as {sids:?}, protected {}",
                dacl.protected
            );
            return;
        }
        let mut expected = vec![user.as_str(), "S-1-5-18", "S-1-5-32-544"];
        expected.sort();
        assert!(dacl.protected, "nothing inherited from the folder");
        assert_eq!(sids, expected);
    }

    /// Wine's ntdll exports `wine_get_version`; Windows' does not.
    #[cfg(windows)]
    fn under_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
        let ntdll: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
        // SAFETY: NUL-terminated names alive for the calls; ntdll is loaded in every process,
        // and the module handle is not freed (GetModuleHandleW adds no reference).
        unsafe {
            let module = GetModuleHandleW(ntdll.as_ptr());
            !module.is_null()
                && GetProcAddress(module, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }
}
