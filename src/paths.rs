//! Paths as people read them.
//!
//! On Windows `std::fs::canonicalize` returns verbatim paths: `\\?\C:\Volumes\x.mov`, or
//! `\\?\UNC\server\share\x.mov` for a share. They name the file exactly but are not what
//! anyone typed, and many programs refuse them. [`simplified`] gives back `C:\Volumes\x.mov`
//! and `\\server\share\x.mov` whenever the short form names the same file. It is not always
//! so: without `\\?\`, Windows strips trailing dots and spaces, takes `CON` or `nul.txt` for a
//! device, limits a path to 259 characters and reads `/` as a separator, so such paths keep
//! their prefix (the rules of the `dunce` crate, which we do not depend on because it leaves
//! `\\?\UNC\` paths alone and its checks only compile on Windows, where they cannot be tested
//! here).
//!
//! Canonical paths on unix start with `/`, so [`simplified`] never changes them. Comparisons
//! (is this file inside `watch.root`?) stay on the canonical forms; only what is shown or
//! handed on is simplified. Frame.io folder paths are not file paths: they always use `/`
//! (see `layout`).

use std::path::{Path, PathBuf};

/// The path without a verbatim `\\?\` prefix when that names the same file; else unchanged.
pub fn simplified(path: &Path) -> PathBuf {
    match path.to_str().and_then(simplified_str) {
        Some(short) => PathBuf::from(short),
        None => path.to_path_buf(),
    }
}

