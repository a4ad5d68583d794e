//! Governance policies: which templates a principal (or a group it is in)
//! may use, how many sandboxes it may hold at once, and the most each may
//! ask for. The operator writes them in the settings file or through the
//! native API; the engine evaluates them at every create and fork, for
//! every dialect, and answers [`Error::PolicyViolation`] with one
//! [`Violation`] per rule broken.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result, Violation};
use crate::model::{Principal, SandboxConfig};

/// One policy. It applies to a principal whose id one of `principals`
/// matches, or that is in a group one of `groups` matches (globs: `*`,
/// `?`, `**`); every rule it has must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The templates a create may name (globs); absent: any. A create
    /// naming none breaks a policy that lists templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<Vec<String>>,
    /// Sandboxes held at once (every state but `error` and `destroyed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sandboxes: Option<u32>,
    /// The longest TTL; a create that asks for none gets this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_mb: Option<i64>,
}

/// Whether `s` matches `pattern`, where `*` is any run of characters
/// (`/` and `:` too: principal ids and group names are not paths) and `?`
/// any one. Linear in `s` times the pattern's stars at worst.
pub fn wildcard(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// Where a policy comes from: the settings file's cannot be changed
/// through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    Config,
    Api,
}

impl Policy {
    pub fn validate(&self) -> Result<()> {
        crate::model::validate_template_name(&self.name).map_err(|_| {
            Error::invalid(
                "name",
                "1-64 of A-Z a-z 0-9 _ . - (a letter or digit first)",
            )
        })?;
        if self.principals.is_empty() && self.groups.is_empty() {
            return Err(Error::invalid(
                "principals",
                "name the principals or groups the policy applies to (`*`: everyone)",
            ));
        }
        for (field, globs) in [
            ("principals", &self.principals),
            ("groups", &self.groups),
            ("templates", self.templates.as_ref().unwrap_or(&Vec::new())),
        ] {
            if globs.len() > 256 {
                return Err(Error::invalid(field, "at most 256 entries"));
            }
            for (i, g) in globs.iter().enumerate() {
                if g.is_empty() || g.len() > 256 || g.contains('\0') {
                    return Err(Error::invalid(
                        format!("{field}[{i}]"),
                        "a pattern of 1-256 bytes",
                    ));
                }
            }
        }
        if self.max_cpu.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(Error::invalid("max_cpu", "a positive number"));
        }
        if self.max_memory_mb.is_some_and(|m| m <= 0) {
            return Err(Error::invalid("max_memory_mb", "a positive number"));
        }
        if self.max_disk_mb.is_some_and(|m| m <= 0) {
            return Err(Error::invalid("max_disk_mb", "a positive number"));
        }
        if self.max_ttl_secs == Some(0) {
            return Err(Error::invalid("max_ttl_secs", "a positive number"));
        }
        Ok(())
    }

    /// Whether the policy applies to `p`.
    pub fn applies_to(&self, p: &Principal) -> bool {
        self.principals.iter().any(|g| wildcard(g, &p.id))
            || self
                .groups
                .iter()
                .any(|g| p.groups.iter().any(|pg| wildcard(g, pg)))
    }

    /// The rules `config` (from `template`: its name, and whether it is
    /// the operator's) breaks, `held` sandboxes held and `adding` more
    /// asked for. A template rule names the operator's templates: a
    /// principal's own template of an allowed name is not one. A create
    /// that asks for no TTL is given the longest allowed first
    /// ([`default_ttl`]).
    pub fn judge(
        &self,
        template: Option<(&str, bool)>,
        config: &SandboxConfig,
        held: usize,
        adding: usize,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut broke =
            |rule: &str, limit: serde_json::Value, value: serde_json::Value, msg: String| {
                out.push(Violation {
                    policy: self.name.clone(),
                    rule: rule.into(),
                    limit,
                    value,
                    message: msg,
                })
            };
        if let Some(allowed) = &self.templates {
            let ok = template
                .is_some_and(|(t, operator)| operator && allowed.iter().any(|g| wildcard(g, t)));
            if !ok {
                broke(
                    "templates",
                    json!(allowed),
                    json!(template.map(|(t, _)| t)),
                    match template {
                        Some((t, false)) => format!(
                            "template {t:?} is your own; policy {:?} allows only the operator's {allowed:?}",
                            self.name
                        ),
                        Some((t, true)) => {
                            format!("template {t:?} is not one policy {:?} allows", self.name)
                        }
                        None => format!(
                            "policy {:?} allows only creates from its templates",
                            self.name
                        ),
                    },
                );
            }
        }
        if let Some(max) = self.max_sandboxes {
            if held + adding > max as usize {
                broke(
                    "max_sandboxes",
                    json!(max),
                    json!(held + adding),
                    format!(
                        "{held} sandboxes held; policy {:?} allows at most {max} at once",
                        self.name
                    ),
                );
            }
        }
        if let Some(max) = self.max_ttl_secs {
            match config.ttl_secs {
                Some(t) if t > max => broke(
                    "max_ttl_secs",
                    json!(max),
                    json!(t),
                    format!(
                        "a timeout of {t} s; policy {:?} allows at most {max} s",
                        self.name
                    ),
                ),
                _ => {}
            }
        }
        if let Some(max) = self.max_cpu {
            if config.cpu > max {
                broke(
                    "max_cpu",
                    json!(max),
                    json!(config.cpu),
                    format!(
                        "{} cpus; policy {:?} allows at most {max}",
                        config.cpu, self.name
                    ),
                );
            }
        }
        if let Some(max) = self.max_memory_mb {
            if config.memory_mb > max {
                broke(
                    "max_memory_mb",
                    json!(max),
                    json!(config.memory_mb),
                    format!(
                        "{} MiB of memory; policy {:?} allows at most {max}",
                        config.memory_mb, self.name
                    ),
                );
            }
        }
        if let Some(max) = self.max_disk_mb {
            if config.disk_mb > max {
                broke(
                    "max_disk_mb",
                    json!(max),
                    json!(config.disk_mb),
                    format!(
                        "{} MiB of storage; policy {:?} allows at most {max}",
                        config.disk_mb, self.name
                    ),
                );
            }
        }
        out
    }
}

