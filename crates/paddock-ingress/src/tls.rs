//! The ingress's certificates: the operator's (a PEM chain and key named
//! in the settings file), or leaves Paddock's own CA mints per SNI name on
//! demand (a single wildcard cannot cover `<name>.<box>.<zone>`). The CA
//! (ECDSA P-256, ten years) is made once and kept in the data dir:
//! `ingress-ca.pem`, which clients trust, and `ingress-ca.key` (0600).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use paddock_core::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// How long a minted leaf is valid, and how long before its end a new
/// one is minted.
const LEAF_DAYS: i64 = 30;
const RENEW_BEFORE_DAYS: i64 = 2;
/// Leaves kept; past this the cache is emptied (names are checked before
/// one is minted, so this bounds a client making up names in the zone).
const MAX_CACHED: usize = 4096;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Paddock's own CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    pub path: PathBuf,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "Paddock ingress CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "Paddock");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    /// The CA in `dir` (made there the first time).
    pub fn load_or_make(dir: &Path) -> Result<Ca, String> {
        let cert_path = dir.join("ingress-ca.pem");
        let key_path = dir.join("ingress-ca.key");
        let err = |what: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", what.display());
        let (key, pem) = match std::fs::read_to_string(&key_path) {
            Ok(k) => {
                let key = KeyPair::from_pem(&k).map_err(|e| err(&key_path, &e))?;
                let pem = std::fs::read_to_string(&cert_path).map_err(|e| err(&cert_path, &e))?;
                (key, pem)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(|e| err(&key_path, &e))?;
                let mut p = ca_params();
                let now = OffsetDateTime::now_utc();
                p.not_before = now - Duration::days(1);
                p.not_after = now + Duration::days(3650);
                let cert = p.self_signed(&key).map_err(|e| err(&cert_path, &e))?;
                write_private(&key_path, key.serialize_pem().as_bytes())
                    .map_err(|e| err(&key_path, &e))?;
                std::fs::write(&cert_path, cert.pem()).map_err(|e| err(&cert_path, &e))?;
                (key, cert.pem())
            }
            Err(e) => return Err(err(&key_path, &e)),
        };
        Ok(Ca {
            issuer: Issuer::new(ca_params(), key),
            pem,
            path: cert_path,
        })
    }

    /// The CA's certificate, PEM: what clients trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A leaf for `name`, valid for [`LEAF_DAYS`].
    fn mint(&self, name: &str) -> Result<(CertifiedKey, OffsetDateTime), String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p = CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
        p.distinguished_name.push(DnType::CommonName, name);
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(LEAF_DAYS);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| e.to_string())?;
        Ok((
            CertifiedKey::new(vec![cert.der().clone()], signer),
            p.not_after,
        ))
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Paddock's CA as clients get it: its certificate and where it is.
#[derive(Debug, Clone)]
pub struct CaFile {
    pub pem: String,
    pub path: PathBuf,
}

/// Picks the certificate for a connection by its SNI name.
pub struct Resolver {
    engine: Arc<Engine>,
    source: Source,
    /// Domains (and their subdomains) the operator vouches for: the only
    /// bound domains Paddock's CA signs for. Anyone may bind any domain,
    /// and clients trust this CA: without such a list it would sign
    /// `github.com` for whoever bound it.
    mint_domains: Vec<String>,
}

enum Source {
    /// The operator's, for every name.
    Fixed(Arc<CertifiedKey>),
    /// Minted per name.
    Minted {
        ca: Box<Ca>,
        cache: Mutex<HashMap<String, (Arc<CertifiedKey>, OffsetDateTime)>>,
    },
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ingress::Resolver")
    }
}

impl Resolver {
    /// Whether the ingress answers to `name` (in its zone, at most two
    /// labels deep, or a bound domain): the names it mints for.
    fn serves(&self, name: &str) -> bool {
        let Some(cfg) = self.engine.ingress_config() else {
            return false;
        };
        if let Some(rest) = name.strip_suffix(cfg.zone.as_str()) {
            if rest.is_empty() {
                return true;
            }
            if let Some(rest) = rest.strip_suffix('.') {
                return rest.split('.').count() <= 2;
            }
        }
        self.vouched(name) && matches!(self.engine.store().domain(name), Ok(Some(_)))
    }

    /// Whether `name` lies under a domain the operator vouches for.
    fn vouched(&self, name: &str) -> bool {
        self.mint_domains.iter().any(|d| {
            name == d
                || name
                    .strip_suffix(d.as_str())
                    .is_some_and(|r| r.ends_with('.'))
        })
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (ca, cache) = match &self.source {
            Source::Fixed(k) => return Some(k.clone()),
            Source::Minted { ca, cache } => (ca, cache),
        };
        // No SNI (an address): the zone's own name.
        let name = match hello.server_name() {
            Some(n) => paddock_core::engine::host_name(n)?,
            None => self.engine.ingress_config()?.zone.clone(),
        };
        let now = OffsetDateTime::now_utc();
        if let Some((k, until)) = cache.lock().ok()?.get(&name) {
            if *until - now > Duration::days(RENEW_BEFORE_DAYS) {
                return Some(k.clone());
            }
        }
        if !self.serves(&name) {
            return None;
        }
        let (k, until) = match ca.mint(&name) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("ingress: minting a certificate for {name}: {e}");
                return None;
            }
        };
        let k = Arc::new(k);
        let mut c = cache.lock().ok()?;
        if c.len() >= MAX_CACHED {
            c.clear();
        }
        c.insert(name, (k.clone(), until));
        Some(k)
    }
}

/// The ingress's TLS: the operator's certificate and key (PEM files) if
/// given, else Paddock's CA in `data_dir`. Also the CA, when it is ours.
pub fn server_config(
    engine: Arc<Engine>,
    data_dir: &Path,
    operator: Option<(&Path, &Path)>,
    mint_domains: &[String],
) -> Result<(Arc<rustls::ServerConfig>, Option<CaFile>), String> {
    let (source, ca_pem) = match operator {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("{}: no certificate in it", cert.display()));
            }
            let k =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            let signer = provider()
                .key_provider
                .load_private_key(k)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            (
                Source::Fixed(Arc::new(CertifiedKey::new(chain, signer))),
                None,
            )
        }
        None => {
            let ca = Ca::load_or_make(data_dir)?;
            let pem = CaFile {
                pem: ca.pem.clone(),
                path: ca.path.clone(),
            };
            (
                Source::Minted {
                    ca: Box::new(ca),
                    cache: Default::default(),
                },
                Some(pem),
            )
        }
    };
    let mint_domains = mint_domains
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let resolver = Arc::new(Resolver {
        engine,
        source,
        mint_domains,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), ca_pem))
}
