//! Mount ACLs: which access a path of a mount gets.
//!
//! A mount's rules are globs ([`glob`]) with an access each; the rule with
//! the longest pattern that matches a path decides (the first listed among
//! equally long ones), and a path no rule matches is denied. The engine
//! judges the file API with this; the agent judges every process of the
//! sandbox with it, on the mounts it guards (FUSE). One crate, so that the
//! two never disagree.

pub mod glob;

pub use glob::glob_match;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Rw,
    Ro,
    Deny,
}

impl Access {
    pub fn allows(self, write: bool) -> bool {
        match self {
            Access::Rw => true,
            Access::Ro => !write,
            Access::Deny => false,
        }
    }
}

/// The access `rules` (pattern, access) give `path`: the longest matching
/// pattern wins; none denies.
pub fn judge<'a>(rules: impl IntoIterator<Item = (&'a str, Access)>, path: &str) -> Access {
    let mut best: Option<(usize, Access)> = None;
    for (pattern, access) in rules {
        if best.is_some_and(|(len, _)| pattern.len() <= len) {
            continue;
        }
        if glob_match(pattern, path) {
            best = Some((pattern.len(), access));
        }
    }
    best.map_or(Access::Deny, |(_, a)| a)
}

/// Whether `path` lies at or under `dir` (both absolute, normalised).
pub fn path_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// A mount's rules, compiled once: what a filesystem that asks on every
/// access holds.
#[derive(Debug)]
pub struct Acl {
    /// Longest pattern first (stable: the first listed of equal lengths).
    rules: Vec<(String, glob::Glob, Access)>,
}

