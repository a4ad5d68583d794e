//! Per-sandbox networking: a named network namespace with a veth pair on a
//! host bridge, NAT to the host's uplink, and an address from a /16.
//!
//! Sandboxes are kept apart and away from the host: each veth is an
//! isolated bridge port (no layer-2 path between sandboxes), and two
//! nftables tables of this daemon's own, named after its bridge
//! ([`table`]), filter what they send: in the `bridge` family every frame
//! from a sandbox's port must carry its MAC, IPv4 its address and ARP both
//! (nothing else passes: no spoofing), and in the `inet` family the host
//! drops what sandboxes route through it to each other and what they send
//! to its own addresses, except DNS to a nameserver of their resolv.conf,
//! ping to the gateway, the ports the operator lists (`--host-port`), the
//! gateway for a sandbox that asked for `host-gateway`, and replies.
//!
//! Private networks: each a bridge of its own ([`net_bridge`], named after
//! the daemon's bridge) with a /24 carved out of the half of the daemon's
//! /16 that its default bridge's sandboxes never get addresses from
//! ([`Network::allocate`]); its ports are not isolated, so its sandboxes
//! reach each other on any port, and the `inet` filter lets through only
//! what goes from a network's bridge to the same bridge: every other path
//! between this daemon's bridges is dropped, and each network's gateway is
//! the only host address its sandboxes reach (DNS, ping, host ports),
//! like the default bridge's.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use paddock_core::{Error, Result};

use crate::cmd::run;

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bridge: String,
    /// The bridge's address; sandboxes get addresses in its /16.
    pub gateway: Ipv4Addr,
    /// Ports of the gateway address every sandbox may reach (TCP and UDP),
    /// for host services the operator offers them.
    pub host_ports: Vec<u16>,
    /// Each namespace inside a user namespace of its own, with a range of
    /// host ids (`userns`); off (`paddock serve --userns off`): owned by
    /// the host's, its sandbox's root the host's root.
    pub userns: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bridge: "paddock0".into(),
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            host_ports: Vec::new(),
            userns: true,
        }
    }
}

/// A network namespace wired to the bridge: what a sandbox runs in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    /// Its name under /var/run/netns.
    pub netns: String,
    /// The host end of its veth pair.
    pub veth: String,
    pub ip: Ipv4Addr,
    /// The veth's byte counters when the sandbox got it (a namespace is
    /// reused), subtracted from what metrics report.
    #[serde(default)]
    pub rx_base: u64,
    #[serde(default)]
    pub tx_base: u64,
    /// Its `eth0`'s MAC address ([`mac_for`] of its address), which the
    /// bridge filter pins its port to. None in a slot an older daemon
    /// wired: then read from the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The sandbox may reach the gateway address (it asked for
    /// `host-gateway` in its extra hosts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_gateway: bool,
    /// The host ids of its user namespace (which owns the network
    /// namespace): the sandbox's. None: no user namespace (`--userns off`,
    /// or wired by an older daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<crate::userns::IdRange>,
    /// The private network it is on; none: the default bridge, isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SlotNetwork>,
}

/// A slot's private network, as the slot records it (the filter's
/// elements for its bridge are rebuilt from it at start).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotNetwork {
    pub id: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
}

/// A private network set up on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PrivateNet {
    /// Its place among this daemon's network subnets.
    index: u8,
    bridge: String,
    gateway: Ipv4Addr,
}

/// How many private networks one daemon can hold: the /24s of half its /16.
pub const MAX_NETWORKS: u8 = 128;

/// The third octet where this daemon's network subnets start: the half of
/// its /16 its gateway is not in.
fn net_base(cfg: &NetConfig) -> u8 {
    if cfg.gateway.octets()[2] < 128 {
        128
    } else {
        0
    }
}

/// The gateway of network subnet `index`: `a.b.c.1` of its /24.
fn net_gateway(cfg: &NetConfig, index: u8) -> Ipv4Addr {
    let o = cfg.gateway.octets();
    Ipv4Addr::new(o[0], o[1], net_base(cfg) + index, 1)
}

fn net_subnet(cfg: &NetConfig, index: u8) -> String {
    let o = cfg.gateway.octets();
    format!("{}.{}.{}.0/24", o[0], o[1], net_base(cfg) + index)
}

/// The start of this daemon's network bridges' names: its bridge's name,
/// or, for one too long to leave room (IFNAMSIZ), its first three
/// characters and a hash of the whole.
fn net_prefix(cfg: &NetConfig) -> String {
    let b = &cfg.bridge;
    let stem = if b.len() <= 11 {
        b.clone()
    } else {
        // FNV-1a: stable across builds (the names outlive the process).
        let mut h: u32 = 0x811c_9dc5;
        for byte in b.bytes() {
            h = (h ^ byte as u32).wrapping_mul(0x0100_0193);
        }
        format!("{}{h:08x}", &b[..3])
    };
    format!("{stem}-n")
}

