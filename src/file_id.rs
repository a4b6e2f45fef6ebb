//! What identifies a file whatever its name: a rename keeps it, a replace (a new file renamed
//! over the old name) changes it. Unix: device and inode. Windows: the volume serial number and
//! the file index (`GetFileInformationByHandle`), which std keeps behind an unstable feature.

// GetFileInformationByHandle is a Win32 call; the `unsafe` block says why it is sound.
#![cfg_attr(windows, allow(unsafe_code))]

use std::fs::File;
use std::io;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    volume: u64,
    index: u64,
}

impl FileId {
    /// The identity of an open file.
    #[cfg(unix)]
    pub fn of(file: &File) -> io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(FileId {
            volume: meta.dev(),
            index: meta.ino(),
        })
    }

    /// The identity of an open file.
    #[cfg(windows)]
    pub fn of(file: &File) -> io::Result<FileId> {
        use std::os::windows::io::AsRawHandle;
        use windows_sys::Win32::Storage::FileSystem::{
            GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION,
        };
        let mut info = BY_HANDLE_FILE_INFORMATION::default();
        // SAFETY: the handle is borrowed from a live `File` for the call; `info` is the
        // documented out-struct, owned by this frame.
        let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileId {
            volume: u64::from(info.dwVolumeSerialNumber),
            index: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_keeps_the_identity_and_a_replace_changes_it() {
        let dir = crate::testutil::TempDir::new();
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        std::fs::write(&a, b"one").unwrap();
        let first = FileId::of(&File::open(&a).unwrap()).unwrap();
        std::fs::rename(&a, &b).unwrap();
        assert_eq!(FileId::of(&File::open(&b).unwrap()).unwrap(), first);

        std::fs::write(&a, b"two").unwrap();
        std::fs::rename(&a, &b).unwrap();
        assert_ne!(FileId::of(&File::open(&b).unwrap()).unwrap(), first);
    }
}
