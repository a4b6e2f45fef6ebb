//! Where a file goes in Frame.io: its destination folder path under the project root.
//!
//! Two ways, chosen by config:
//! - `layout.pattern` + `layout.folders`: the file name is matched against a template such as
//!   `{seq}_UNDLM_{shot}_v{version}.{ext}` and the folder path is rendered from another, such as
//!   `{seq}/UNDLM_{shot}`.
//! - otherwise the file's sub-folders under `watch.root` are mirrored.
//!
//! With `layout.stack_versions`, the pattern also says which files are versions of one item
//! ([`Layout::version`]): same folder, every capture but `{version}` equal.
//!
//! Template rules: `{name}` captures one or more characters, never `/`; when several splits are
//! possible the shortest capture wins, left to right (so `{shot}_v{version}` on `A_B_v1` gives
//! `shot = A_B` only because `_v` first appears there). Literal text matches case-sensitively.
//! Two placeholders side by side (`{a}{b}`) are refused: nothing could tell where one ends.
//! The engine is pure and small on purpose; no regex.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

/// A parsed template: literal text and `{placeholders}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            Some(c) => {
                                return Err(format!(
                                    "placeholder names use letters, digits and _, found {c:?} in {source:?}"
                                ))
                            }
                            None => return Err(format!("unclosed `{{` in {source:?}")),
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("empty placeholder `{{}}` in {source:?}"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(parts.last(), Some(Part::Var(_))) {
                        return Err(format!(
                            "placeholders `{{…}}{{{name}}}` touch in {source:?}: put literal text between them"
                        ));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => return Err(format!("`}}` without `{{` in {source:?}")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if parts.is_empty() {
            return Err("empty template".to_string());
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholder names, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Matches a whole file name; returns the captures, or None.
    pub fn capture(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        if capture_from(&self.parts, name, &mut out) {
            Some(out)
        } else {
            None
        }
    }

    /// Renders with the given values; a placeholder without a value renders as itself.
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => match values.get(v) {
                    Some(val) => out.push_str(val),
                    None => {
                        out.push('{');
                        out.push_str(v);
                        out.push('}');
                    }
                },
            }
        }
        out
    }
}

/// Backtracking matcher: each variable takes the shortest capture that lets the rest match.
fn capture_from(parts: &[Part], s: &str, out: &mut BTreeMap<String, String>) -> bool {
    match parts.split_first() {
        None => s.is_empty(),
        Some((Part::Lit(l), rest)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|tail| capture_from(rest, tail, out)),
        Some((Part::Var(v), rest)) => {
            let next_lit = match rest.first() {
                None => {
                    // The last placeholder takes everything that is left (at least one char).
                    if s.is_empty() || s.contains('/') {
                        return false;
                    }
                    out.insert(v.clone(), s.to_string());
                    return true;
                }
                Some(Part::Lit(l)) => l.as_str(),
                Some(Part::Var(_)) => unreachable!("parse() refuses adjacent placeholders"),
            };
            // Try each occurrence of the next literal after at least one char, shortest first.
            let mut from = s.chars().next().map_or(s.len(), char::len_utf8);
            while let Some(pos) = s.get(from..).and_then(|t| t.find(next_lit)) {
                let cut = from + pos;
                let value = &s[..cut];
                if value.contains('/') {
                    return false;
                }
                if capture_from(rest, &s[cut..], out) {
                    out.insert(v.clone(), value.to_string());
                    return true;
                }
                from = cut + s[cut..].chars().next().map_or(1, char::len_utf8);
            }
            false
        }
    }
}

/// Checks a folder path for Frame.io: `/`-separated, no empty part, no `.` or `..`.
/// Returns the normalized parts.
pub fn folder_parts(path: &str) -> Result<Vec<String>, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|part| match part.trim() {
            "" => Err(format!("empty folder name in {path:?}")),
            "." | ".." => Err(format!("folder name {part:?} is not allowed in {path:?}")),
            p if p.len() != part.len() => Err(format!(
                "folder name {part:?} in {path:?} starts or ends with spaces"
            )),
            p => Ok(p.to_string()),
        })
        .collect()
}

/// How file names map to Frame.io folders, built from validated config.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `frameio.folder`, split into parts.
    base: Vec<String>,
    pattern: Option<Template>,
    folders: Option<Template>,
    mirror_unmatched: bool,
    stack_versions: bool,
}

/// The placeholder that numbers versions.
pub const VERSION: &str = "version";

