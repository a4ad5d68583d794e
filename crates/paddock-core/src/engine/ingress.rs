//! The ingress's rules: sandboxes' proxies (published ports, by name),
//! external domains bound to sandboxes, and which sandbox and port a
//! request's `Host` reaches. The listener (TLS, forwarding) is the
//! daemon's; it asks [`Engine::ingress_route`] and
//! [`Engine::ingress_target`] and knows nothing of the store.
//!
//! Host names under the zone:
//! - `<name>.<box>.<zone>`: the proxy `name` of the sandbox;
//! - `<box>.<zone>`: its default proxy;
//! - `<port>-<id>.<zone>` (E2B's form): any port, for the owner's bearer only;
//!
//! where `<box>` is the sandbox's id, or the host label its key claimed
//! (`model::key_host_label`: claimed daemon-wide by the first live
//! sandbox with that key, `store::put_sandbox`, and never an id or the
//! `<port>-<id>` form, so no key reaches another principal's sandbox). A
//! bound domain reaches its sandbox's default proxy (without one, the
//! lowest port it listens on). Any other host is not the ingress's.

use super::*;

/// The most proxies a sandbox has, and domains a principal binds.
pub const MAX_PROXIES: usize = 64;
pub const MAX_DOMAINS: usize = 256;

/// Where the ingress listens, once it does (`Engine::set_ingress`).
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Lowercase, without a trailing dot (`paddock.localhost`).
    pub zone: String,
    /// The port clients reach it on (443 and 80 are left out of URLs).
    pub port: u16,
    /// `https`, or `http` for an ingress without TLS.
    pub scheme: &'static str,
    /// Paddock's CA, PEM, when the ingress's certificates are its own:
    /// what clients trust.
    pub ca_pem: Option<String>,
}

impl IngressConfig {
    /// `<scheme>://<host>[:port]`, the scheme's own port left out.
    pub fn url(&self, host: &str) -> String {
        match (self.scheme, self.port) {
            ("https", 443) | ("http", 80) => format!("{}://{host}", self.scheme),
            (s, p) => format!("{s}://{host}:{p}"),
        }
    }
}

/// What a `Host` routes to.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressRoute {
    pub sandbox: Uuid,
    /// `""` for a `<port>-<id>` whose sandbox is not there (nobody's).
    pub owner: String,
    /// 0: the lowest port the sandbox listens on.
    pub port: u16,
    /// Reaches any port: only the owner's bearer may use it, and the
    /// bearer does not go on to the sandbox.
    pub needs_owner: bool,
}

impl Engine {
    /// Turns the ingress's URLs on (`proxy_host`, `ingress_url`).
    pub fn set_ingress(&self, cfg: IngressConfig) {
        let _ = self.ingress.set(IngressConfig {
            zone: cfg.zone.trim_end_matches('.').to_ascii_lowercase(),
            ..cfg
        });
    }

    pub fn ingress_config(&self) -> Option<&IngressConfig> {
        self.ingress.get()
    }

    /// A live sandbox of `p`'s, for the ingress's calls.
    fn ingress_sandbox(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let sb = self.get(p, id)?;
        if sb.state == State::Destroyed {
            return Err(Error::not_found(format!("sandbox {id}")));
        }
        Ok(sb)
    }

    /// The sandbox's proxies, the default first.
    pub fn proxies(&self, p: &Principal, id: Uuid) -> Result<Vec<Proxy>> {
        self.ingress_sandbox(p, id)?;
        self.store.proxies(id)
    }

    /// Makes a proxy: `Exists` when the sandbox has one of that name. The
    /// name is a DNS label (`""` or `default`: the default proxy); port 0
    /// is the lowest port the sandbox listens on at each request.
    pub async fn create_proxy(
        &self,
        p: &Principal,
        id: Uuid,
        name: &str,
        port: u16,
    ) -> Result<Proxy> {
        let detail = serde_json::json!({ "name": name, "port": port });
        self.audited_sync(p, "proxy.create", Some(id), detail, || {
            self.put_proxy(p, id, name, port, false)
        })
    }