impl Acl {
    /// Compiles `rules`; a bad pattern is an error naming its index.
    pub fn new(rules: &[(String, Access)]) -> Result<Acl, (usize, String)> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, (p, a)) in rules.iter().enumerate() {
            let g = glob::Glob::new(p).map_err(|e| (i, e))?;
            compiled.push((p.clone(), g, *a));
        }
        compiled.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        Ok(Acl { rules: compiled })
    }

    /// Every path of the mount readable and writable.
    pub fn open(mount: &str) -> Acl {
        let all = format!("{}/**", mount.trim_end_matches('/'));
        Acl::new(&[(all, Access::Rw)]).expect("a literal pattern compiles")
    }

    pub fn access(&self, path: &str) -> Access {
        self.rules
            .iter()
            .find(|(_, g, _)| g.is_match(path))
            .map_or(Access::Deny, |(_, _, a)| *a)
    }

    /// The access every path strictly below `dir` gets, when the rules
    /// cannot tell them apart (no rule reaches into `dir` but `A/**` ones
    /// with `dir` at or under `A`); `None` when some might differ. What
    /// a directory's rename needs: moving `dir` moves every path below
    /// it, and their accesses must not change by it.
    pub fn uniform_below(&self, dir: &str) -> Option<Access> {
        let dir = dir.trim_end_matches('/');
        let below = format!("{dir}/");
        let mut best: Option<Access> = None;
        for (p, _, a) in &self.rules {
            let is_glob = |s: &str| s.contains(['*', '?']);
            if let Some(base) = p.strip_suffix("/**") {
                if !is_glob(base) && path_under(dir, base) {
                    // Matches `dir` and all below alike; the longest such
                    // rule (the first met) decides for all of them.
                    best.get_or_insert(*a);
                    continue;
                }
            }
            let lit = match p.find(['*', '?']) {
                Some(i) => &p[..i],
                None => {
                    // Matches one path only.
                    if p.len() > below.len() && p.starts_with(&below) {
                        return None;
                    }
                    continue;
                }
            };
            // Without `**` a pattern matches paths of as many segments as
            // it has; those below `dir` have more than `dir`.
            if !p.contains("**") && p.matches('/').count() <= dir.matches('/').count() {
                continue;
            }
            if lit.starts_with(&below) || below.starts_with(lit) {
                return None;
            }
        }
        Some(best.unwrap_or(Access::Deny))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rules: &[(&str, Access)]) -> Acl {
        Acl::new(
            &rules
                .iter()
                .map(|(p, a)| (p.to_string(), *a))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn the_longest_pattern_decides_and_none_denies() {
        use Access::*;
        let rules = [
            ("/w/**", Rw),
            ("/w/ro/**", Ro),
            ("/w/ro/out/**", Rw),
            ("/w/**/*.key", Deny),
        ];
        let a = acl(&rules);
        for (path, want) in [
            ("/w", Rw),
            ("/w/x", Rw),
            ("/w/ro", Ro),
            ("/w/ro/x", Ro),
            ("/w/ro/out/y", Rw),
            ("/w/d/a.key", Deny),
            ("/elsewhere", Deny),
        ] {
            assert_eq!(a.access(path), want, "{path}");
            assert_eq!(judge(rules.iter().copied(), path), want, "{path}");
        }
        // Of equally long patterns, the first listed.
        let a = acl(&[("/w/a*", Ro), ("/w/*b", Deny)]);
        assert_eq!(a.access("/w/ab"), Ro);
    }

    #[test]
    fn a_subtree_is_uniform_only_when_no_rule_reaches_into_it() {
        use Access::*;
        let a = acl(&[("/w/**", Rw), ("/w/secret/**", Deny), ("/w/*.env", Deny)]);
        // Nothing reaches into /w/d but /w/**.
        assert_eq!(a.uniform_below("/w/d"), Some(Rw));
        assert_eq!(a.uniform_below("/w/secret"), Some(Deny));
        assert_eq!(a.uniform_below("/w/secret/x"), Some(Deny));
        // /w itself holds /w/secret and the *.env files.
        assert_eq!(a.uniform_below("/w"), None);
        // A glob anywhere above reaches into everything.
        let a = acl(&[("/w/**", Rw), ("/w/**/*.key", Deny)]);
        assert_eq!(a.uniform_below("/w/d"), None);
        let a = acl(&[("/w/**", Rw), ("**/.git", Deny)]);
        assert_eq!(a.uniform_below("/w/d"), None);
        // An exact path below.
        let a = acl(&[("/w/**", Rw), ("/w/d/key", Deny)]);
        assert_eq!(a.uniform_below("/w/d"), None);
        assert_eq!(a.uniform_below("/w/e"), Some(Rw));
        // Rules elsewhere do not matter; with none at all, all is denied.
        let a = acl(&[("/w/a/**", Rw), ("/v/*.key", Deny)]);
        assert_eq!(a.uniform_below("/w/b"), Some(Deny));
        assert_eq!(a.uniform_below("/w/a/b"), Some(Rw));
        // Prefixes that are not path prefixes do not count.
        let a = acl(&[("/w/**", Rw), ("/w/dd/**", Deny)]);
        assert_eq!(a.uniform_below("/w/d"), Some(Rw));
    }

    #[test]
    fn uniform_below_agrees_with_access() {
        use Access::*;
        let a = acl(&[
            ("/w/**", Rw),
            ("/w/a/**", Ro),
            ("/w/a/b/**", Deny),
            ("/w/c/*.txt", Deny),
            ("/w/e/f", Ro),
        ]);
        let paths = [
            "/w/a",
            "/w/a/x",
            "/w/a/b",
            "/w/a/b/c",
            "/w/c",
            "/w/c/x.txt",
            "/w/c/y",
            "/w/e",
            "/w/e/f",
            "/w/e/g",
        ];
        for dir in ["/w", "/w/a", "/w/a/b", "/w/c", "/w/e", "/w/z"] {
            if let Some(u) = a.uniform_below(dir) {
                for p in paths.iter().filter(|p| p.starts_with(&format!("{dir}/"))) {
                    assert_eq!(a.access(p), u, "{p} under {dir}");
                }
            }
        }
    }
}