/// The bridge of network subnet `index` (at most 15 characters).
fn net_bridge(cfg: &NetConfig, index: u8) -> String {
    format!("{}{index:02x}", net_prefix(cfg))
}

impl Slot {
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new(crate::netlink::NETNS_DIR).join(&self.netns)
    }

    fn counter(&self, which: &str) -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{which}", self.veth))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Sandbox networking. Wiring a namespace costs the kernel a few ms of
/// work, so a small pool of ready namespaces is kept and refilled in the
/// background; a create takes one and pays nothing for its network.
pub struct Network {
    pub cfg: NetConfig,
    used: Mutex<HashSet<Ipv4Addr>>,
    pool: Mutex<Vec<Slot>>,
    pool_size: usize,
    refill: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
    /// Namespaces this process made and has not removed (pooled, being
    /// wired, or given to a sandbox): never garbage.
    made: Mutex<HashSet<String>>,
    /// Held by the refill while it wires a namespace: [`Network::drain`]
    /// waits for it, so that none is left behind, pinned, at exit.
    wiring: tokio::sync::Mutex<()>,
    /// The host's id ranges, claimed per namespace.
    claims: crate::userns::IdClaims,
    /// The private networks set up, by id ([`Network::ensure_network`]).
    nets: Mutex<HashMap<String, PrivateNet>>,
}

/// The MAC address of the sandbox at `ip`: locally administered, unicast,
/// and known before the namespace exists (as Docker's 02:42:IP).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x50, o[0], o[1], o[2], o[3]]
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The name of this daemon's nftables tables (one in the `bridge` family,
/// one in `inet`): tied to its bridge, so that daemons with different
/// bridges keep out of each other's rules.
fn table(cfg: &NetConfig) -> String {
    let name: String = cfg
        .bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("paddock_{name}")
}

/// What the bridge filter knows of one sandbox port.
struct Pin {
    veth: String,
    mac: String,
    ip: Ipv4Addr,
    host_gateway: bool,
    /// Its private network's bridge and gateway.
    network: Option<(String, Ipv4Addr)>,
}

impl Pin {
    fn of(s: &Slot) -> Pin {
        Pin {
            veth: s.veth.clone(),
            mac: s.mac.clone().unwrap_or_else(|| mac_text(mac_for(s.ip))),
            ip: s.ip,
            host_gateway: s.host_gateway,
            network: s.network.as_ref().map(|n| (n.bridge.clone(), n.gateway)),
        }
    }

    /// `add` or `delete` of the port's elements.
    fn elements(&self, op: &str, t: &str) -> String {
        let Pin { veth, mac, ip, .. } = self;
        format!(
            "{op} element bridge {t} ports {{ \"{veth}\" }}\n\
             {op} element bridge {t} macs {{ \"{veth}\" . {mac} }}\n\
             {op} element bridge {t} ips {{ \"{veth}\" . {ip} }}\n"
        )
    }
}

/// The `inet` filter's elements for a private network's bridge: what goes
/// from it to itself passes, and its gateway is the address its sandboxes
/// reach of the host.
fn net_elements(op: &str, t: &str, bridge: &str, gateway: Ipv4Addr) -> String {
    format!(
        "{op} element inet {t} same {{ \"{bridge}\" . \"{bridge}\" }}\n\
         {op} element inet {t} gateways {{ \"{bridge}\" . {gateway} }}\n"
    )
}

