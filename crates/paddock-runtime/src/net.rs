//! Per-sandbox networking: a named network namespace with a veth pair on a
//! host bridge, NAT to the host's uplink, and an address from a /16.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use paddock_core::{Error, Result};

use crate::cmd::{run, run_stdin};

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bridge: String,
    /// The bridge's address; sandboxes get addresses in its /16.
    pub gateway: Ipv4Addr,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bridge: "paddock0".into(),
            gateway: Ipv4Addr::new(10, 88, 0, 1),
        }
    }
}

pub struct Network {
    pub cfg: NetConfig,
    used: Mutex<HashSet<Ipv4Addr>>,
}

pub fn netns_name(id: &uuid::Uuid) -> String {
    format!("pd-{}", &id.simple().to_string()[..16])
}

pub fn veth_name(id: &uuid::Uuid) -> String {
    // IFNAMSIZ is 16 with the NUL.
    format!("pdv{}", &id.simple().to_string()[..12])
}

impl Network {
    /// Sets up the bridge, forwarding and NAT (idempotent).
    pub async fn init(cfg: NetConfig) -> Result<Network> {
        let b = cfg.bridge.as_str();
        let cidr = format!("{}/16", cfg.gateway);
        let subnet = {
            let o = cfg.gateway.octets();
            format!("{}.{}.0.0/16", o[0], o[1])
        };
        if run("ip", &["link", "show", b]).await.is_err() {
            run("ip", &["link", "add", b, "type", "bridge"]).await?;
        }
        let addrs = run("ip", &["-o", "addr", "show", "dev", b]).await?;
        if !addrs.contains(&format!(" {cidr} ")) {
            run("ip", &["addr", "add", &cidr, "dev", b]).await?;
        }
        run("ip", &["link", "set", b, "up"]).await?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| Error::Internal(format!("enable ip_forward: {e}")))?;
        for rule in [
            vec![
                "-t",
                "nat",
                "POSTROUTING",
                "-s",
                &subnet,
                "!",
                "-o",
                b,
                "-j",
                "MASQUERADE",
            ],
            vec!["-t", "filter", "FORWARD", "-i", b, "-j", "ACCEPT"],
            vec!["-t", "filter", "FORWARD", "-o", b, "-j", "ACCEPT"],
        ] {
            let mut check = vec![rule[0], rule[1], "-C"];
            check.extend(&rule[2..]);
            if run("iptables", &check).await.is_err() {
                let mut add = vec![rule[0], rule[1], "-A"];
                add.extend(&rule[2..]);
                if let Err(e) = run("iptables", &add).await {
                    tracing::warn!(
                        "iptables: {e} (outbound networking from sandboxes may not work)"
                    );
                }
            }
        }
        Ok(Network {
            cfg,
            used: Mutex::new(HashSet::new()),
        })
    }

    pub fn reserve(&self, ip: Ipv4Addr) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip);
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }

    fn allocate(&self) -> Result<Ipv4Addr> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let o = self.cfg.gateway.octets();
        for n in 2u32..65534 {
            let ip = Ipv4Addr::new(o[0], o[1], (n >> 8) as u8, (n & 0xff) as u8);
            if ip != self.cfg.gateway && !used.contains(&ip) {
                used.insert(ip);
                return Ok(ip);
            }
        }
        Err(Error::Quota("no free sandbox addresses left".into()))
    }

    /// Creates the namespace and its veth; returns the sandbox's address.
    pub async fn create(&self, id: &uuid::Uuid) -> Result<Ipv4Addr> {
        let ip = self.allocate()?;
        match self.create_with(id, ip).await {
            Ok(()) => Ok(ip),
            Err(e) => {
                self.destroy(id, Some(ip)).await;
                Err(e)
            }
        }
    }

    async fn create_with(&self, id: &uuid::Uuid, ip: Ipv4Addr) -> Result<()> {
        let ns = netns_name(id);
        let veth = veth_name(id);
        run("ip", &["netns", "add", &ns]).await?;
        let host = format!(
            "link add {veth} type veth peer name eth0 netns {ns}\nlink set {veth} master {b} up\n",
            b = self.cfg.bridge
        );
        run_stdin("ip", &["-batch", "-"], Some(&host)).await?;
        let inside = format!(
            "link set lo up\naddr add {ip}/16 dev eth0\nlink set eth0 up\nroute add default via {gw}\n",
            gw = self.cfg.gateway
        );
        run_stdin("ip", &["-n", &ns, "-batch", "-"], Some(&inside)).await?;
        Ok(())
    }

    /// Removes the namespace (which takes its veth pair with it).
    pub async fn destroy(&self, id: &uuid::Uuid, ip: Option<Ipv4Addr>) {
        let ns = netns_name(id);
        if std::path::Path::new("/var/run/netns").join(&ns).exists() {
            if let Err(e) = run("ip", &["netns", "del", &ns]).await {
                tracing::warn!("{e}");
            }
        }
        let veth = veth_name(id);
        if std::path::Path::new("/sys/class/net").join(&veth).exists() {
            let _ = run("ip", &["link", "del", &veth]).await;
        }
        if let Some(ip) = ip {
            self.release(ip);
        }
    }

    /// The nameservers a sandbox should use: the host's, less loopback ones
    /// (which a separate network namespace cannot reach).
    pub fn resolv_conf() -> String {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mut out = String::new();
        for line in host.lines() {
            let l = line.trim();
            if let Some(ns) = l.strip_prefix("nameserver") {
                let ns = ns.trim();
                if ns.starts_with("127.") || ns == "::1" {
                    continue;
                }
            }
            if l.starts_with("nameserver") || l.starts_with("search") || l.starts_with("options") {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}