/// Which item a file is a version of, and which version (`layout.stack_versions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Every capture but `{version}` (`{ext}` included), as `key=value` joined by `/` (a
    /// capture never holds a `/`). Files of one folder with the same item are versions of it.
    pub item: String,
    /// `{version}` as a number, so that `v9` < `v10`.
    pub number: u64,
    /// As people say it: `v004`.
    pub label: String,
}

/// The outcome of mapping one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Upload into this folder path under the project root ("" = the root itself).
    Folder(String),
    /// Not uploaded, with the reason a person reads on the page.
    Skip(String),
}

impl Layout {
    pub fn new(
        base: &str,
        pattern: Option<Template>,
        folders: Option<Template>,
        mirror_unmatched: bool,
    ) -> Result<Layout, String> {
        Ok(Layout {
            base: folder_parts(base)?,
            pattern,
            folders,
            mirror_unmatched,
            stack_versions: false,
        })
    }

    /// The same layout with version stacking on or off (config checks that `on` needs a
    /// pattern with `{version}`).
    pub fn stacking(self, on: bool) -> Layout {
        Layout {
            stack_versions: on,
            ..self
        }
    }

    /// The version a file name is, when stacking is on and the name matches the pattern
    /// with a whole number as `{version}` (digits only: `004`, not `4a`).
    pub fn version(&self, name: &str) -> Option<Version> {
        if !self.stack_versions {
            return None;
        }
        let mut captures = self.pattern.as_ref()?.capture(name)?;
        let raw = captures.remove(VERSION)?;
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number = raw.parse().ok()?;
        let item: Vec<String> = captures.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(Version {
            item: item.join("/"),
            number,
            label: format!("v{raw}"),
        })
    }

