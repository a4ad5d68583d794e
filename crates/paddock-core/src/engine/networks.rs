//! Private networks: a principal's default network (made on first use) and
//! the ones it makes, each a bridge and subnet of its own on the host (the
//! backend's, [`Runtime::ensure_network`]). A sandbox joins one at create
//! (`SandboxSpec::network`) and stays on it; its config records the
//! network's id. Who is on a network is read from the sandboxes' configs
//! (`Store::network_members`), so that no record can say a network is
//! empty while a sandbox is on it; a network is deleted only when none is.
//! A principal sees and uses only its own networks.
//!
//! Sandboxes on a network know each other by name (their id, hostname and
//! key): after a member comes or goes, every member is told the others
//! ([`Runtime::set_peers`]).

use super::*;
use crate::model::{validate_network_name, Network, DEFAULT_NETWORK, MAX_NETWORKS_PER_OWNER};
use crate::runtime::Peer;

impl Engine {
    /// The backend that keeps networks: the default container backend if it
    /// can, else the first (by name) that can.
    fn network_runtime(&self) -> Result<Arc<dyn Runtime>> {
        if let Ok(rt) = self.runtime(Isolation::Container) {
            if rt.capabilities().networks {
                return Ok(rt.clone());
            }
        }
        let mut names: Vec<&String> = self
            .runtimes
            .iter()
            .filter(|(_, r)| r.capabilities().networks)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names
            .first()
            .and_then(|n| self.runtimes.get(*n))
            .cloned()
            .ok_or_else(|| {
                Error::Unsupported("networks (no backend of this daemon has them)".into())
            })
    }

    /// `p`'s default network, made on first use (one per principal).
    pub async fn default_network(&self, p: &Principal) -> Result<Network> {
        if let Some(n) = self.store.default_network(&p.id)? {
            return Ok(n);
        }
        self.audited(
            p,
            "network.create",
            None,
            serde_json::json!({"default": true}),
            async move {
                let _one = self.networks.lock().await;
                if let Some(n) = self.store.default_network(&p.id)? {
                    return Ok(n);
                }
                self.make_network(p, None, true).await
            },
        )
        .await
    }

    /// Makes a private network for `p`; a name is unique per owner.
    pub async fn create_network(&self, p: &Principal, name: Option<&str>) -> Result<Network> {
        self.audited(
            p,
            "network.create",
            None,
            serde_json::json!({"network": name}),
            async move {
                if let Some(n) = name {
                    validate_network_name(n)?;
                }
                let _one = self.networks.lock().await;
                if let Some(n) = name {
                    if self.store.find_network(&p.id, n)?.is_some() {
                        return Err(Error::Exists(format!(
                            "a network named {n:?} already exists"
                        )));
                    }
                }
                self.make_network(p, name, false).await
            },
        )
        .await
    }