/// The shortest `max_ttl_secs` of the policies: the TTL a create that asks
/// for none gets.
pub fn default_ttl<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Option<u64> {
    policies.into_iter().filter_map(|p| p.max_ttl_secs).min()
}

/// The smallest `max_sandboxes` of the policies, if any has one.
pub fn max_sandboxes<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Option<u32> {
    policies.into_iter().filter_map(|p| p.max_sandboxes).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            name: "small".into(),
            principals: vec!["alice".into(), "oidc:*".into()],
            groups: vec!["restricted".into()],
            templates: Some(vec!["general-*".into()]),
            max_sandboxes: Some(1),
            max_ttl_secs: Some(3600),
            max_cpu: Some(1.0),
            max_memory_mb: Some(512),
            max_disk_mb: Some(1024),
        }
    }

    fn config() -> SandboxConfig {
        crate::model::SandboxSpec::default()
            .resolve(&crate::model::Limits::default())
            .unwrap()
    }

    #[test]
    fn applies_by_principal_glob_or_group() {
        let p = policy();
        assert!(p.applies_to(&Principal::new("alice")));
        assert!(p.applies_to(&Principal::new("oidc:123")));
        assert!(!p.applies_to(&Principal::new("bob")));
        let mut bob = Principal::new("bob");
        bob.groups = vec!["devs".into(), "restricted".into()];
        assert!(p.applies_to(&bob));
    }

    #[test]
    fn each_broken_rule_is_one_violation() {
        let p = policy();
        let mut c = config();
        assert!(p.judge(Some(("general-coding", true)), &c, 0, 1).is_empty());
        // A principal's own template of an allowed name is not the
        // operator's.
        assert_eq!(
            p.judge(Some(("general-coding", false)), &c, 0, 1)[0].rule,
            "templates"
        );
        c.ttl_secs = Some(8 * 3600);
        c.cpu = 2.0;
        c.memory_mb = 1024;
        c.disk_mb = 2048;
        let v = p.judge(Some(("small", true)), &c, 1, 1);
        let rules: Vec<&str> = v.iter().map(|v| v.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "templates",
                "max_sandboxes",
                "max_ttl_secs",
                "max_cpu",
                "max_memory_mb",
                "max_disk_mb"
            ]
        );
        assert_eq!(v[2].limit, json!(3600));
        assert_eq!(v[2].value, json!(8 * 3600));
        assert!(v.iter().all(|v| v.policy == "small"));
        // No template at all breaks a template rule.
        assert_eq!(p.judge(None, &config(), 0, 1)[0].rule, "templates");
    }

    #[test]
    fn wildcards_cross_slashes_and_colons() {
        assert!(wildcard("*", "oidc:org/carol"));
        assert!(wildcard("oidc:*", "oidc:org/carol"));
        assert!(wildcard("*/devs", "/team/devs"));
        assert!(wildcard("a?c", "abc"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("a*b*c", "aXXbYY"));
        assert!(!wildcard("alice", "alice2"));
        assert!(!wildcard("oidc:*", "local"));
        let mut p = policy();
        p.principals = vec!["*".into()];
        assert!(p.applies_to(&Principal::new("oidc:repo:org/x:ref:main")));
        p.principals.clear();
        p.groups = vec!["*".into()];
        let mut g = Principal::new("x");
        g.groups = vec!["/devs".into()];
        assert!(p.applies_to(&g));
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = policy();
        p.principals.clear();
        p.groups.clear();
        assert_eq!(p.validate().unwrap_err().field(), Some("principals"));
        let mut p = policy();
        p.max_cpu = Some(f64::NAN);
        assert_eq!(p.validate().unwrap_err().field(), Some("max_cpu"));
        let mut p = policy();
        p.name = "bad name".into();
        assert_eq!(p.validate().unwrap_err().field(), Some("name"));
        assert!(policy().validate().is_ok());
    }
}
