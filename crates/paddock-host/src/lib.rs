//! Host plumbing that backends share, kept apart from any one backend's
//! driver (as E2B keeps its sandbox network apart from the VMM driver):
//! what the container backend uses today, and what the gVisor backend
//! (runsc is an OCI runtime), a microVM backend (a tap on the same bridge,
//! cgroups for the VMM) and the egress firewall will use.
//!
//! - [`net`]: per-sandbox network namespaces on a bridge with NAT, their
//!   pool, and the nftables tables that keep sandboxes apart from each
//!   other and from the host; [`netlink`]: the rtnetlink calls that make
//!   and wire them in-process.
//! - [`cgroup`]: metrics from cgroups v1 or v2, freezer state, cleanup, the
//!   cgroup2 mount's options.
//! - [`seccomp`]: the cache of compiled seccomp filters handed from one
//!   sandbox to the next with the same profile.
//! - [`sealed`]: a sealed memfd copy of a runtime binary, run instead of
//!   the file.
//! - [`cmd`]: running host commands with their errors as engine errors.
//! - [`layer`]: filesystem layers as overlayfs keeps them: a sandbox's
//!   writable layer copied out with its owners shifted back, stacks
//!   flattened, each named by its content.
//! - [`volume`]: volumes as loop-mounted ext4 images, mounted into and
//!   out of running sandboxes.
//! - [`userns`]: each sandbox's range of host ids, claimed host-wide; its
//!   user namespace (owned by that range's root) with its network
//!   namespace inside; idmapped mounts.

pub mod cgroup;
pub mod cmd;
pub mod fuse;
pub mod layer;
pub mod net;
pub mod netlink;
pub mod sealed;
pub mod seccomp;
pub mod userns;
pub mod volume;
