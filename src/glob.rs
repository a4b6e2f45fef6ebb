//! File-name globs for `watch.include` / `watch.exclude`.
//!
//! The syntax is the small one people know from shells: `*` (any run of characters, possibly
//! empty), `?` (exactly one character) and `[...]` (one character of a set, with ranges such as
//! `[0-9]` and negation with `[!...]` or `[^...]`). Matching is case-insensitive because cameras
//! and some NLEs write `SHOT.MOV` while people configure `*.mov`. Globs apply to a single name,
//! never to a path, so `/` has no special meaning.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

impl Glob {
    /// Parses a glob. The error says what is wrong, for a config message.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty glob".to_string());
        }
        let chars: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // Consecutive stars mean the same as one.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i)
                        .ok_or_else(|| format!("unclosed `[` in glob {pattern:?}"))?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Char(c));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            source: pattern.to_string(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole `name` matches (case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        match_tokens(&self.tokens, &lowered(name))
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

fn lowered(name: &str) -> Vec<char> {
    name.chars().flat_map(char::to_lowercase).collect()
}

/// Parses `[...]` starting at `start` (the `[`); returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        // A `]` right after the opening bracket is a literal, as in shells.
        if c == ']' && !first {
            return Some((Token::Class { negated, items }, i + 1));
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            items.push((c.min(end), c.max(end)));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
}

/// Iterative wildcard matching with single-star backtracking: linear in practice, no recursion.
fn match_tokens(tokens: &[Token], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(token) if single_matches(token, name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sn)) => {
                t = st + 1;
                n = sn + 1;
                star = Some((st, sn + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Star)
}

fn single_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Char(x) => *x == c,
        Token::Any => true,
        Token::Star => false,
        Token::Class { negated, items } => {
            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

/// A list of globs; a name matches the set when any glob matches.
#[derive(Clone, Debug, Default)]
pub struct GlobSet {
    globs: Vec<Glob>,
}

impl GlobSet {
    pub fn new(globs: Vec<Glob>) -> GlobSet {
        GlobSet { globs }
    }

    pub fn matches(&self, name: &str) -> bool {
        // Lower-cased once for the whole set: a rescan asks this of every file name.
        let name = lowered(name);
        self.globs.iter().any(|g| match_tokens(&g.tokens, &name))
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.globs.iter().map(Glob::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).unwrap().matches(n)
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        assert!(m("*.mov", "shot.mov"));
        assert!(m("*.mov", ".mov"));
        assert!(!m("*.mov", "shot.mov.part"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**x", "abx"));
    }

    #[test]
    fn matching_ignores_case_because_cameras_shout() {
        assert!(m("*.mov", "SHOT.MOV"));
        assert!(m("*.MOV", "shot.mov"));
        assert!(m("thumbs.db", "Thumbs.db"));
    }

    #[test]
    fn question_mark_is_exactly_one_char() {
        assert!(m("v?.mov", "v1.mov"));
        assert!(!m("v?.mov", "v.mov"));
        assert!(!m("v?.mov", "v12.mov"));
        assert!(m("é?", "éa"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(m("v[0-9].mov", "v7.mov"));
        assert!(!m("v[0-9].mov", "vx.mov"));
        assert!(m("v[!0-9].mov", "vx.mov"));
        assert!(m("v[^0-9].mov", "vx.mov"));
        assert!(!m("v[!0-9].mov", "v1.mov"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("[A-Z]x", "qx"), "ranges are case-insensitive too");
    }

    #[test]
    fn default_excludes_catch_temp_and_hidden_files() {
        let set = GlobSet::new(
            [".*", "._*", "~*", "*.tmp", "*.part"]
                .iter()
                .map(|p| Glob::new(p).unwrap())
                .collect(),
        );
        assert!(set.matches(".DS_Store"));
        assert!(set.matches("._x.mov"));
        assert!(set.matches("x.mov.part"));
        assert!(set.matches("~lock.mov"));
        assert!(!set.matches("SHOT.MOV"));
    }

    #[test]
    fn bad_globs_are_refused_with_a_reason() {
        assert!(Glob::new("[abc").unwrap_err().contains("unclosed"));
        assert!(Glob::new("").is_err());
        assert!(Glob::new("[!").is_err());
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let name = "a".repeat(10_000);
        assert!(!m("*a*a*a*a*a*b", &name));
    }
}