/// The nftables tables, replaced whole in one transaction: the chains, the
/// sets, and the ports of `pins` (sandboxes already running), with the
/// private networks they are on.
fn ruleset(cfg: &NetConfig, dns: &[Ipv4Addr], pins: &[Pin]) -> String {
    let t = table(cfg);
    let b = &cfg.bridge;
    let gw = cfg.gateway;
    let nb = format!("{}*", net_prefix(cfg));
    let elements = |items: Vec<String>| {
        if items.is_empty() {
            String::new()
        } else {
            format!("elements = {{ {} }}", items.join(", "))
        }
    };
    let dns = elements(dns.iter().map(|a| a.to_string()).collect());
    let ports = elements(cfg.host_ports.iter().map(|p| p.to_string()).collect());
    let hostgw = elements(
        pins.iter()
            .filter(|p| p.host_gateway)
            .map(|p| p.ip.to_string())
            .collect(),
    );
    let mut out = format!(
        r#"table bridge {t}
delete table bridge {t}
table bridge {t} {{
  set ports {{ type ifname; }}
  set macs {{ type ifname . ether_addr; }}
  set ips {{ type ifname . ipv4_addr; }}
  chain pin {{
    type filter hook prerouting priority filter; policy accept;
    iifname != @ports accept
    iifname . ether saddr != @macs counter drop
    ether type arp iifname . arp saddr ether != @macs counter drop
    ether type arp iifname . arp saddr ip != @ips counter drop
    ether type ip iifname . ip saddr != @ips counter drop
    ether type != {{ ip, arp }} counter drop
  }}
}}
table inet {t}
delete table inet {t}
table inet {t} {{
  set dns {{ type ipv4_addr; {dns} }}
  set host_ports {{ type inet_service; {ports} }}
  set host_gateway {{ type ipv4_addr; {hostgw} }}
  set gateways {{ type ifname . ipv4_addr; elements = {{ "{b}" . {gw} }} }}
  set same {{ type ifname . ifname; }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname != "{b}" iifname != "{nb}" accept
    ct state established,related accept
    ip daddr @dns meta l4proto {{ tcp, udp }} th dport 53 accept
    iifname . ip daddr @gateways icmp type echo-request accept
    iifname . ip daddr @gateways meta l4proto {{ tcp, udp }} th dport @host_ports accept
    iifname . ip daddr @gateways ip saddr @host_gateway accept
    counter drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname . oifname @same accept
    iifname "{b}" oifname "{b}" counter drop
    iifname "{b}" oifname "{nb}" counter drop
    iifname "{nb}" oifname "{b}" counter drop
    iifname "{nb}" oifname "{nb}" counter drop
  }}
}}
"#
    );
    let mut nets = HashSet::new();
    for p in pins {
        out.push_str(&p.elements("add", &t));
        if let Some((bridge, gw)) = &p.network {
            if nets.insert(bridge.clone()) {
                out.push_str(&net_elements("add", &t, bridge, *gw));
            }
        }
    }
    out
}

/// Applies an nftables script as one transaction.
async fn nft(script: &str) -> Result<String> {
    crate::cmd::run_input("nft", &["-f", "/dev/stdin"], script).await
}

