//! Globs for mount ACLs and the pull policy: `**` spans path segments, `*`
//! and `?` stay within one, `dir/**` also matches `dir` itself, and `[ab]`
//! and `{a,b}` are classes and alternatives. Each pattern is compiled once
//! (globset, into a regex that runs in time linear in the path) and kept:
//! a file operation matches the same few patterns again and again, and a
//! backtracking matcher took seconds on `*a*a*a*a*ab` (issue 20).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One compiled pattern.
#[derive(Debug)]
pub struct Glob {
    full: globset::GlobMatcher,
    /// For `dir/**`: `dir` itself.
    base: Option<globset::GlobMatcher>,
}

fn build(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

impl Glob {
    /// Compiles `pattern`; a malformed one (an unclosed `[` or `{`) is an
    /// error saying what is wrong.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let base = match pattern.strip_suffix("/**") {
            Some(b) if !b.is_empty() => Some(build(b)?),
            _ => None,
        };
        Ok(Glob {
            full: build(pattern)?,
            base,
        })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.full.is_match(path) || self.base.as_ref().is_some_and(|b| b.is_match(path))
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
        assert!(glob_match("/w/{a,b}.txt", "/w/b.txt"));
        assert!(glob_match("/w/[ab].txt", "/w/a.txt"));
        assert!(!glob_match("/w/[ab].txt", "/w/c.txt"));
        assert!(glob_match(
            "docker.io/library/*",
            "docker.io/library/alpine"
        ));
        assert!(!glob_match("docker.io/library/*", "docker.io/library/a/b"));
        assert!(glob_match("**", "anything/at/all"));
    }

    #[test]
    fn malformed_patterns_are_named_and_match_nothing() {
        assert!(Glob::new("/w/[ab").is_err());
        assert!(Glob::new("/w/{a,b").is_err());
        assert!(!glob_match("/w/[ab", "/w/[ab"));
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