    /// Maps a path relative to the watch root (`/`-separated) to its destination.
    pub fn destination(&self, rel_path: &str) -> Destination {
        let (dirs, name) = match rel_path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", rel_path),
        };
        let mirrored = || self.join(dirs);
        let Some(pattern) = &self.pattern else {
            return mirrored();
        };
        match pattern.capture(name) {
            Some(values) => match &self.folders {
                Some(folders) => self.join(&folders.render(&values)),
                None => mirrored(),
            },
            None if self.mirror_unmatched => mirrored(),
            None => Destination::Skip(format!(
                "name does not match layout.pattern {:?}",
                pattern.as_str()
            )),
        }
    }

    fn join(&self, rel: &str) -> Destination {
        match folder_parts(rel) {
            Ok(parts) => {
                let all: Vec<&str> = self
                    .base
                    .iter()
                    .chain(parts.iter())
                    .map(String::as_str)
                    .collect();
                Destination::Folder(all.join("/"))
            }
            Err(e) => Destination::Skip(format!("bad folder path: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn caps(pattern: &str, name: &str) -> Option<Vec<(String, String)>> {
        t(pattern).capture(name).map(|m| m.into_iter().collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = list
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_studio_naming_convention_is_captured() {
        assert_eq!(
            caps(
                "{seq}_UNDLM_{shot}_v{version}.{ext}",
                "SQ01_UNDLM_00412_v003.mov"
            ),
            Some(pairs(&[
                ("seq", "SQ01"),
                ("shot", "00412"),
                ("version", "003"),
                ("ext", "mov")
            ]))
        );
    }

    #[test]
    fn shortest_capture_wins_but_backtracks_when_needed() {
        assert_eq!(
            caps("{a}_{b}", "x_y_z"),
            Some(pairs(&[("a", "x"), ("b", "y_z")]))
        );
        // The first `.mov` would leave ".mov" unmatched: backtrack to the second.
        assert_eq!(
            caps("{name}.mov", "x.mov.mov"),
            Some(pairs(&[("name", "x.mov")]))
        );
        assert_eq!(
            caps("{a}.{ext}", "clip.final.mov"),
            Some(pairs(&[("a", "clip"), ("ext", "final.mov")]))
        );
    }

    #[test]
    fn placeholders_need_at_least_one_char() {
        assert_eq!(caps("{a}_v{b}", "_v1"), None);
        assert_eq!(caps("{a}_v{b}", "x_v"), None);
        assert_eq!(caps("shot_{a}", "shot_"), None);
    }

    #[test]
    fn literals_must_match_exactly() {
        assert_eq!(caps("{seq}_UNDLM_{shot}", "SQ01_undlm_1"), None);
        assert_eq!(caps("A{x}", "B1"), None);
        assert_eq!(caps("{x}.mov", "a.mp4"), None);
    }

    #[test]
    fn multibyte_names_do_not_split_characters() {
        assert_eq!(
            caps("{a}_{b}", "été_ça"),
            Some(pairs(&[("a", "été"), ("b", "ça")]))
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("{a}{b}").unwrap_err().contains("touch"));
        assert!(Template::parse("{a").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}").is_err());
        assert!(Template::parse("{}").unwrap_err().contains("empty"));
        assert!(Template::parse("{a-b}").is_err());
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn rendering_fills_placeholders() {
        let values: BTreeMap<String, String> = [("seq", "SQ01"), ("shot", "00412")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(t("{seq}/UNDLM_{shot}").render(&values), "SQ01/UNDLM_00412");
    }

    #[test]
    fn folder_paths_are_checked() {
        assert_eq!(folder_parts("").unwrap(), Vec::<String>::new());
        assert_eq!(folder_parts("/a/b/").unwrap(), vec!["a", "b"]);
        assert!(folder_parts("a//b").is_err());
        assert!(folder_parts("a/../b").is_err());
        assert!(folder_parts("./a").is_err());
        assert!(folder_parts("a/ b").is_err());
    }

    #[test]
    fn pattern_maps_to_folders_under_the_base() {
        let layout = Layout::new(
            "Dailies",
            Some(t("{seq}_UNDLM_{shot}_v{version}.{ext}")),
            Some(t("{seq}/UNDLM_{shot}")),
            false,
        )
        .unwrap();
        assert_eq!(
            layout.destination("renders/SQ01_UNDLM_00412_v003.mov"),
            Destination::Folder("Dailies/SQ01/UNDLM_00412".into())
        );
        match layout.destination("notes.mov") {
            Destination::Skip(reason) => assert!(reason.contains("layout.pattern")),
            other => panic!("expected skip, got {other:?}"),
        }
    }

    #[test]
    fn without_a_pattern_subfolders_are_mirrored() {
        let layout = Layout::new("", None, None, false).unwrap();
        assert_eq!(
            layout.destination("a/b/c.mov"),
            Destination::Folder("a/b".into())
        );
        assert_eq!(layout.destination("c.mov"), Destination::Folder("".into()));
    }

    #[test]
    fn unmatched_names_can_be_mirrored_instead_of_skipped() {
        let layout = Layout::new("In", Some(t("{a}_v{b}.mov")), Some(t("{a}")), true).unwrap();
        assert_eq!(
            layout.destination("x/odd.mov"),
            Destination::Folder("In/x".into())
        );
        assert_eq!(
            layout.destination("x/s1_v2.mov"),
            Destination::Folder("In/s1".into())
        );
    }

    #[test]
    fn versions_of_one_item_share_every_capture_but_the_version() {
        let layout = Layout::new(
            "",
            Some(t("{seq}_UNDLM_{shot}_v{version}.{ext}")),
            Some(t("{seq}/UNDLM_{shot}")),
            false,
        )
        .unwrap();
        assert_eq!(layout.version("SQ01_UNDLM_00412_v003.mov"), None, "off");
        let layout = layout.stacking(true);
        let v = |name: &str| layout.version(name);
        let v3 = v("SQ01_UNDLM_00412_v003.mov").unwrap();
        assert_eq!((v3.number, v3.label.as_str()), (3, "v003"));
        assert_eq!(v3.item, "ext=mov/seq=SQ01/shot=00412");
        assert_eq!(v("SQ01_UNDLM_00412_v010.mov").unwrap().item, v3.item);
        assert_ne!(
            v("SQ01_UNDLM_00412_v004.mp4").unwrap().item,
            v3.item,
            "ext counts"
        );
        assert_ne!(v("SQ01_UNDLM_00413_v004.mov").unwrap().item, v3.item);
        // Numbers, not text: v9 < v10.
        assert!(
            v("SQ01_UNDLM_00412_v9.mov").unwrap().number
                < v("SQ01_UNDLM_00412_v10.mov").unwrap().number
        );
        assert_eq!(v("SQ01_UNDLM_00412_v4a.mov"), None, "not a number");
        assert_eq!(v("notes.pdf"), None, "no match");
    }

    #[test]
    fn a_capture_that_renders_a_bad_folder_is_skipped_not_uploaded() {
        let layout = Layout::new("", Some(t("{a}_v{b}")), Some(t("{a}")), false).unwrap();
        match layout.destination(".._v1") {
            Destination::Skip(reason) => assert!(reason.contains("not allowed")),
            other => panic!("expected skip, got {other:?}"),
        }
    }
}
