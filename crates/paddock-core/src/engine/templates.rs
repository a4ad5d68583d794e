//! Templates: stored specs whose fields fill in what a create leaves out.

use super::*;

impl Engine {
    /// Stores a template: its defaults are validated as a sandbox spec
    /// would be, and its image is pulled now, so that creates from it find
    /// the image cached.
    pub async fn create_template(
        &self,
        p: &Principal,
        name: &str,
        defaults: SandboxSpec,
        warm_pool: usize,
    ) -> Result<Template> {
        self.audited(
            p,
            "template.create",
            None,
            serde_json::json!({"template": name}),
            async move {
            crate::model::validate_template_name(name)?;
            if warm_pool > crate::model::MAX_TEMPLATE_POOL {
                return Err(Error::invalid(
                    "warm_pool",
                    format!("at most {}", crate::model::MAX_TEMPLATE_POOL),
                ));
            }
            if defaults.key.is_some() {
                return Err(Error::invalid("key", "a template has no idempotency key"));
            }
            if defaults.template.is_some() {
                return Err(Error::invalid("template", "a template cannot name another"));
            }
            // A warm pool's sandboxes are booted as the pool's, not as the
            // template's owner: nothing of an owner's (snapshots, volumes, a
            // snapshot policy's files) may be looked up for them.
            if warm_pool > 0 && owns_things(&defaults) {
                return Err(Error::invalid(
                    "warm_pool",
                    "a template that starts from a snapshot, mounts volumes or has a snapshot policy \
                     cannot keep a warm pool",
                ));
            }
            // A pool refills one sandbox at a time: a bootstrap would hold
            // every pool's refill for as long as it runs.
            if warm_pool > 0 && defaults.bootstrap.is_some() {
                return Err(Error::invalid(
                    "warm_pool",
                    "a template with a bootstrap script cannot keep a warm pool",
                ));
            }
            // A pool's sandboxes are booted before any create is judged:
            // a principal the operator's policies hold keeps none.
            if warm_pool > 0 && !self.policies_for(p)?.is_empty() {
                return Err(Error::forbidden_field(
                    "warm_pool",
                    "the operator's policies hold you: your templates keep no warm pool",
                ));
            }
            let mut config = defaults.resolve(&self.cfg.limits)?;
            self.check_origins(&mut config.mounts)?;
            self.runtime(config.isolation)?;
            if self.store.get_template(&p.id, name)?.is_some() {
                return Err(Error::Exists(format!(
                    "a template named {name:?} already exists"
                )));
            }
            if warm_pool > 0 {
                let pooled: usize = self
                    .store
                    .list_templates(&p.id)?
                    .iter()
                    .map(|t| t.warm_pool)
                    .sum();
                if pooled + warm_pool > crate::model::MAX_POOLED_PER_OWNER {
                    return Err(Error::invalid(
                        "warm_pool",
                        format!(
                            "your templates keep {pooled} sandboxes pooled; at most {} in all",
                            crate::model::MAX_POOLED_PER_OWNER
                        ),
                    ));
                }
            }
            if let Some(reference) = &config.image {
                self.image_for(p, reference).await?;
            }
            let t = Template {
                name: name.to_string(),
                owner: p.id.clone(),
                description: None,
                defaults,
                warm_pool,
                created_at: Utc::now(),
            };
            self.store.insert_template(&t)?;
            if warm_pool > 0 {
                self.pools.refill.notify_one();
            }
            Ok(t)
        },
        )
        .await
    }

    /// `p`'s templates, and the operator's it has none of the same name
    /// of, by name.
    pub fn list_templates(&self, p: &Principal) -> Result<Vec<Template>> {
        let mut out = self.store.list_templates(&p.id)?;
        for t in &self.cfg.templates {
            if !out.iter().any(|o| o.name == t.name) {
                out.push(t.clone());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// `p`'s template of this name, else the operator's.
    pub fn get_template(&self, p: &Principal, name: &str) -> Result<Template> {
        self.template_for(p, name)?
            .ok_or_else(|| Error::not_found(format!("template {name:?}")))
    }

    pub async fn delete_template(&self, p: &Principal, name: &str) -> Result<()> {
        self.audited(
            p,
            "template.delete",
            None,
            serde_json::json!({"template": name}),
            async move {
                if self.store.delete_template(&p.id, name)? {
                    self.drain_template_pool(&p.id, name).await;
                    Ok(())
                } else {
                    Err(Error::not_found(format!("template {name:?}")))
                }
            },
        )
        .await
    }
}

/// Whether a spec names what belongs to its caller: a snapshot, volumes, a
/// snapshot policy.
pub(super) fn owns_things(spec: &SandboxSpec) -> bool {
    spec.from_snapshot.is_some()
        || !spec.volumes.is_empty()
        || spec.snapshot.is_some()
        || spec.network.is_some()
}
