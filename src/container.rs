//! Is this QuickTime / MP4 file finished? A top-level atom check that reads headers only.
//!
//! A QuickTime or ISO-BMFF file is a sequence of top-level atoms (boxes), each starting with a
//! 32-bit big-endian size and a 4-character type. Size 1 means a 64-bit size follows the type;
//! size 0 means "to the end of the file" (allowed for the last atom only, and what some
//! writers leave in `mdat` until they finish). A finished file is one whose atoms cover it
//! exactly and include `moov` (the index, which most writers put at the end, last).
//!
//! We seek from header to header and read 16 bytes at most per atom: checking a 200 GB render
//! costs a handful of reads, never a pass over the data.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// More top-level atoms than any real file has; a file of millions of tiny atoms is garbage and
/// must not cost millions of seeks.
const MAX_ATOMS: usize = 10_000;

/// Whether `name` is a container we check (`.mov`, `.mp4`, `.m4v`, any case).
pub fn is_quicktime(name: &str) -> bool {
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext,
        None => return false,
    };
    ["mov", "mp4", "m4v"]
        .iter()
        .any(|e| ext.eq_ignore_ascii_case(e))
}

/// Opens `path` and checks its top-level atoms; `Err` is the reason a person reads.
pub fn check_file(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot open: {e}"))?
        .len();
    check_atoms(&mut file, len)
}

/// Walks the top-level atoms of a `len`-byte file; `Ok` when they cover it exactly and one of
/// them is `moov`.
pub fn check_atoms<F: Read + Seek>(file: &mut F, len: u64) -> Result<(), String> {
    let mut offset = 0u64;
    let mut has_moov = false;
    let mut atoms = 0usize;
    while offset < len {
        atoms += 1;
        if atoms > MAX_ATOMS {
            return Err(format!(
                "not a QuickTime file: more than {MAX_ATOMS} top-level atoms"
            ));
        }
        let left = len - offset;
        if left < 8 {
            return Err(format!(
                "incomplete QuickTime: {left} stray bytes after the last atom"
            ));
        }
        let mut header = [0u8; 8];
        read_at(file, offset, &mut header)?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        if !kind
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == 0xA9)
        {
            return Err(format!(
                "not a QuickTime file: bad atom type at byte {offset}"
            ));
        }
        let name = String::from_utf8_lossy(&kind).into_owned();
        let size = match size32 {
            0 => left,
            1 => {
                if left < 16 {
                    return Err(format!(
                        "incomplete QuickTime: atom '{name}' header cut at the end of the file"
                    ));
                }
                let mut large = [0u8; 8];
                read_at(file, offset + 8, &mut large)?;
                let size = u64::from_be_bytes(large);
                if size < 16 {
                    return Err(format!(
                        "not a QuickTime file: atom '{name}' has a 64-bit size of {size}"
                    ));
                }
                size
            }
            n if n < 8 => {
                return Err(format!(
                    "not a QuickTime file: atom '{name}' has a size of {n}"
                ))
            }
            n => u64::from(n),
        };
        if size > left {
            return Err(format!(
                "incomplete QuickTime: atom '{name}' runs past the end of the file"
            ));
        }
        has_moov |= &kind == b"moov";
        offset += size;
    }
    if has_moov {
        Ok(())
    } else {
        Err("incomplete QuickTime: no moov atom".into())
    }
}

fn read_at<F: Read + Seek>(file: &mut F, offset: u64, buf: &mut [u8]) -> Result<(), String> {
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(buf))
        .map_err(|e: io::Error| format!("cannot read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An atom with a 32-bit size and `body` bytes of zeros.
    fn atom(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = ((8 + body) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.resize(8 + body, 0);
        v
    }

    /// An atom with a 64-bit size.
    fn atom64(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = 1u32.to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(&((16 + body) as u64).to_be_bytes());
        v.resize(16 + body, 0);
        v
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        check_atoms(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_finished_movie_with_moov_at_the_end_passes() {
        let f = cat(&[
            atom(b"ftyp", 12),
            atom(b"wide", 0),
            atom(b"mdat", 1000),
            atom(b"moov", 200),
        ]);
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn a_fast_start_movie_with_moov_first_passes() {
        let f = cat(&[atom(b"ftyp", 12), atom(b"moov", 200), atom(b"mdat", 1000)]);
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn sixty_four_bit_sizes_are_followed() {
        let f = cat(&[atom(b"ftyp", 12), atom64(b"mdat", 5000), atom(b"moov", 50)]);
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn size_zero_runs_to_the_end_of_the_file() {
        // A writer still busy: mdat "to the end", no moov after it.
        let mut mdat = 0u32.to_be_bytes().to_vec();
        mdat.extend_from_slice(b"mdat");
        mdat.resize(3000, 7);
        let f = cat(&[atom(b"ftyp", 12), mdat.clone()]);
        assert_eq!(check(&f), Err("incomplete QuickTime: no moov atom".into()));
        // A last moov atom of size 0 is complete.
        let mut moov = 0u32.to_be_bytes().to_vec();
        moov.extend_from_slice(b"moov");
        moov.resize(64, 0);
        let f = cat(&[atom(b"ftyp", 12), atom(b"mdat", 100), moov]);
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn a_half_written_movie_waits_for_its_moov() {
        let f = cat(&[atom(b"ftyp", 12), atom(b"mdat", 1000)]);
        assert_eq!(check(&f), Err("incomplete QuickTime: no moov atom".into()));
    }

    #[test]
    fn a_truncated_movie_is_incomplete() {
        let f = cat(&[atom(b"ftyp", 12), atom(b"mdat", 1000), atom(b"moov", 200)]);
        let cut = &f[..f.len() - 10];
        assert_eq!(
            check(cut),
            Err("incomplete QuickTime: atom 'moov' runs past the end of the file".into())
        );
        let big = cat(&[atom(b"ftyp", 12), atom64(b"mdat", 5000)]);
        assert!(check(&big[..100]).unwrap_err().contains("'mdat' runs past"));
        // A 64-bit header itself cut short.
        assert!(check(&big[..30]).unwrap_err().contains("header cut"));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_refused() {
        let mut f = cat(&[atom(b"ftyp", 12), atom(b"moov", 20)]);
        f.extend_from_slice(&[0, 0, 0]);
        assert!(check(&f).unwrap_err().contains("3 stray bytes"));
        let junk = vec![0xFFu8; 64];
        assert!(check(&junk)
            .unwrap_err()
            .starts_with("not a QuickTime file"));
        let mut tiny = 4u32.to_be_bytes().to_vec();
        tiny.extend_from_slice(b"free");
        assert!(check(&tiny).unwrap_err().contains("size of 4"));
    }

    #[test]
    fn extensions_are_matched_case_insensitively() {
        assert!(is_quicktime("A001.MOV"));
        assert!(is_quicktime("x.m4v"));
        assert!(is_quicktime("x.Mp4"));
        assert!(!is_quicktime("x.mxf"));
        assert!(!is_quicktime("mov"));
    }
}