    /// Under `self.networks`: checks `p`'s count, sets the network up on
    /// the host, records it (and takes it down again if that fails).
    async fn make_network(
        &self,
        p: &Principal,
        name: Option<&str>,
        is_default: bool,
    ) -> Result<Network> {
        let have = self.store.list_networks(Some(&p.id))?.len();
        if have >= MAX_NETWORKS_PER_OWNER {
            return Err(Error::Quota(format!(
                "at most {MAX_NETWORKS_PER_OWNER} networks per principal (delete one first)"
            )));
        }
        let rt = self.network_runtime()?;
        let id = format!("net-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let subnet = rt.ensure_network(&id, None).await?;
        let n = Network {
            id: id.clone(),
            owner: p.id.clone(),
            name: name.map(String::from),
            subnet,
            status: "ready".into(),
            is_default,
            created_at: Utc::now(),
        };
        if let Err(e) = self.store.insert_network(&n) {
            if let Err(e) = rt.remove_network(&id).await {
                tracing::warn!(network = %id, "{e}");
            }
            return Err(e);
        }
        Ok(n)
    }

    /// `p`'s networks, oldest first.
    pub fn networks(&self, p: &Principal) -> Result<Vec<Network>> {
        self.store.list_networks(Some(&p.id))
    }

    /// One of `p`'s networks, by id or name (`default`: its default one,
    /// once made). Another principal's is not found.
    pub fn get_network(&self, p: &Principal, id_or_name: &str) -> Result<Network> {
        let found = if id_or_name == DEFAULT_NETWORK {
            self.store.default_network(&p.id)?
        } else {
            self.store.find_network(&p.id, id_or_name)?
        };
        found.ok_or_else(|| Error::not_found(format!("network {id_or_name}")))
    }

    /// Deletes one of `p`'s networks; 409 while a sandbox is on it.
    pub async fn delete_network(&self, p: &Principal, id_or_name: &str) -> Result<()> {
        self.audited(
            p,
            "network.delete",
            None,
            serde_json::json!({"network": id_or_name}),
            async move {
                let _one = self.networks.lock().await;
                let n = self.get_network(p, id_or_name)?;
                let members = self.store.delete_network(&n.id)?;
                if let Some(m) = members.first() {
                    return Err(Error::Conflict(format!(
                        "network {} has sandbox {} on it (destroy its sandboxes first)",
                        n.name.as_deref().unwrap_or(&n.id),
                        m.id
                    )));
                }
                // The record is gone: what the host keeps of it goes now, or
                // at the next start.
                if let Err(e) = self.network_runtime()?.remove_network(&n.id).await {
                    tracing::warn!(network = %n.id, "{e}");
                }
                Ok(())
            },
        )
        .await
    }

    /// The id of the network a create asks for: one of `p`'s (by id or
    /// name), or its default one (made now if need be), on `runtime`.
    pub(super) async fn resolve_network(
        &self,
        p: &Principal,
        name: &str,
        runtime: &dyn Runtime,
    ) -> Result<String> {
        let keeper = self.network_runtime()?;
        if !runtime.capabilities().networks || keeper.name() != runtime.name() {
            return Err(runtime.unsupported("networks"));
        }
        if name.is_empty() || name.contains('\0') || name.len() > 128 {
            return Err(Error::invalid(
                "network",
                "must name a network (its id or name, or \"default\")",
            ));
        }
        let n = if name == DEFAULT_NETWORK {
            self.default_network(p).await?
        } else {
            self.get_network(p, name)?
        };
        Ok(n.id)
    }

    /// Tells every sandbox on network `net` the names and addresses of the
    /// others (after one joined or left). One update at a time: the last
    /// to write read the latest members.
    pub(super) async fn refresh_peers(&self, net: &str) {
        let _one = self.peers.lock().await;
        let members = match self.store.tx(|tx| Store::network_members(tx, net)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(network = %net, "peers: {e}");
                return;
            }
        };
        let known: Vec<(Uuid, Peer)> = members
            .iter()
            .filter_map(|sb| {
                let ip = sb.ip.as_deref()?.parse().ok()?;
                let mut names = vec![sb.id.to_string()];
                names.extend(sb.key.clone());
                Some((sb.id, Peer { ip, names }))
            })
            .collect();
        for sb in members.iter().filter(|sb| sb.state != State::Creating) {
            let Ok(rt) = self.runtime_of(sb) else {
                continue;
            };
            let peers: Vec<Peer> = known
                .iter()
                .filter(|(id, _)| *id != sb.id)
                .map(|(_, p)| p.clone())
                .collect();
            if let Err(e) = rt.set_peers(sb.id, &peers).await {
                tracing::warn!(sandbox = %sb.id, network = %net, "peers: {e}");
            }
        }
    }

    /// Sets up again, after a restart, every network the store records
    /// (the host's rules rebuilt from them), and removes what the host
    /// keeps of networks no record names.
    pub(super) async fn recover_networks(&self) {
        let Ok(rt) = self.network_runtime() else {
            return;
        };
        let nets = match self.store.list_networks(None) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("networks: {e}");
                return;
            }
        };
        for n in &nets {
            if let Err(e) = rt.ensure_network(&n.id, Some(&n.subnet)).await {
                tracing::error!(network = %n.id, "not set up again: {e}");
            }
        }
    }
}
