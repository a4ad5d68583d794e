//! Images, through the [`Images`] port: pulls under the pull policy,
//! claims per principal, and what each caller may list, inspect or remove.

use super::*;

/// Which registries and repositories each principal may pull from, and
/// who may pull with the daemon's registry credentials. The operator (and
/// the warm pools it configures) pull anything, with the credentials,
/// unless listed in `principals`.
#[derive(Debug, Clone, Default)]
pub struct PullPolicy {
    /// Principal → globs over `registry/repository`
    /// (`127.0.0.1:5000/team/**`, `docker.io/library/*`).
    pub principals: HashMap<String, Vec<String>>,
    /// The globs of principals not listed; `None`: any registry and
    /// repository (an anonymous pull of a public image).
    pub default: Option<Vec<String>>,
    /// Principals besides the operator that may pull with the daemon's
    /// registry credentials.
    pub credentials: Vec<String>,
}

/// The port to the image store: resolves a reference to unpacked layers
/// and an image config, pulling it when needed.
#[async_trait::async_trait]
pub trait Images: Send + Sync {
    /// From the cache, else pulled.
    /// With `credentials`, the daemon's registry credentials may be used;
    /// without, a cached image that was pulled with them is pulled again
    /// anonymously, so that the registry decides.
    async fn resolve(&self, reference: &str, credentials: bool) -> Result<ResolvedImage>;
    /// Pulled again (only missing layers are downloaded), with the
    /// daemon's registry credentials or not, reporting progress to
    /// `progress` as it goes.
    async fn pull(
        &self,
        reference: &str,
        credentials: bool,
        progress: Option<ProgressFn>,
    ) -> Result<ImageInfo>;
    /// Where `reference` is pulled from (aliases followed), as
    /// `registry/repository`: what a pull policy judges.
    fn locate(&self, reference: &str) -> Result<String>;
    fn list(&self) -> Vec<ImageInfo>;
    /// The cached image of `reference`, without pulling.
    fn inspect(&self, reference: &str) -> Result<ImageInfo>;
    /// Forgets `reference` (its layers stay until a prune).
    fn remove(&self, reference: &str) -> Result<()>;
    /// Removes cached layers that no image and no path of `in_use` needs;
    /// returns how many.
    async fn prune(&self, in_use: &[String]) -> Result<usize>;
}

impl Engine {
    pub(super) fn images(&self) -> Result<&Arc<dyn Images>> {
        self.images.as_ref().ok_or_else(|| {
            Error::Unsupported("named images (this daemon has no image store)".into())
        })
    }

    /// Whether `p` may pull `reference` under the pull policy (a refusal
    /// names the image), and whether with the daemon's registry credentials.
    pub(super) fn pull_rights(&self, p: &Principal, reference: &str) -> Result<bool> {
        let privileged = p.is_operator() || p.id == pool::POOL_OWNER;
        let policy = &self.cfg.pull_policy;
        let globs = match policy.principals.get(&p.id) {
            Some(g) => Some(g),
            None if privileged => None,
            None => policy.default.as_ref(),
        };
        if let Some(globs) = globs {
            let from = self.images()?.locate(reference)?;
            if !globs.iter().any(|g| crate::model::glob_match(g, &from)) {
                return Err(Error::Forbidden(format!(
                    "image {reference}: the pull policy does not let {} pull from {from}",
                    p.id
                )));
            }
        }
        Ok(privileged || policy.credentials.contains(&p.id))
    }

    /// A registry's refusal of an anonymous pull, said as such.
    pub(super) fn refused(credentials: bool, e: Error) -> Error {
        match e {
            Error::Forbidden(why) if !credentials => Error::Forbidden(format!(
                "{why} (pulled anonymously: the daemon's registry credentials are the operator's)"
            )),
            e => e,
        }
    }

    /// The image `p` creates a sandbox or a template from: pulled on its
    /// behalf (the policy judges it; the cache serves it only as `p` could
    /// have pulled it) and claimed by it.
    pub(super) async fn image_for(&self, p: &Principal, reference: &str) -> Result<ResolvedImage> {
        let credentials = self.pull_rights(p, reference)?;
        let img = self
            .images()?
            .resolve(reference, credentials)
            .await
            .map_err(|e| Self::refused(credentials, e))?;
        self.store.claim_image(&p.id, reference)?;
        Ok(img)
    }

    pub async fn pull_image(
        &self,
        p: &Principal,
        reference: &str,
        progress: Option<ProgressFn>,
    ) -> Result<ImageInfo> {
        self.audited(
            p,
            "image.pull",
            None,
            serde_json::json!({"image": reference}),
            async move {
                if reference.trim().is_empty() {
                    return Err(Error::invalid("reference", "must not be empty"));
                }
                let credentials = self.pull_rights(p, reference)?;
                let info = self
                    .images()?
                    .pull(reference, credentials, progress)
                    .await
                    .map_err(|e| Self::refused(credentials, e))?;
                self.store.claim_image(&p.id, reference)?;
                Ok(info)
            },
        )
        .await
    }

    /// The images `p` pulled (every cached one for the operator).
    pub fn list_images(&self, p: &Principal) -> Result<Vec<ImageInfo>> {
        let all = self.images()?.list();
        if p.is_operator() {
            return Ok(all);
        }
        let mine: std::collections::HashSet<String> =
            self.store.images_of(&p.id)?.into_iter().collect();
        Ok(all
            .into_iter()
            .filter(|i| mine.contains(&i.reference))
            .collect())
    }

    pub fn inspect_image(&self, p: &Principal, reference: &str) -> Result<ImageInfo> {
        if !p.is_operator() && !self.store.holds_image(&p.id, reference)? {
            return Err(Error::not_found(format!("image {reference} in the cache")));
        }
        self.images()?.inspect(reference)
    }

    /// Drops `p`'s claim on an image; the cache entry goes with the last
    /// claim (a sandbox standing on its layers keeps them: a prune never
    /// removes those). The operator's removal drops every claim.
    pub fn remove_image(&self, p: &Principal, reference: &str) -> Result<()> {
        self.audited_sync(
            p,
            "image.remove",
            None,
            serde_json::json!({"image": reference}),
            || {
                if p.is_operator() {
                    self.store.release_image(None, reference)?;
                    return self.images()?.remove(reference);
                }
                let (held, left) = self.store.release_image(Some(&p.id), reference)?;
                if !held {
                    return Err(Error::not_found(format!("image {reference} in the cache")));
                }
                if left == 0 {
                    match self.images()?.remove(reference) {
                        Err(Error::NotFound { .. }) | Ok(()) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            },
        )
    }

    /// Removes unused cached layers; never one a sandbox that still has a
    /// filesystem (running, paused or stopped) stands on. The operator's.
    pub async fn prune_images(&self, p: &Principal) -> Result<usize> {
        self.audited(
            p,
            "image.prune",
            None,
            serde_json::Value::Null,
            async move {
                if !p.is_operator() {
                    return Err(Error::Forbidden(
                        "pruning the image cache is the operator's".into(),
                    ));
                }
                // Snapshots lie on their images' layers: kept while they are.
                let snapshots = self
                    .store
                    .list_snapshots(None)?
                    .into_iter()
                    .map(|s| s.config);
                let in_use: Vec<String> = self
                    .store
                    .live_sandboxes()?
                    .into_iter()
                    .map(|sb| sb.config)
                    .chain(snapshots)
                    .filter_map(|c| c.resolved_image)
                    .flat_map(|img| img.layers)
                    .collect();
                self.images()?.prune(&in_use).await
            },
        )
        .await
    }
}