    /// Points a proxy at another port (`""`: the default proxy, made when
    /// missing; another name must exist).
    pub async fn set_proxy_port(
        &self,
        p: &Principal,
        id: Uuid,
        name: &str,
        port: u16,
    ) -> Result<Proxy> {
        let detail = serde_json::json!({ "name": name, "port": port });
        self.audited_sync(p, "proxy.set_port", Some(id), detail, || {
            self.put_proxy(p, id, name, port, true)
        })
    }

    fn put_proxy(
        &self,
        p: &Principal,
        id: Uuid,
        name: &str,
        port: u16,
        replace: bool,
    ) -> Result<Proxy> {
        let name = proxy_name("name", name)?;
        self.store.tx(|tx| {
            let sb = Store::sandbox_in(tx, id)?;
            if sb.owner != p.id || sb.state == State::Destroyed {
                return Err(Error::not_found(format!("sandbox {id}")));
            }
            let existing: Option<i64> = tx
                .prepare_cached("SELECT created_at FROM proxies WHERE sandbox = ?1 AND name = ?2")?
                .query_row(rusqlite::params![id.to_string(), name], |r| r.get(0))
                .optional()?;
            if replace && existing.is_none() && !name.is_empty() {
                return Err(Error::not_found(format!("proxy {name:?} of sandbox {id}")));
            }
            if existing.is_none() && Store::count_proxies(tx, id)? >= MAX_PROXIES {
                return Err(Error::Quota(format!(
                    "a sandbox has at most {MAX_PROXIES} proxies"
                )));
            }
            let proxy = Proxy {
                sandbox: id,
                name: name.clone(),
                port,
                created_at: existing
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .unwrap_or_else(Utc::now),
            };
            Store::put_proxy(tx, &proxy, replace)?;
            Ok(proxy)
        })
    }

    pub async fn delete_proxy(&self, p: &Principal, id: Uuid, name: &str) -> Result<()> {
        let detail = serde_json::json!({ "name": name });
        self.audited_sync(p, "proxy.delete", Some(id), detail, || {
            let name = proxy_name("name", name)?;
            self.ingress_sandbox(p, id)?;
            match self.store.delete_proxy(id, &name)? {
                true => Ok(()),
                false => Err(Error::not_found(match name.as_str() {
                    "" => format!("the default proxy of sandbox {id}"),
                    n => format!("proxy {n:?} of sandbox {id}"),
                })),
            }
        })
    }

    /// Binds an external domain to one of `p`'s sandboxes: `Exists` when
    /// it is bound, to anyone. A name under the ingress's zone is the
    /// zone's, never a binding.
    pub async fn bind_domain(
        &self,
        p: &Principal,
        domain: &str,
        id: Uuid,
    ) -> Result<DomainBinding> {
        let detail = serde_json::json!({ "domain": domain });
        self.audited_sync(p, "domain.bind", Some(id), detail, || {
            let domain = normalize_domain("domain", domain)?;
            if let Some(cfg) = self.ingress.get() {
                if in_zone(&domain, &cfg.zone).is_some() {
                    return Err(Error::invalid(
                        "domain",
                        format!(
                            "{domain:?} is under the ingress's zone {}, whose names are the sandboxes'",
                            cfg.zone
                        ),
                    ));
                }
            }
            let b = DomainBinding {
                domain,
                sandbox: id,
                owner: p.id.clone(),
                created_at: Utc::now(),
            };
            self.store.tx(|tx| {
                let sb = Store::sandbox_in(tx, id)?;
                if sb.owner != p.id || sb.state == State::Destroyed {
                    return Err(Error::not_found(format!("sandbox {id}")));
                }
                if Store::count_domains(tx, &p.id)? >= MAX_DOMAINS {
                    return Err(Error::Quota(format!(
                        "a principal binds at most {MAX_DOMAINS} domains"
                    )));
                }
                Store::insert_domain(tx, &b)
            })?;
            Ok(b)
        })
    }

