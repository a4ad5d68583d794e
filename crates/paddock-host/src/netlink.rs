//! Wiring a sandbox's network namespace in-process, over rtnetlink.
//!
//! What `ip netns add`, `ip link add ... type veth` and `ip addr/route add`
//! would do, without starting a process for each step: three `ip` runs cost
//! about 12 ms of CPU per namespace here, these calls well under 2 ms.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use paddock_core::Error;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    Handle, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// Where named network namespaces live, as iproute2 has them.
pub const NETNS_DIR: &str = "/run/netns";

/// One namespace to make: its name under [`NETNS_DIR`], the host end of its
/// veth pair (enslaved to `bridge` as an isolated port), and the addresses
/// of its `eth0`.
pub struct Wiring<'a> {
    pub netns: &'a str,
    pub veth: &'a str,
    pub bridge: &'a str,
    pub ip: Ipv4Addr,
    /// `eth0`'s MAC address, the one the bridge's filter pins its port to.
    pub mac: [u8; 6],
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Made inside a user namespace of its own, owned by this range's root
    /// (`userns::create_with_net`); none: owned by the host's.
    pub ids: Option<crate::userns::IdRange>,
    /// An isolated bridge port (the default bridge's); a private network's
    /// ports reach each other.
    pub isolated: bool,
}

fn err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Internal(format!("network namespace: {what}: {e}"))
}

/// Makes [`NETNS_DIR`] a shared mount point, as `ip netns add` does, so that
/// namespaces bound there are visible in every mount namespace.
fn prepare_dir() -> Result<(), Error> {
    crate::userns::share_dir(Path::new(NETNS_DIR))
}

/// Creates and wires the namespace. Blocking: it runs on a thread of its
/// own, since entering a new network namespace changes the calling thread.
/// A `background` namespace is wired at low CPU priority (a pool refill
/// must not slow down the create a caller waits for).
pub fn create(w: &Wiring<'_>, background: bool) -> Result<(), Error> {
    static PREPARED: std::sync::Once = std::sync::Once::new();
    let mut prepared = Ok(());
    PREPARED.call_once(|| prepared = prepare_dir());
    prepared?;
    let target = Path::new(NETNS_DIR).join(w.netns);
    match w.ids {
        Some(r) => crate::userns::create_with_net(r, w.netns, &target)?,
        None => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|e| err("create")(e.to_string()))?;
        }
    }
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            if background {
                // SAFETY: setpriority on the calling thread (who = 0) only
                // changes its scheduling priority.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 15) };
            }
            create_on_this_thread(w, &target)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Internal("network namespace: thread panicked".into())))
    });
    if result.is_err() {
        let _ = umount2(&target, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&target);
        crate::userns::remove(w.netns);
    }
    result
}

fn create_on_this_thread(w: &Wiring<'_>, target: &Path) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| err("runtime")(e.to_string()))?;
    let host_ns = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| err("open host namespace")(e.to_string()))?;
    // Netlink sockets stay in the namespace they were opened in: this one
    // keeps talking to the host's.
    let (host_conn, host, _) = rt
        .block_on(async { rtnetlink::new_connection() })
        .map_err(|e| err("netlink")(e.to_string()))?;
    rt.spawn(host_conn);
    if w.ids.is_some() {
        // Made already, in its user namespace: this thread enters it.
        let ns = std::fs::File::open(target).map_err(|e| err("open")(e.to_string()))?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| err("setns")(e.to_string()))?;
    } else {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| err("unshare")(e.to_string()))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err("bind")(e.to_string()))?;
    }
    // Ping without CAP_NET_RAW, as Docker allows it: ICMP echo sockets
    // (SOCK_DGRAM) for every group. /proc/sys/net is the namespace of the
    // thread that opens it: this one's, now.
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")
        .map_err(|e| err("ping_group_range")(e.to_string()))?;
    let (ns_conn, ns, _) = rt
        .block_on(async { rtnetlink::new_connection() })
        .map_err(|e| err("netlink")(e.to_string()))?;
    rt.spawn(ns_conn);
    rt.block_on(wire(w, &host, &ns, host_ns.as_raw_fd()))
}

async fn index(h: &Handle, name: &str) -> Result<u32, Error> {
    let link = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|e| err(name)(e.to_string()))?
        .ok_or_else(|| err(name)("no such link".into()))?;
    Ok(link.header.index)
}

async fn wire(w: &Wiring<'_>, host: &Handle, ns: &Handle, host_ns: i32) -> Result<(), Error> {
    let ctx = |what: &'static str| move |e: rtnetlink::Error| err(what)(e.to_string());
    // eth0 here, its peer straight into the host's namespace.
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(w.veth.to_string())
        .setns_by_fd(host_ns)
        .build();
    let pair = LinkVeth::new("eth0", w.veth)
        .address(w.mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    ns.link().add(pair).execute().await.map_err(ctx("veth"))?;
    ns.link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(ctx("lo up"))?;
    let eth0 = index(ns, "eth0").await?;
    ns.address()
        .add(eth0, IpAddr::V4(w.ip), w.prefix_len)
        .execute()
        .await
        .map_err(ctx("address"))?;
    ns.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(ctx("eth0 up"))?;
    ns.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(w.gateway)
                .build(),
        )
        .execute()
        .await
        .map_err(ctx("default route"))?;
    let bridge = index(host, w.bridge).await?;
    host.link()
        .set(
            LinkUnspec::new_with_name(w.veth)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(ctx("attach to bridge"))?;
    if w.isolated {
        isolate(host, w.veth).await
    } else {
        Ok(())
    }
}

/// Makes the bridge port `veth` isolated (`bridge link set dev VETH isolated
/// on`): the bridge forwards nothing between two isolated ports, so
/// sandboxes do not reach each other at layer 2.
async fn isolate(host: &Handle, veth: &str) -> Result<(), Error> {
    let index = index(host, veth).await?;
    host.link()
        .set_port(LinkBridgePort::new(index).isolated(true).build())
        .execute()
        .await
        .map_err(|e| err("isolate bridge port")(e.to_string()))
}

/// Isolates the bridge ports `veths` (those of sandboxes wired by an older
/// daemon, which did not); ports that are gone are skipped.
pub async fn isolate_all(veths: &[String]) -> Result<(), Error> {
    if veths.is_empty() {
        return Ok(());
    }
    let (conn, host, _) = rtnetlink::new_connection().map_err(|e| err("netlink")(e.to_string()))?;
    let task = tokio::spawn(conn);
    let mut result = Ok(());
    for v in veths {
        if Path::new("/sys/class/net").join(v).exists() {
            if let Err(e) = isolate(&host, v).await {
                result = Err(e);
            }
        }
    }
    task.abort();
    result
}

/// Removes a namespace made by [`create`] (or by `ip netns add`); its veth
/// pair goes with it.
pub fn remove(netns: &str) -> Result<(), Error> {
    crate::userns::remove(netns);
    let target = Path::new(NETNS_DIR).join(netns);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(err("unmount")(e.to_string())),
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("remove")(e.to_string())),
    }
}
