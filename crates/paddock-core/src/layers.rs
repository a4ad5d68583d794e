//! The port to the store of snapshot layers: directory trees the backends
//! stack over an image's layers, named by their content.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::Result;

/// Which paths of a layer (as the sandbox sees them, `/a/b`) to keep.
pub type Keep = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A layer in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLayer {
    /// Its directory: what a sandbox's configuration lists in `layers`.
    pub path: String,
    /// `sha256:<hex>` of its content.
    pub digest: String,
    /// Bytes of file data in it.
    pub bytes: u64,
}

/// Where snapshot layers are kept. Blocking calls (the engine runs them
/// off its async threads).
pub trait Layers: Send + Sync {
    /// A fresh path (nothing there) for a backend to capture a layer into.
    fn stage(&self) -> Result<PathBuf>;
    /// Makes a filled staged tree a stored layer, named by its content
    /// (one already stored with that content is kept, the staged tree
    /// removed), synced to disk.
    fn commit(&self, staged: &Path) -> Result<StoredLayer>;
    /// One stored layer that shows what `layers` (bottom first) show
    /// stacked; with `keep`, only the paths it keeps (and the directories
    /// on the way to them).
    fn flatten(&self, layers: &[String], keep: Option<Keep>) -> Result<StoredLayer>;
    /// Removes a staged tree (a capture that failed).
    fn discard(&self, staged: &Path);
    /// Removes the stored layers not in `keep`, and staged trees when
    /// `staged` (none is being filled: at start); returns how many.
    fn gc(&self, keep: &HashSet<String>, staged: bool) -> Result<usize>;
}