    /// Unbinds one of `p`'s domains (someone else's is not found).
    pub async fn unbind_domain(&self, p: &Principal, domain: &str) -> Result<()> {
        let detail = serde_json::json!({ "domain": domain });
        self.audited_sync(p, "domain.unbind", None, detail, || {
            let d = normalize_domain("domain", domain)?;
            match self.store.delete_domain(&p.id, &d)? {
                true => Ok(()),
                false => Err(Error::not_found(format!("domain {d}"))),
            }
        })
    }

    /// `p`'s bound domains, by name.
    pub fn domains(&self, p: &Principal) -> Result<Vec<DomainBinding>> {
        self.store.domains(&p.id)
    }

    /// The label that names `sb` in host names: the one its key claimed,
    /// else its id.
    fn box_label(&self, sb: &Sandbox) -> String {
        match self.store.host_name_of(sb.id) {
            Ok(Some(l)) => l,
            _ => sb.id.to_string(),
        }
    }

    /// `<proxy>.<box>.<zone>` (`<box>.<zone>` for the default proxy),
    /// while the ingress is on.
    pub fn proxy_host(&self, sb: &Sandbox, proxy: &str) -> Option<String> {
        let cfg = self.ingress.get()?;
        let b = self.box_label(sb);
        Some(match proxy {
            "" | "default" => format!("{b}.{}", cfg.zone),
            n => format!("{n}.{b}.{}", cfg.zone),
        })
    }

    /// `https://<host>[:port]` of a proxy, while the ingress is on.
    pub fn ingress_url(&self, sb: &Sandbox, proxy: &str) -> Option<String> {
        let host = self.proxy_host(sb, proxy)?;
        Some(self.ingress.get()?.url(&host))
    }

    /// `https://<port>-<id>.<zone>[:port]`: any port of the sandbox, for
    /// its owner's bearer.
    pub fn ingress_port_url(&self, sb: &Sandbox, port: u16) -> Option<String> {
        let cfg = self.ingress.get()?;
        Some(cfg.url(&format!("{port}-{}.{}", sb.id, cfg.zone)))
    }

