//! The port to where volumes live: named, sized filesystems that outlive
//! sandboxes, each a directory on the host that backends mount.

use uuid::Uuid;

use crate::error::Result;

/// Blocking calls (the engine runs them off its async threads).
pub trait VolumeStore: Send + Sync {
    /// Makes a volume of `size_mb` (its size enforced: a full volume is
    /// `ENOSPC` inside); returns its directory on the host.
    fn create(&self, id: Uuid, size_mb: u64) -> Result<String>;
    /// Its directory on the host, mounted (again, after a restart).
    fn source(&self, id: Uuid) -> Result<String>;
    /// Bytes used and bytes it holds, if it is there.
    fn usage(&self, id: Uuid) -> Option<(u64, u64)>;
    /// Removes it and its data.
    fn remove(&self, id: Uuid) -> Result<()>;
    /// Removes every volume not in `keep` (made by a create the daemon
    /// died in); returns how many.
    fn gc(&self, keep: &[Uuid]) -> Result<usize>;
}