/// The IPv4 nameservers of a sandbox's resolv.conf.
fn nameservers() -> Vec<Ipv4Addr> {
    Network::resolv_conf()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// The sandboxes' subnet: the gateway's /16.
fn subnet(cfg: &NetConfig) -> String {
    let o = cfg.gateway.octets();
    format!("{}.{}.0.0/16", o[0], o[1])
}

/// The iptables rules (table, then chain, match and target) that let
/// sandboxes on the bridge reach out: NAT of the bridge's subnet, and
/// forwarding to and from it.
fn rules(cfg: &NetConfig) -> [(&'static str, Vec<String>); 5] {
    let b = &cfg.bridge;
    // The private networks' bridges (`+`: iptables' wildcard).
    let nb = format!("{}+", net_prefix(cfg));
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    [
        (
            "nat",
            args(&[
                "POSTROUTING",
                "-s",
                &subnet(cfg),
                "!",
                "-o",
                b,
                "-j",
                "MASQUERADE",
            ]),
        ),
        ("filter", args(&["FORWARD", "-i", b, "-j", "ACCEPT"])),
        ("filter", args(&["FORWARD", "-o", b, "-j", "ACCEPT"])),
        ("filter", args(&["FORWARD", "-i", &nb, "-j", "ACCEPT"])),
        ("filter", args(&["FORWARD", "-o", &nb, "-j", "ACCEPT"])),
    ]
}

/// `iptables -t TABLE OP CHAIN...`: OP is -C (is it there), -A or -D.
async fn iptables(op: &str, table: &str, rule: &[String]) -> Result<String> {
    let mut a = vec!["-t", table, op];
    a.extend(rule.iter().map(String::as_str));
    run("iptables", &a).await
}

impl Network {
    /// Sets up the bridge, forwarding and NAT (idempotent), and the
    /// filters, with the ports of the sandboxes in `existing` (left by an
    /// earlier daemon) pinned and isolated.
    pub async fn init(
        cfg: NetConfig,
        pool_size: usize,
        existing: &[Slot],
    ) -> Result<std::sync::Arc<Network>> {
        let b = cfg.bridge.as_str();
        if b.is_empty()
            || b.len() > 15
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(Error::invalid(
                "bridge",
                format!("{b:?} is not an interface name (1 to 15 letters, digits, '_', '.', '-')"),
            ));
        }
        let cidr = format!("{}/16", cfg.gateway);
        let subnet = subnet(&cfg);
        // Another interface routing the same subnet would take the traffic
        // meant for this bridge's sandboxes.
        let routes = run("ip", &["-o", "route", "show", "exact", &subnet]).await?;
        if let Some(dev) = routes.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            it.by_ref().find(|w| *w == "dev");
            it.next().filter(|d| *d != b)
        }) {
            return Err(Error::Unavailable {
                what: "sandbox networking".into(),
                reason: format!(
                    "the sandbox subnet {subnet} (from --gateway {}) is already routed via {dev}; choose another --gateway, or remove {dev}",
                    cfg.gateway
                ),
            });
        }
        if run("ip", &["link", "show", b]).await.is_err() {
            run("ip", &["link", "add", b, "type", "bridge"]).await?;
        }
        let addrs = run("ip", &["-o", "addr", "show", "dev", b]).await?;
        if !addrs.contains(&format!(" {cidr} ")) {
            run("ip", &["addr", "add", &cidr, "dev", b]).await?;
        }
        // A bridge without an address of its own takes the lowest of its
        // ports', and changes it as sandboxes come and go: the gateway's
        // MAC cached in the sandboxes goes stale, and the host's neighbours
        // are flushed. A fixed one, from its address.
        let mac = mac_text(mac_for(cfg.gateway));
        let now = std::fs::read_to_string(format!("/sys/class/net/{b}/address"));
        if now.map(|m| m.trim() != mac).unwrap_or(true) {
            run("ip", &["link", "set", "dev", b, "address", &mac]).await?;
        }
        run("ip", &["link", "set", b, "up"]).await?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| Error::Internal(format!("enable ip_forward: {e}")))?;
        for (table, rule) in rules(&cfg) {
            if iptables("-C", table, &rule).await.is_err() {
                if let Err(e) = iptables("-A", table, &rule).await {
                    tracing::warn!(
                        "iptables: {e} (outbound networking from sandboxes may not work)"
                    );
                }
            }
        }
        let mut pins = Vec::new();
        for s in existing.iter().filter(|s| s.path().exists()) {
            let mut p = Pin::of(s);
            if s.mac.is_none() {
                // Wired by a daemon that did not choose the MAC.
                let out = run("ip", &["-n", &s.netns, "-o", "link", "show", "eth0"])
                    .await
                    .unwrap_or_default();
                let mut words = out.split_whitespace();
                if let Some(m) = words
                    .by_ref()
                    .find(|w| *w == "link/ether")
                    .and(words.next())
                {
                    p.mac = m.to_string();
                }
            }
            pins.push(p);
        }
        nft(&ruleset(&cfg, &nameservers(), &pins))
            .await
            .map_err(|e| Error::Unavailable {
                what: "sandbox networking".into(),
                reason: format!("the sandbox network filter (nftables) could not be set up: {e}"),
            })?;
        let veths: Vec<String> = pins
            .iter()
            .filter(|p| p.network.is_none())
            .map(|p| p.veth.clone())
            .collect();
        if let Err(e) = crate::netlink::isolate_all(&veths).await {
            tracing::warn!("{e}");
        }
        let net = std::sync::Arc::new(Network {
            cfg,
            used: Mutex::new(HashSet::new()),
            pool: Mutex::new(Vec::new()),
            pool_size,
            refill: tokio::sync::Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            made: Mutex::new(HashSet::new()),
            wiring: tokio::sync::Mutex::new(()),
            claims: crate::userns::IdClaims::default(),
            nets: Mutex::new(HashMap::new()),
        });
        Ok(net)
    }

    /// Keeps the pool full, in the background.
    pub fn spawn_refill(self: &std::sync::Arc<Self>) {
        let n = self.clone();
        tokio::spawn(async move {
            loop {
                // Register for a wake-up before looking, so none is missed.
                let notified = n.refill.notified();
                if n.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let short = n.pool.lock().unwrap_or_else(|e| e.into_inner()).len() < n.pool_size;
                if !short {
                    notified.await;
                    continue;
                }
                let _wiring = n.wiring.lock().await;
                if n.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                match n.make_slot(true, None).await {
                    Ok(slot) if n.closed.load(std::sync::atomic::Ordering::SeqCst) => {
                        n.destroy(&slot).await;
                        return;
                    }
                    Ok(slot) => n.pool.lock().unwrap_or_else(|e| e.into_inner()).push(slot),
                    Err(e) => {
                        tracing::warn!("network pool: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    /// Tops the pool up in the background. Called after a create rather
    /// than when it takes a namespace, so that wiring the next one does not
    /// compete with starting this one for the CPU.
    pub fn refill(&self) {
        self.refill.notify_one();
    }

    /// Takes what a sandbox already here holds (after a restart): its
    /// address, and its id range, claimed again.
    pub fn reserve(&self, s: &Slot) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.ip);
        if let Some(r) = s.ids {
            if let Err(e) = self.claims.adopt(r, &s.netns) {
                tracing::error!(netns = %s.netns, "{e}");
            }
        }
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }

    /// A free address: on the default bridge, from the half of the /16
    /// that private networks' subnets are not carved from; on a network,
    /// from its /24.
    fn allocate(&self, network: Option<&SlotNetwork>) -> Result<Ipv4Addr> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let o = self.cfg.gateway.octets();
        let range = match network {
            Some(n) => {
                let g = n.gateway.octets();
                let base = u32::from(g[2]) << 8;
                base + 2..base + 255
            }
            None if net_base(&self.cfg) == 0 => (128 << 8)..65534,
            None => 2..(128 << 8),
        };
        for n in range {
            let ip = Ipv4Addr::new(o[0], o[1], (n >> 8) as u8, (n & 0xff) as u8);
            if ip != self.cfg.gateway && !used.contains(&ip) {
                used.insert(ip);
                return Ok(ip);
            }
        }
        Err(Error::Quota(match network {
            Some(n) => format!("no free addresses left on network {}", n.id),
            None => "no free sandbox addresses left".into(),
        }))
    }

    /// Sets up private network `id` (idempotent): its bridge, with the
    /// address of its gateway, and the filter's elements for it. `subnet`:
    /// the one it had (after a restart); none: a free one. Answers its
    /// subnet.
    pub async fn ensure_network(&self, id: &str, subnet: Option<&str>) -> Result<String> {
        let known = self
            .nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let index = match (known, subnet) {
            (Some(n), _) => n.index,
            (None, Some(s)) => (0..MAX_NETWORKS)
                .find(|k| net_subnet(&self.cfg, *k) == s)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "network {id}: subnet {s} is not one of this daemon's (--gateway {} changed?)",
                        self.cfg.gateway
                    ))
                })?,
            (None, None) => self.free_index().await?,
        };
        let bridge = net_bridge(&self.cfg, index);
        let gateway = net_gateway(&self.cfg, index);
        let b = bridge.as_str();
        if run("ip", &["link", "show", b]).await.is_err() {
            run("ip", &["link", "add", b, "type", "bridge"]).await?;
        }
        let cidr = format!("{gateway}/24");
        let addrs = run("ip", &["-o", "addr", "show", "dev", b]).await?;
        if !addrs.contains(&format!(" {cidr} ")) {
            run("ip", &["addr", "add", &cidr, "dev", b]).await?;
        }
        let mac = mac_text(mac_for(gateway));
        let now = std::fs::read_to_string(format!("/sys/class/net/{b}/address"));
        if now.map(|m| m.trim() != mac).unwrap_or(true) {
            run("ip", &["link", "set", "dev", b, "address", &mac]).await?;
        }
        run("ip", &["link", "set", b, "up"]).await?;
        nft(&net_elements("add", &table(&self.cfg), b, gateway)).await?;
        self.nets.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id.to_string(),
            PrivateNet {
                index,
                bridge: bridge.clone(),
                gateway,
            },
        );
        Ok(net_subnet(&self.cfg, index))
    }

    /// A network subnet no network of this daemon has, no sandbox has an
    /// address in, and no other interface routes.
    async fn free_index(&self) -> Result<u8> {
        let taken: HashSet<u8> = self
            .nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|n| n.index)
            .collect();
        let used: HashSet<u8> = self
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|ip| ip.octets()[2])
            .collect();
        let routes = run("ip", &["-o", "route", "show"])
            .await
            .unwrap_or_default();
        for k in 0..MAX_NETWORKS {
            let third = net_base(&self.cfg) + k;
            if taken.contains(&k) || used.contains(&third) {
                continue;
            }
            let subnet = net_subnet(&self.cfg, k);
            let bridge = net_bridge(&self.cfg, k);
            let elsewhere = routes.lines().any(|l| {
                l.starts_with(&format!("{subnet} ")) && !l.contains(&format!(" dev {bridge} "))
            });
            if !elsewhere {
                return Ok(k);
            }
        }
        Err(Error::Quota(format!(
            "this daemon holds {MAX_NETWORKS} networks, all it has room for"
        )))
    }

    /// Removes private network `id` (no sandbox is on it): its bridge and
    /// its filter elements.
    pub async fn remove_network(&self, id: &str) -> Result<()> {
        let gone = self
            .nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(n) = gone {
            self.remove_bridge(&n.bridge, n.gateway).await;
        }
        Ok(())
    }

    async fn remove_bridge(&self, bridge: &str, gateway: Ipv4Addr) {
        let script = net_elements("delete", &table(&self.cfg), bridge, gateway);
        for line in script.lines() {
            let _ = nft(line).await;
        }
        if run("ip", &["link", "show", bridge]).await.is_ok() {
            if let Err(e) = run("ip", &["link", "del", bridge]).await {
                tracing::warn!("remove bridge {bridge}: {e}");
            }
        }
    }

    /// This daemon's network bridges on the host now: (index, name).
    fn net_bridges(&self) -> Vec<(u8, String)> {
        let prefix = net_prefix(&self.cfg);
        let Ok(rd) = std::fs::read_dir("/sys/class/net") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let k = name.strip_prefix(&prefix)?;
                let k = u8::from_str_radix(k, 16)
                    .ok()
                    .filter(|k| *k < MAX_NETWORKS)?;
                (net_bridge(&self.cfg, k) == name).then_some((k, name))
            })
            .collect()
    }

    /// The network `id` as a slot records it.
    fn slot_network(&self, id: &str) -> Result<SlotNetwork> {
        let n = self
            .nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("network {id} is not set up on this host")))?;
        Ok(SlotNetwork {
            id: id.to_string(),
            bridge: n.bridge,
            gateway: n.gateway,
        })
    }

    /// A namespace wired to private network `id` (never pooled: its
    /// bridge and addresses are the network's).
    pub async fn take_on(&self, id: &str) -> Result<Slot> {
        let network = self.slot_network(id)?;
        let mut slot = self.make_slot(false, Some(network)).await?;
        slot.rx_base = slot.counter("rx_bytes");
        slot.tx_base = slot.counter("tx_bytes");
        Ok(slot)
    }

    /// The gateway address of a sandbox's slot: its network's, or the
    /// default bridge's.
    pub fn gateway_of(&self, s: &Slot) -> Ipv4Addr {
        s.network.as_ref().map_or(self.cfg.gateway, |n| n.gateway)
    }

    /// Names of this daemon's namespaces start with its bridge's name.
    fn prefix(&self) -> String {
        format!("{}-", self.cfg.bridge)
    }

    /// A wired namespace: from the pool when it has one, else made now.
    /// Call [`Network::refill`] once the sandbox is up.
    pub async fn take(&self) -> Result<Slot> {
        let pooled = loop {
            let s = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match s {
                Some(s) if !s.path().exists() => {
                    tracing::warn!(netns = %s.netns, "pooled network namespace vanished");
                    self.destroy(&s).await;
                }
                other => break other,
            }
        };
        let mut slot = match pooled {
            Some(s) => s,
            None => self.make_slot(false, None).await?,
        };
        slot.rx_base = slot.counter("rx_bytes");
        slot.tx_base = slot.counter("tx_bytes");
        Ok(slot)
    }

    /// Takes back the namespace of a destroyed sandbox (its processes are
    /// gone) for the next one: removing a namespace is costly kernel work
    /// that slows down the creates around it. Sandboxes hold no
    /// CAP_NET_ADMIN and /proc/sys is read-only to them, so they cannot
    /// have changed its interfaces, addresses, routes or sysctls.
    pub async fn recycle(&self, mut s: Slot) {
        if s.host_gateway && self.deny_host_gateway(&s).await.is_ok() {
            s.host_gateway = false;
        }
        // A network's slot is its network's: never pooled.
        let keep = !self.closed.load(std::sync::atomic::Ordering::SeqCst)
            && s.network.is_none()
            && s.path().exists()
            && {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                // Only namespaces this process made: one left from before a
                // restart goes, with the rest of its sandbox.
                let ours = self
                    .made
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&s.netns);
                if ours && pool.len() < self.pool_size * 2 {
                    pool.push(s.clone());
                    true
                } else {
                    false
                }
            };
        if !keep {
            self.destroy(&s).await;
        }
    }

    /// Lets the sandbox of `s` reach the gateway address (it asked for
    /// `host-gateway`); recorded in the slot, undone when it goes.
    pub async fn allow_host_gateway(&self, s: &mut Slot) -> Result<()> {
        nft(&format!(
            "add element inet {} host_gateway {{ {} }}\n",
            table(&self.cfg),
            s.ip
        ))
        .await?;
        s.host_gateway = true;
        Ok(())
    }

    async fn deny_host_gateway(&self, s: &Slot) -> Result<()> {
        nft(&format!(
            "delete element inet {} host_gateway {{ {} }}\n",
            table(&self.cfg),
            s.ip
        ))
        .await
        .map(|_| ())
    }

    async fn make_slot(&self, background: bool, network: Option<SlotNetwork>) -> Result<Slot> {
        let tag: String = format!("{:012x}", rand_u64() & 0xffff_ffff_ffff);
        let netns = format!("{}{tag}", self.prefix());
        let ids = match self.cfg.userns {
            true => Some(self.claims.claim(&netns)?),
            false => None,
        };
        let ip = match self.allocate(network.as_ref()) {
            Ok(ip) => ip,
            Err(e) => {
                if let Some(r) = ids {
                    self.claims.release(r, &netns);
                }
                return Err(e);
            }
        };
        let slot = Slot {
            netns,
            veth: format!("pv{tag}"),
            ip,
            rx_base: 0,
            tx_base: 0,
            mac: Some(mac_text(mac_for(ip))),
            host_gateway: false,
            ids,
            network,
        };
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot.netns.clone());
        // Pinned before the port exists: no frame passes unchecked.
        let pinned = nft(&Pin::of(&slot).elements("add", &table(&self.cfg))).await;
        if let Err(e) = match pinned {
            Ok(_) => self.wire(&slot, background).await,
            Err(e) => Err(e),
        } {
            self.destroy(&slot).await;
            return Err(e);
        }
        Ok(slot)
    }

    async fn wire(&self, s: &Slot, background: bool) -> Result<()> {
        let s = s.clone();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            crate::netlink::create(
                &match &s.network {
                    None => crate::netlink::Wiring {
                        netns: &s.netns,
                        veth: &s.veth,
                        bridge: &cfg.bridge,
                        ip: s.ip,
                        mac: mac_for(s.ip),
                        prefix_len: 16,
                        gateway: cfg.gateway,
                        ids: s.ids,
                        isolated: true,
                    },
                    // Its ports reach each other: not isolated.
                    Some(n) => crate::netlink::Wiring {
                        netns: &s.netns,
                        veth: &s.veth,
                        bridge: &n.bridge,
                        ip: s.ip,
                        mac: mac_for(s.ip),
                        prefix_len: 24,
                        gateway: n.gateway,
                        ids: s.ids,
                        isolated: false,
                    },
                },
                background,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("network namespace: {e}")))?
    }

    /// Removes the namespace (which takes its veth pair with it).
    pub async fn destroy(&self, s: &Slot) {
        if s.path().exists() {
            if let Err(e) = crate::netlink::remove(&s.netns) {
                tracing::warn!("{e}");
            }
        }
        if std::path::Path::new("/sys/class/net")
            .join(&s.veth)
            .exists()
        {
            let _ = run("ip", &["link", "del", &s.veth]).await;
        }
        // Its address goes to another sandbox next: what this one was
        // allowed goes first, on its own (a failure below must not keep it).
        if s.host_gateway {
            if let Err(e) = self.deny_host_gateway(s).await {
                tracing::warn!(ip = %s.ip, "host-gateway access: {e}");
            }
        }
        let script = Pin::of(s).elements("delete", &table(&self.cfg));
        if nft(&script).await.is_err() {
            // One element missing fails the transaction: each on its own.
            for line in script.lines() {
                let _ = nft(line).await;
            }
        }
        self.release(s.ip);
        if let Some(r) = s.ids {
            self.claims.release(r, &s.netns);
        }
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&s.netns);
    }

    /// Removes this daemon's namespaces that are neither in `keep` nor made
    /// by this process (left by a crash).
    pub async fn gc(&self, keep: &[String]) -> usize {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut n = 0;
        let Ok(rd) = std::fs::read_dir(crate::netlink::NETNS_DIR) else {
            return 0;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // This daemon's names: its prefix and 12 hex digits (bridge
            // `pd` does not take bridge `pd-x`'s namespaces).
            let ours = name
                .strip_prefix(&self.prefix())
                .is_some_and(|t| t.len() == 12 && t.bytes().all(|b| b.is_ascii_hexdigit()));
            if ours
                && !keep.contains(&name)
                && !made.contains(&name)
                && crate::netlink::remove(&name).is_ok()
            {
                n += 1;
            }
        }
        let mut held: Vec<String> = made.into_iter().collect();
        held.extend(keep.iter().cloned());
        n += self.claims.gc(&self.prefix(), &held);
        // Bridges of networks no record names (the engine set up those it
        // knows before this).
        let known: HashSet<String> = self
            .nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|n| n.bridge.clone())
            .collect();
        for (k, bridge) in self.net_bridges() {
            if !known.contains(&bridge) {
                self.remove_bridge(&bridge, net_gateway(&self.cfg, k)).await;
                n += 1;
            }
        }
        n
    }

    /// Removes what `init` set up on the host, once no sandbox uses it
    /// (`paddock serve --cleanup`): the NAT and forwarding rules, the
    /// filters and the bridge. The host's `ip_forward` is left as it is
    /// (what it was before is not known).
    pub async fn teardown(&self) {
        let t = table(&self.cfg);
        for family in ["bridge", "inet"] {
            // `add` first: deleting a table that is not there fails.
            let script = format!("add table {family} {t}\ndelete table {family} {t}\n");
            if let Err(e) = nft(&script).await {
                tracing::warn!("remove nftables table {family} {t}: {e}");
            }
        }
        for (table, rule) in rules(&self.cfg) {
            // As often as it is there (an earlier daemon may have added it
            // again); a bounded number of times.
            for _ in 0..8 {
                if iptables("-D", table, &rule).await.is_err() {
                    break;
                }
            }
        }
        let b = self.cfg.bridge.as_str();
        if run("ip", &["link", "show", b]).await.is_ok() {
            if let Err(e) = run("ip", &["link", "del", b]).await {
                tracing::warn!("remove bridge {b}: {e}");
            }
        }
        for (_, bridge) in self.net_bridges() {
            if let Err(e) = run("ip", &["link", "del", &bridge]).await {
                tracing::warn!("remove bridge {bridge}: {e}");
            }
        }
    }

    /// Empties the pool (when the daemon stops for good, or `--cleanup`).
    pub async fn drain(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.refill.notify_one();
        // A namespace being wired is destroyed by the refill once done.
        let _wiring = self.wiring.lock().await;
        let slots: Vec<Slot> =
            std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        for s in slots {
            self.destroy(&s).await;
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

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_named_after_the_bridge_and_pin_known_addresses() {
        let ip = Ipv4Addr::new(10, 88, 1, 2);
        assert_eq!(mac_text(mac_for(ip)), "02:50:0a:58:01:02");
        let cfg = NetConfig {
            bridge: "pd-t.1".into(),
            host_ports: vec![8080],
            ..Default::default()
        };
        assert_eq!(table(&cfg), "paddock_pd_t_1");
        let slot = Slot {
            netns: "pd-t.1-x".into(),
            veth: "pvx".into(),
            ip,
            rx_base: 0,
            tx_base: 0,
            mac: None,
            host_gateway: true,
            ids: None,
            network: None,
        };
        assert_eq!(net_bridge(&cfg, 5), "pd-t.1-n05");
        let on = Slot {
            veth: "pvy".into(),
            ip: Ipv4Addr::new(10, 88, 133, 2),
            host_gateway: false,
            network: Some(SlotNetwork {
                id: "net-x".into(),
                bridge: net_bridge(&cfg, 5),
                gateway: net_gateway(&cfg, 5),
            }),
            ..slot.clone()
        };
        let rules = ruleset(
            &cfg,
            &[Ipv4Addr::new(10, 0, 0, 53)],
            &[Pin::of(&slot), Pin::of(&on)],
        );
        for want in [
            "elements = { 10.0.0.53 }",
            "elements = { 8080 }",
            "elements = { 10.88.1.2 }",
            "iifname \"pd-t.1\" oifname \"pd-t.1\" counter drop",
            "add element bridge paddock_pd_t_1 macs { \"pvx\" . 02:50:0a:58:01:02 }",
            "iifname != \"pd-t.1\" iifname != \"pd-t.1-n*\" accept",
            "iifname \"pd-t.1-n*\" oifname \"pd-t.1-n*\" counter drop",
            "add element inet paddock_pd_t_1 same { \"pd-t.1-n05\" . \"pd-t.1-n05\" }",
            "add element inet paddock_pd_t_1 gateways { \"pd-t.1-n05\" . 10.88.133.1 }",
        ] {
            assert!(rules.contains(want), "{want} missing from {rules}");
        }
    }

    #[test]
    fn network_subnets_and_bridges_stay_out_of_the_default_range_and_ifnamsiz() {
        let cfg = NetConfig {
            bridge: "a-fifteen-chars".into(),
            gateway: Ipv4Addr::new(10, 120, 0, 1),
            ..Default::default()
        };
        assert_eq!(net_subnet(&cfg, 0), "10.120.128.0/24");
        assert_eq!(net_subnet(&cfg, 127), "10.120.255.0/24");
        assert_eq!(net_gateway(&cfg, 3), Ipv4Addr::new(10, 120, 131, 1));
        for k in [0, 0x7f] {
            let b = net_bridge(&cfg, k);
            assert!(b.len() <= 15, "{b}");
            assert!(
                b.starts_with("a-f") && b.ends_with(&format!("-n{k:02x}")),
                "{b}"
            );
        }
        // A gateway in the upper half: networks take the lower one.
        let up = NetConfig {
            gateway: Ipv4Addr::new(10, 120, 200, 1),
            ..cfg
        };
        assert_eq!(net_subnet(&up, 0), "10.120.0.0/24");
    }
}
