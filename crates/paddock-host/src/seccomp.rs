//! The compiled seccomp filter, kept between sandboxes.
//!
//! crun turns a spec's seccomp profile into a BPF program with libseccomp on
//! every `crun run`: about 1 ms of each create on this kind of host (median
//! of 60 runs, 13.7 → 12.7 ms). crun's own cache of compiled filters needs a
//! build with libgcrypt, which Debian's crun lacks. crun leaves the program
//! it loaded in the container's state directory as `seccomp.bpf`; the
//! backend keeps it, keyed by the profile it came from, and hands it to the
//! next sandboxes with the same profile through crun's
//! `run.oci.seccomp_bpf_data` annotation, which crun loads instead of
//! compiling. (A filter compiled here with the libseccomp crate would do
//! the same at the cost of a C library to build against; reusing crun's own
//! output cannot differ from what crun would load.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;

/// The annotation crun reads a ready BPF program from (base64).
const ANNOTATION: &str = "run.oci.seccomp_bpf_data";

/// The size of one BPF instruction (`struct sock_filter`).
const INSN: usize = 8;
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// Compiled filters by the JSON text of the profile they came from (with
/// the spec's annotations).
#[derive(Default)]
pub struct Cache {
    filters: Mutex<HashMap<String, String>>,
}

/// One run's use of the cache, from [`Cache::offer`] to [`Cache::settle`].
pub struct Use {
    /// The spec's profile and annotations (crun's own options for the
    /// filter, such as `run.oci.seccomp_fail_unknown_syscall`, are
    /// annotations).
    key: String,
    /// The spec was handed a compiled filter.
    handed: bool,
}

impl Cache {
    /// Hands `spec` the filter crun compiled for an earlier sandbox with
    /// the same profile, if there is one; None for a spec without seccomp.
    pub fn offer(&self, spec: &mut oci_spec::runtime::Spec) -> Option<Use> {
        let seccomp = spec.linux().as_ref()?.seccomp().as_ref()?;
        let key = serde_json::to_string(&(seccomp, spec.annotations())).ok()?;
        let bpf = self.get(&key);
        let handed = bpf.is_some();
        if let Some(bpf) = bpf {
            let mut notes = spec.annotations().clone().unwrap_or_default();
            notes.insert(ANNOTATION.into(), bpf);
            spec.set_annotations(Some(notes));
        }
        Some(Use { key, handed })
    }

    /// After the run: keeps the filter crun compiled (`bpf`, its
    /// `seccomp.bpf`) when the spec was handed none, and forgets the one
    /// handed when the run failed (in case the filter was what failed).
    pub fn settle(&self, used: Use, ran: bool, bpf: &Path) {
        match (used.handed, ran) {
            (false, true) if !self.learn(&used.key, bpf) => {
                tracing::debug!("no compiled seccomp filter at {}", bpf.display());
            }
            (true, false) => self.forget(&used.key),
            _ => {}
        }
    }

    /// The compiled filter for `profile`, base64, if one was learned.
    fn get(&self, profile: &str) -> Option<String> {
        self.filters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(profile)
            .cloned()
    }

    /// Keeps the filter crun compiled for `profile` (its `seccomp.bpf`),
    /// if it looks like one: a whole number of instructions, within the
    /// kernel's limit. Says whether it was kept.
    fn learn(&self, profile: &str, bpf: &Path) -> bool {
        let Ok(prog) = std::fs::read(bpf) else {
            return false;
        };
        if prog.is_empty() || prog.len() % INSN != 0 || prog.len() > MAX_INSNS * INSN {
            return false;
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(prog);
        let mut filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
        // Profiles are few (one per sandbox kind); never let them pile up.
        if filters.len() >= 16 {
            filters.clear();
        }
        filters.insert(profile.to_string(), encoded);
        true
    }

    /// Drops the filter kept for `profile`.
    fn forget(&self, profile: &str) {
        self.filters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_whole_programs() {
        let dir = std::env::temp_dir().join(format!("paddock-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cache = Cache::default();
        let p = dir.join("seccomp.bpf");
        assert!(!cache.learn("a", &p), "a missing file is not a filter");
        std::fs::write(&p, [0u8; 12]).unwrap();
        assert!(!cache.learn("a", &p), "12 bytes is not whole instructions");
        std::fs::write(&p, []).unwrap();
        assert!(!cache.learn("a", &p));
        std::fs::write(&p, vec![0u8; (MAX_INSNS + 1) * INSN]).unwrap();
        assert!(!cache.learn("a", &p), "over the kernel's limit");
        assert_eq!(cache.get("a"), None);
        std::fs::write(&p, [1u8, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert!(cache.learn("a", &p));
        assert_eq!(cache.get("a").as_deref(), Some("AQIDBAUGBwg="));
        assert_eq!(cache.get("b"), None, "keyed by the profile");
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
