//! Which host directories a sandbox may have bound in (`mounts[].origin`).
//!
//! None, unless the operator allows roots (`allowed_host_mounts`,
//! `paddock serve --allow-host-mount DIR`). An origin is resolved first
//! (symlinks, `.`), and then must be an allowed root or inside one, and
//! neither `/`, nor the daemon's data dir, nor a directory of the host's
//! own (`/proc`, `/sys`, `/dev`, `/etc`, `/root`, `/var/lib/paddock`), nor
//! inside or above one of those. The engine keeps the resolved path; the
//! backend opens it without following symlinks when it binds it, so a
//! symlink swapped in after this check fails the start instead of binding
//! what it points to.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Host directories never bound into a sandbox, nor anything inside them.
pub const FORBIDDEN_ROOTS: &[&str] =
    &["/proc", "/sys", "/dev", "/etc", "/root", "/var/lib/paddock"];

/// The operator's policy for host directories.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostMounts {
    /// Allowed roots, resolved.
    allowed: Vec<PathBuf>,
    /// Never bound, nor anything inside or above them: the forbidden roots
    /// (as written and resolved) and the data dir.
    forbidden: Vec<PathBuf>,
}

fn under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

impl HostMounts {
    /// The policy for `allowed` roots with the daemon's data dir. Refuses a
    /// root that could never be bound (`/`, a forbidden directory or inside
    /// one, the data dir or inside it), or that does not exist.
    pub fn new(allowed: &[PathBuf], data_dir: Option<&Path>) -> std::result::Result<Self, String> {
        let mut forbidden: Vec<PathBuf> = Vec::new();
        for f in FORBIDDEN_ROOTS {
            forbidden.push(PathBuf::from(f));
            if let Ok(c) = std::fs::canonicalize(f) {
                forbidden.push(c);
            }
        }
        if let Some(d) = data_dir {
            forbidden.push(d.to_path_buf());
            if let Ok(c) = std::fs::canonicalize(d) {
                forbidden.push(c);
            }
        }
        let mut policy = HostMounts {
            allowed: Vec::new(),
            forbidden,
        };
        for root in allowed {
            let c = std::fs::canonicalize(root)
                .map_err(|e| format!("allowed host mount {}: {e}", root.display()))?;
            if !c.is_dir() {
                return Err(format!(
                    "allowed host mount {}: not a directory",
                    root.display()
                ));
            }
            if let Some(why) = policy.never(&c, false) {
                return Err(format!(
                    "allowed host mount {} ({}): {why}",
                    root.display(),
                    c.display()
                ));
            }
            policy.allowed.push(c);
        }
        Ok(policy)
    }

    /// The allowed roots, resolved.
    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// Why `p` (resolved) can never be bound; with `above`, also a
    /// directory that holds a forbidden one.
    fn never(&self, p: &Path, above: bool) -> Option<String> {
        if p == Path::new("/") {
            return Some("the host's root directory is never mounted".into());
        }
        for f in &self.forbidden {
            if under(p, f) {
                return Some(format!(
                    "{} and what is inside it are never mounted",
                    f.display()
                ));
            }
            if above && under(f, p) {
                return Some(format!("it holds {}, which is never mounted", f.display()));
            }
        }
        None
    }

    /// Checks the host directory `origin` asked for in `field`; returns it
    /// resolved (what the sandbox gets), or a 403 naming the field.
    pub fn check(&self, field: &str, origin: &str) -> Result<String> {
        let denied = |why: String| Error::forbidden_field(field, why);
        if self.allowed.is_empty() {
            return Err(denied(
                "this daemon allows no host directories (the operator lists roots with \
                 allowed_host_mounts or --allow-host-mount)"
                    .into(),
            ));
        }
        let c = std::fs::canonicalize(origin)
            .map_err(|e| Error::invalid(field, format!("{origin}: {e}")))?;
        if let Some(why) = self.never(&c, true) {
            return Err(denied(format!("{origin} ({}): {why}", c.display())));
        }
        if !self.allowed.iter().any(|a| under(&c, a)) {
            return Err(denied(format!(
                "{origin} ({}) is not inside a directory the operator allows",
                c.display()
            )));
        }
        if !c.is_dir() {
            return Err(Error::invalid(
                field,
                format!("{origin} is not a directory on the host"),
            ));
        }
        c.into_os_string()
            .into_string()
            .map_err(|_| Error::invalid(field, "the host path is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_origins() {
        let tmp = std::env::temp_dir().join(format!("paddock-hm-{}", std::process::id()));
        let data = tmp.join("data");
        let ok = tmp.join("ok");
        std::fs::create_dir_all(ok.join("sub")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let _ = std::os::unix::fs::symlink("/", ok.join("root"));
        let none = HostMounts::new(&[], Some(&data)).unwrap();
        assert!(matches!(
            none.check("mounts[0].origin", ok.to_str().unwrap()),
            Err(Error::ForbiddenField { ref field, .. }) if field == "mounts[0].origin"
        ));
        assert!(HostMounts::new(&["/".into()], None).is_err());
        assert!(HostMounts::new(&["/etc".into()], None).is_err());
        assert!(HostMounts::new(&["/proc/self".into()], None).is_err());
        assert!(HostMounts::new(std::slice::from_ref(&data), Some(&data)).is_err());
        let p = HostMounts::new(std::slice::from_ref(&tmp), Some(&data)).unwrap();
        let sub = ok.join("sub");
        assert_eq!(
            p.check("f", sub.to_str().unwrap()).unwrap(),
            std::fs::canonicalize(&sub).unwrap().to_str().unwrap()
        );
        for bad in [
            ok.join("root"),
            data.clone(),
            data.join("."),
            tmp.clone(),
            PathBuf::from("/"),
            PathBuf::from("/etc"),
        ] {
            assert!(
                matches!(
                    p.check("f", bad.to_str().unwrap()),
                    Err(Error::ForbiddenField { .. })
                ),
                "{bad:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