    /// What a request's `Host` (a port after it is ignored) routes to:
    /// `Ok(None)` for a host that is not the ingress's (outside its zone
    /// and no bound domain: an address, DNS rebinding), which must be
    /// refused before anything else; `NotFound` for a name in the zone
    /// that reaches nothing.
    pub fn ingress_route(&self, host: &str) -> Result<Option<IngressRoute>> {
        let Some(cfg) = self.ingress.get() else {
            return Ok(None);
        };
        let Some(host) = host_name(host) else {
            return Ok(None);
        };
        let nf = || Error::not_found(format!("host {host}"));
        let Some(rest) = in_zone(&host, &cfg.zone) else {
            // A bound domain: its sandbox's default proxy, or its lowest
            // listening port.
            let Some(b) = self.store.domain(&host)? else {
                return Ok(None);
            };
            let port = self.store.proxy(b.sandbox, "")?.map_or(0, |p| p.port);
            return Ok(Some(IngressRoute {
                sandbox: b.sandbox,
                owner: b.owner,
                port,
                needs_owner: false,
            }));
        };
        let labels: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('.').collect()
        };
        let (name, label) = match labels.as_slice() {
            [l] => ("", *l),
            [n, l] => (*n, *l),
            _ => return Err(nf()),
        };
        if name.is_empty() {
            if let Some((port, id)) = port_id_label(label) {
                // A sandbox that is not there is a route nobody owns:
                // `ingress_authorize` refuses it as it refuses another
                // principal's, so that nobody learns which ids exist.
                let owner = match self.store.get_sandbox(id)? {
                    Some(sb) if sb.state != State::Destroyed => sb.owner,
                    _ => String::new(),
                };
                return Ok(Some(IngressRoute {
                    sandbox: id,
                    owner,
                    port,
                    needs_owner: true,
                }));
            }
        }
        let id = match Uuid::parse_str(label) {
            Ok(id) => id,
            Err(_) => self.store.host_name(label)?.ok_or_else(nf)?,
        };
        let sb = self.store.get_sandbox(id)?.ok_or_else(nf)?;
        if sb.state == State::Destroyed {
            return Err(nf());
        }
        let name = proxy_name("host", name).map_err(|_| nf())?;
        let proxy = self.store.proxy(id, &name)?.ok_or_else(nf)?;
        Ok(Some(IngressRoute {
            sandbox: id,
            owner: sb.owner,
            port: proxy.port,
            needs_owner: false,
        }))
    }

    /// Whether a request with this bearer (`Authorization: Bearer`'s
    /// token) may take the route: any for a published one; for the
    /// `<port>-<id>` form only the owner's (an API key or a token
    /// `authenticate` accepts). Without a bearer: `Unauthenticated`;
    /// another principal's: `NotFound`, as for a sandbox that is not
    /// there, so that nobody learns which ids exist.
    pub async fn ingress_authorize(&self, r: &IngressRoute, bearer: Option<&str>) -> Result<()> {
        if !r.needs_owner {
            return Ok(());
        }
        let Some(token) = bearer else {
            return Err(Error::Unauthenticated(
                "a port of a sandbox by its id needs its owner's bearer token".into(),
            ));
        };
        let p = self.authenticate(token).await?;
        if r.owner.is_empty() || p.id != r.owner {
            return Err(Error::not_found("host"));
        }
        // A token narrower than its principal: only its sandboxes, and
        // not when it is read-only (a request to a port may change
        // anything).
        if let Some(s) = &p.scope {
            if !s.allows_sandbox(r.sandbox) {
                return Err(Error::not_found("host"));
            }
        }
        self.check_scope(&p, "sandbox.proxy", Some(r.sandbox))
    }

    /// Where a route's request goes: its port, or (0) the lowest port the
    /// sandbox listens on. A sandbox that wakes on request is woken, as
    /// for the path proxy.
    pub async fn ingress_target(&self, r: &IngressRoute) -> Result<SocketAddr> {
        let owner = Principal::new(r.owner.clone()).via("ingress");
        if r.port != 0 {
            return self.proxy_target(&owner, r.sandbox, r.port).await;
        }
        let sb = self.get(&owner, r.sandbox)?;
        let woke = sb.config.wake_on_request && matches!(sb.state, State::Stopped | State::Paused);
        if woke {
            match sb.state {
                State::Stopped => self.start(&owner, r.sandbox).await?,
                _ => self.resume(&owner, r.sandbox).await?,
            };
        }
        // A woken sandbox's server may take a while to listen.
        let until = tokio::time::Instant::now()
            + if woke {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            };
        loop {
            let lowest = self
                .ports(&owner, r.sandbox)
                .await?
                .into_iter()
                .filter(|p| p.listening && p.protocol == "tcp")
                .map(|p| p.port)
                .min();
            if let Some(port) = lowest {
                return self.proxy_target(&owner, r.sandbox, port).await;
            }
            if tokio::time::Instant::now() >= until {
                return Err(Error::Unavailable {
                    what: format!("sandbox {}", r.sandbox),
                    reason: "it listens on no TCP port".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A `Host` header's name: lowercase, without a port or a trailing dot;
/// `None` for an IPv6 literal or one that is no host name.
pub fn host_name(host: &str) -> Option<String> {
    if host.starts_with('[') {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        Some(_) => return None,
        None => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 || !name.split('.').all(is_dns_label) {
        return None;
    }
    Some(name)
}

/// What comes before `.<zone>` in `host` (`""` for the zone itself), if
/// it is in the zone.
fn in_zone<'a>(host: &'a str, zone: &str) -> Option<&'a str> {
    if host == zone {
        return Some("");
    }
    host.strip_suffix(zone)?.strip_suffix('.')
}

use rusqlite::OptionalExtension;