/// The text of a verbatim path in its short form, or None when it has none (not verbatim, or
/// the short form would mean something else).
fn simplified_str(path: &str) -> Option<String> {
    let rest = path.strip_prefix(r"\\?\")?;
    let (short, names) = if let Some(unc) = rest
        .strip_prefix(r"UNC\")
        .or_else(|| rest.strip_prefix(r"unc\"))
    {
        // `\\?\UNC\server\share\x` is `\\server\share\x`; server and share must be names.
        let mut parts = unc.splitn(3, '\\');
        let (server, share) = (parts.next()?, parts.next()?);
        if !is_plain_name(server) || !is_plain_name(share) {
            return None;
        }
        (format!(r"\\{unc}"), parts.next().unwrap_or(""))
    } else {
        // `\\?\C:\x` is `C:\x`; `\\?\C:` alone would become "the current folder of drive C".
        let bytes = rest.as_bytes();
        if bytes.len() < 3 || !bytes[0].is_ascii_alphabetic() || &bytes[1..3] != b":\\" {
            return None;
        }
        (rest.to_string(), &rest[3..])
    };
    // One trailing `\` (a drive or share root, or a folder) is fine; an empty name elsewhere
    // is not.
    let names = names.strip_suffix('\\').unwrap_or(names);
    if !names.is_empty() && !names.split('\\').all(is_plain_name) {
        return None;
    }
    // MAX_PATH is 260 UTF-16 units with the terminating NUL.
    if short.encode_utf16().count() >= 260 {
        return None;
    }
    Some(short)
}

/// A file or folder name that means the same with or without `\\?\`.
fn is_plain_name(name: &str) -> bool {
    const FORBIDDEN: &[char] = &['<', '>', ':', '"', '/', '\\', '|', '?', '*'];
    !name.is_empty()
        && name.encode_utf16().count() <= 255
        && !name.chars().any(|c| c < ' ' || FORBIDDEN.contains(&c))
        // Also rules out `.` and `..`, which a verbatim path takes literally.
        && !name.ends_with(['.', ' '])
        && !is_device_name(name)
}

/// `CON`, `nul.txt`, `COM1 .log`…: outside `\\?\`, Windows opens the device instead.
fn is_device_name(name: &str) -> bool {
    const DEVICES: &[&str] = &[
        "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "COM1", "COM2", "COM3", "COM4", "COM5",
        "COM6", "COM7", "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT1", "LPT2", "LPT3", "LPT4",
        "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³",
    ];
    // The device is the part before the first dot, trailing spaces ignored: `con .txt`.
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    DEVICES.iter().any(|d| d.eq_ignore_ascii_case(stem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(p: &str) -> Option<String> {
        simplified_str(p)
    }

    #[test]
    fn a_drive_path_loses_its_verbatim_prefix() {
        assert_eq!(
            short(r"\\?\E:\Volumes\show\4_OUT\SQ07\a.mov").as_deref(),
            Some(r"E:\Volumes\show\4_OUT\SQ07\a.mov")
        );
        assert_eq!(short(r"\\?\c:\").as_deref(), Some(r"c:\"), "a drive root");
        assert_eq!(short(r"\\?\C:\pf\inbox\").as_deref(), Some(r"C:\pf\inbox\"));
        assert_eq!(
            short(r"\\?\C:\Shots\été 😀.mov").as_deref(),
            Some(r"C:\Shots\été 😀.mov")
        );
    }

    #[test]
    fn a_share_path_becomes_a_plain_unc_path() {
        assert_eq!(
            short(r"\\?\UNC\nas\show\4_OUT\a.mov").as_deref(),
            Some(r"\\nas\show\4_OUT\a.mov")
        );
        assert_eq!(short(r"\\?\UNC\nas\show").as_deref(), Some(r"\\nas\show"));
        assert_eq!(short(r"\\?\UNC\nas\show\").as_deref(), Some(r"\\nas\show\"));
        assert_eq!(short(r"\\?\UNC\nas"), None, "a server without a share");
        assert_eq!(short(r"\\?\UNC\\show\a"), None, "an empty server name");
    }

    #[test]
    fn paths_whose_short_form_means_something_else_keep_the_prefix() {
        for p in [
            r"\\?\C:\shots\CON",
            r"\\?\C:\shots\nul.txt",
            r"\\?\C:\shots\com1 .mov\a",
            r"\\?\C:\shots\LPT²",
            r"\\?\C:\shots\trailing dot.",
            r"\\?\C:\shots\trailing space \a.mov",
            r"\\?\C:\shots\.\a.mov",
            r"\\?\C:\shots\..\a.mov",
            r"\\?\C:\shots\\a.mov",
            r"\\?\C:\a/b.mov",
            r"\\?\C:\what?.mov",
            "\\\\?\\C:\\tab\there",
            r"\\?\C:",
            r"\\?\C:relative",
            r"\\?\CC:\x",
            r"\\?\GLOBALROOT\Device\HarddiskVolume1\x",
            r"\\?\Volume{0b7e4f4e-0000-0000-0000-100000000000}\x",
        ] {
            assert_eq!(short(p), None, "{p}");
        }
    }

    #[test]
    fn names_that_only_look_like_devices_are_fine() {
        for name in [
            "CONSOLE", "COM0", "COM10", ".CON", "not.CON", " CON", "CON。",
        ] {
            assert!(is_plain_name(name), "{name}");
        }
    }

    #[test]
    fn a_path_too_long_for_windows_without_the_prefix_keeps_it() {
        let name = "a".repeat(200);
        let fits = format!(r"\\?\C:\{name}");
        assert!(short(&fits).is_some());
        assert_eq!(short(&format!(r"\\?\C:\{name}\{name}")), None);
        assert_eq!(
            short(&format!(r"\\?\C:\{}", "b".repeat(256))),
            None,
            "a name over 255"
        );
    }

    #[test]
    fn paths_that_are_not_verbatim_are_left_alone() {
        for p in [
            r"C:\pf\a.mov",
            r"\\nas\show\a.mov",
            "/private/var/folders/x",
            r"\\.\C:\x",
        ] {
            assert_eq!(short(p), None, "{p}");
            assert_eq!(simplified(Path::new(p)), Path::new(p));
        }
        assert_eq!(
            simplified(Path::new(r"\\?\C:\pf\a.mov")),
            Path::new(r"C:\pf\a.mov")
        );
    }
}
