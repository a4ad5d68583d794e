//! Globs for mount ACLs and the pull policy: `**` spans path segments, `*`
//! and `?` stay within one, `**/` may stand for no directory at all,
//! `dir/**` also matches `dir` itself, and every other character is itself
//! (`[`, `{` and `\` included: stored ACLs were written with those
//! meaning themselves, and a deny rule that changed meaning would fail
//! open). Each pattern is translated once into a regex (the `regex` crate
//! runs in time linear in the path; not globset, whose classes,
//! alternatives and escapes would change what stored patterns match) and
//! kept: a backtracking matcher took seconds on `*a*a*a*a*ab` (issue 20).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The longest pattern taken (patterns come from callers' creates).
pub const MAX_PATTERN: usize = 1024;

/// One compiled pattern.
#[derive(Debug)]
pub struct Glob {
    re: regex::Regex,
}

/// The regex (anchored) that matches what `pattern` does.
fn translate(pattern: &str) -> String {
    let mut out = String::from("^");
    let (body, dir_too) = match pattern.strip_suffix("/**") {
        Some(b) if !b.is_empty() => (b, true),
        _ => (pattern, false),
    };
    let mut rest = body;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**/") {
            out.push_str("(?:.*/)?");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("**") {
            out.push_str(".*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            out.push_str("[^/]*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('?') {
            out.push_str("[^/]");
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push_str(&regex::escape(c.encode_utf8(&mut [0u8; 4])));
            rest = &rest[c.len_utf8()..];
        }
    }
    if dir_too {
        // `dir/**`: `dir` itself, or anything under it.
        out.push_str("(?:/.*)?");
    }
    out.push('$');
    out
}

impl Glob {
    /// Compiles `pattern`; one longer than [`MAX_PATTERN`] is an error
    /// saying so.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.len() > MAX_PATTERN {
            return Err(format!("longer than {MAX_PATTERN} bytes"));
        }
        regex::RegexBuilder::new(&translate(pattern))
            // A name may hold a newline: `**` spans it as any character.
            .dot_matches_new_line(true)
            .size_limit(1 << 20)
            .build()
            .map(|re| Glob { re })
            .map_err(|e| e.to_string())
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.re.is_match(path)
    }
}

/// Compiled patterns, by their text. Bounded: past this many it starts
/// over (patterns come from sandboxes' configs, so there are few).
const CACHE_MAX: usize = 4096;

fn compiled(pattern: &str) -> Option<Arc<Glob>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<Glob>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(g) = cache.lock().unwrap().get(pattern) {
        return g.clone();
    }
    // Compiled outside the lock: other patterns' matches do not wait on it.
    let g = Glob::new(pattern).ok().map(Arc::new);
    let mut c = cache.lock().unwrap();
    if c.len() >= CACHE_MAX {
        c.clear();
    }
    c.insert(pattern.to_string(), g.clone());
    g
}

/// Whether `path` matches `pattern`. A malformed pattern matches nothing
/// (configs are checked with [`Glob::new`] before they are taken).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    compiled(pattern).is_some_and(|g| g.is_match(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("/workspace/**", "/workspace"));
        assert!(glob_match("/workspace/**", "/workspace/a/b.txt"));
        assert!(!glob_match("/workspace/**", "/workspaces/a"));
        assert!(glob_match("/w/*.txt", "/w/a.txt"));
        assert!(!glob_match("/w/*.txt", "/w/d/a.txt"));
        assert!(glob_match("/w/**/*.txt", "/w/a.txt"));
        assert!(glob_match("/w/**/*.txt", "/w/d/e/a.txt"));
        assert!(glob_match("/w/secret", "/w/secret"));
        assert!(!glob_match("/w/secret", "/w/secret2"));
        assert!(glob_match("/w/?", "/w/x"));
        assert!(!glob_match("/w/?", "/w/"));
        // Every other character is itself, as stored ACLs were written.
        assert!(glob_match("/w/{a,b}.txt", "/w/{a,b}.txt"));
        assert!(!glob_match("/w/{a,b}.txt", "/w/b.txt"));
        assert!(glob_match("/w/f[1", "/w/f[1"));
        assert!(glob_match("/w/[ab].txt", "/w/[ab].txt"));
        assert!(!glob_match("/w/[ab].txt", "/w/a.txt"));
        assert!(glob_match("/w/a\\b", "/w/a\\b"));
        assert!(glob_match("/w/.*", "/w/.*"));
        assert!(!glob_match("/w/.*", "/w/ab"));
        // `**` inside a segment spans segments, as it always did.
        assert!(glob_match("/w/s**", "/w/sx/y"));
        assert!(glob_match("/w/**/*.txt", "/w/a/b.txt"));
        assert!(glob_match(
            "docker.io/library/*",
            "docker.io/library/alpine"
        ));
        assert!(!glob_match("docker.io/library/*", "docker.io/library/a/b"));
        assert!(glob_match("**", "anything/at/all"));
        assert!(glob_match("/w/**", "/w/a\nb/c"));
        assert!(glob_match("/w/**/*.key", "/w/x\ny/a.key"));
    }

    #[test]
    fn an_overlong_pattern_is_refused_and_matches_nothing() {
        let long = format!("/w/{}", "a".repeat(MAX_PATTERN));
        assert!(Glob::new(&long).is_err());
        assert!(!glob_match(&long, &long));
    }

    /// Issue 20, defect 2: a backtracking matcher took 4 s on this with 160
    /// `a`s and over 30 s with six stars; with 4000 and twelve it would not
    /// end in a lifetime. The bound below is not a figure to meet (a linear
    /// match takes microseconds) but the line between done and hung.
    #[test]
    fn many_stars_do_not_backtrack() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let path = format!("/w/{}", "a".repeat(4000));
            for stars in 1..=12 {
                let pattern = format!("/w/{}b", "*a".repeat(stars));
                assert!(!glob_match(&pattern, &path), "{pattern}");
                let pattern = format!("/w/{}", "*a".repeat(stars));
                assert!(glob_match(&pattern, &path), "{pattern}");
            }
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("matching twelve stars against 4000 characters hung (backtracking)");
    }
}
