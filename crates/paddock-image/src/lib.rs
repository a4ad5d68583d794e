//! The image store: pulls OCI and Docker v2 images from registries
//! (oci-client), keeps their layers unpacked in a content-addressed cache
//! shared by every image, and reads their configs.
//!
//! Layout under `<data>/images/`: `layers/<hex>/` is the unpacked layer of
//! blob `sha256:<hex>`, ready to be an overlayfs lower (whiteouts as 0/0
//! character devices, opaque directories marked with the
//! `trusted.overlay.opaque` xattr); `refs/<sha256 of reference>.json`
//! records what a reference resolved to. A layer appears under its final
//! name only once completely unpacked and synced (unpack to `*.tmp`, fsync,
//! rename), so a half-written layer is never used.

mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use paddock_core::model::{ImageInfo, ProgressFn, PullProgress, ResolvedImage};
use paddock_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Default)]
pub struct ImageSettings {
    /// `host:port` of registries reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Registry (as in a reference: `docker.io`) → mirror (`http://host:port`
    /// or `host:port`), tried first, with the registry itself as fallback.
    pub mirrors: Vec<(String, String)>,
    /// Reference → the reference to pull instead.
    pub aliases: HashMap<String, String>,
    /// Registry host (`host[:port]`, as pulled from, mirrors included) →
    /// basic credentials; others are pulled anonymously.
    pub auth: HashMap<String, (String, String)>,
}

pub struct ImageStore {
    root: PathBuf,
    settings: ImageSettings,
    /// For pulls that may use the daemon's registry credentials.
    client: Client,
    /// For anonymous pulls: a client of their own, since a client keeps the
    /// first authentication it used per registry, and the tokens it got,
    /// for every later pull there.
    anonymous: Client,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls hold it shared; a prune holds it alone, so that it never
    /// removes a layer a pull has unpacked but not yet recorded.
    prune_lock: tokio::sync::RwLock<()>,
}

/// What a reference resolved to, as recorded in `refs/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    pub resolved: String,
    pub image: ResolvedImage,
    /// Pulled with the daemon's registry credentials: a cache hit serves
    /// it only to a pull that may use them (others pull it again,
    /// anonymously, and get the registry's answer).
    #[serde(default)]
    pub authenticated: bool,
}

/// Sends a pull's progress, downloads at most every 100 ms.
struct Reporter {
    reference: String,
    sink: Option<ProgressFn>,
    current: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
    last: Mutex<std::time::Instant>,
}

impl Reporter {
    fn new(reference: &str, sink: Option<ProgressFn>) -> Reporter {
        Reporter {
            reference: reference.to_string(),
            sink,
            current: Default::default(),
            total: Default::default(),
            last: Mutex::new(std::time::Instant::now()),
        }
    }
    fn start(&self, total: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.total.store(total, Relaxed);
        self.current.store(0, Relaxed);
    }
    fn current(&self) -> u64 {
        self.current.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn set(&self, v: u64) {
        self.current.store(v, std::sync::atomic::Ordering::Relaxed);
    }
    fn add(&self, n: u64) {
        self.current
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn send(&self, status: &str, layer: Option<&str>) {
        let Some(sink) = &self.sink else { return };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
        let total = self.total.load(std::sync::atomic::Ordering::Relaxed);
        sink(PullProgress {
            reference: self.reference.clone(),
            status: status.to_string(),
            layer: layer.map(str::to_string),
            current: self.current(),
            total,
        });
    }
    /// Counts downloaded bytes; reports when 100 ms have passed.
    fn downloaded(&self, n: u64, layer: &str) {
        self.add(n);
        if self.sink.is_none() {
            return;
        }
        let due = {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.elapsed() >= std::time::Duration::from_millis(100)
        };
        if due {
            self.send("downloading", Some(layer));
        }
    }
}

/// A blob's file, counting what is written to it.
struct Counting<'a, W> {
    inner: W,
    report: &'a Reporter,
    layer: &'a str,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.report.downloaded(*n as u64, self.layer);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn hex_of(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(Error::Unavailable {
            what: "image".into(),
            reason: format!("unsupported digest {digest:?}"),
        }),
    }
}

fn pull_error(reference: &str, e: OciDistributionError) -> Error {
    use OciDistributionError as E;
    match &e {
        E::ImageManifestNotFoundError(_) => Error::not_found(format!("image {reference}")),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                let c = format!("{:?}", x.code);
                c.contains("ManifestUnknown")
                    || c.contains("NameUnknown")
                    || c.contains("BlobUnknown")
            }) =>
        {
            Error::not_found(format!("image {reference}"))
        }
        E::ServerError { code: 404, .. } => Error::not_found(format!("image {reference}")),
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            Error::Forbidden(format!("the registry refused access to {reference}: {e}"))
        }
        E::DigestError(_) => Error::Unavailable {
            what: format!("image {reference}"),
            reason: format!("a blob did not match its digest: {e}"),
        },
        _ => Error::Unavailable {
            what: format!("image {reference}"),
            reason: e.to_string(),
        },
    }
}

impl ImageStore {
    pub fn new(root: &Path, settings: ImageSettings) -> Result<ImageStore> {
        for d in ["layers", "refs", "blobs"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(|e| Error::Internal(format!("image store {}: {e}", root.display())))?;
        }
        let mut insecure = settings.insecure.clone();
        for (_, m) in &settings.mirrors {
            if let Some(h) = m.strip_prefix("http://") {
                insecure.push(h.trim_end_matches('/').to_string());
            }
        }
        let new_client = || {
            Client::new(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(insecure.clone()),
                platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
                ..Default::default()
            })
        };
        let (client, anonymous) = (new_client(), new_client());
        Ok(ImageStore {
            root: root.to_path_buf(),
            settings,
            client,
            anonymous,
            locks: Mutex::new(HashMap::new()),
            prune_lock: tokio::sync::RwLock::new(()),
        })
    }

    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(hex_of(digest)?))
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn ref_file(&self, reference: &str) -> PathBuf {
        self.root.join("refs").join(format!(
            "{}.json",
            hex::encode(Sha256::digest(reference.as_bytes()))
        ))
    }

    /// The cached resolution of `reference`, if it was pulled before and
    /// every layer is still there.
    pub fn cached(&self, reference: &str) -> Option<ImageRecord> {
        let text = std::fs::read_to_string(self.ref_file(reference)).ok()?;
        let rec: ImageRecord = serde_json::from_str(&text).ok()?;
        rec.image
            .layers
            .iter()
            .all(|l| Path::new(l).is_dir())
            .then_some(rec)
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        let mut out: Vec<ImageRecord> = std::fs::read_dir(self.root.join("refs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        out
    }

    fn parse(&self, reference: &str) -> Result<(String, Reference)> {
        let resolved = self
            .settings
            .aliases
            .get(reference)
            .cloned()
            .unwrap_or_else(|| reference.to_string());
        let r: Reference = resolved.parse().map_err(|e| {
            Error::invalid(
                "image",
                format!("{reference:?} is not an image reference: {e}"),
            )
        })?;
        Ok((resolved, r))
    }

    /// Where `reference` is pulled from (its alias followed), as
    /// `registry/repository`: what a pull policy judges.
    pub fn locate(&self, reference: &str) -> Result<String> {
        let (_, r) = self.parse(reference)?;
        Ok(format!("{}/{}", r.registry(), r.repository()))
    }

    /// The image for `reference`: from the cache, else pulled. With
    /// `credentials`, the daemon's registry credentials may be used; without,
    /// an image the cache holds from a pull that used them is pulled again
    /// anonymously (only its manifest and config, when the layers are
    /// cached), so that the registry decides.
    pub async fn ensure(&self, reference: &str, credentials: bool) -> Result<ResolvedImage> {
        if let Some(rec) = self.cached(reference) {
            if credentials || !rec.authenticated {
                return Ok(rec.image);
            }
        }
        Ok(self.pull(reference, credentials).await?.image)
    }

    /// Pulls `reference` (again), downloading only layers not yet cached.
    pub async fn pull(&self, reference: &str, credentials: bool) -> Result<ImageRecord> {
        self.pull_with(reference, credentials, None).await
    }

    /// [`ImageStore::pull`], reporting progress to `progress`.
    pub async fn pull_with(
        &self,
        reference: &str,
        credentials: bool,
        progress: Option<ProgressFn>,
    ) -> Result<ImageRecord> {
        let report = Reporter::new(reference, progress);
        report.send("resolving", None);
        let (resolved, r) = self.parse(reference)?;
        let _shared = self.prune_lock.read().await;
        let _guard = self.lock(&format!("ref:{resolved}"));
        let _guard = _guard.lock().await;
        // Through a mirror first, then the registry itself.
        let mut attempts = Vec::new();
        if let Some((_, m)) = self
            .settings
            .mirrors
            .iter()
            .find(|(reg, _)| *reg == r.registry())
        {
            let mut via = r.clone();
            let host = m
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            via.set_mirror_registry(host.to_string());
            attempts.push(via);
        }
        attempts.push(r.clone());
        let mut last = None;
        for (i, attempt) in attempts.iter().enumerate() {
            match self
                .pull_from(reference, &resolved, attempt, credentials, &report)
                .await
            {
                Ok(rec) => {
                    report.send("done", None);
                    return Ok(rec);
                }
                Err(e) => {
                    if i + 1 < attempts.len() {
                        tracing::info!("pull of {resolved} through its mirror failed ({e}); trying the registry");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::internal("no pull attempt")))
    }

    async fn pull_from(
        &self,
        reference: &str,
        resolved: &str,
        r: &Reference,
        credentials: bool,
        report: &Reporter,
    ) -> Result<ImageRecord> {
        let auth = match self.settings.auth.get(r.resolve_registry()) {
            Some((u, p)) if credentials => RegistryAuth::Basic(u.clone(), p.clone()),
            _ => RegistryAuth::Anonymous,
        };
        let authenticated = matches!(auth, RegistryAuth::Basic(..));
        let client = if credentials {
            &self.client
        } else {
            &self.anonymous
        };
        let (manifest, digest, config) = client
            .pull_manifest_and_config(r, &auth)
            .await
            .map_err(|e| pull_error(reference, e))?;
        let mut layers = Vec::new();
        let size: u64 = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum();
        report.start(size);
        for layer in &manifest.layers {
            let dir = self.layer_dir(&layer.digest)?;
            let lock = self.lock(&layer.digest);
            let _g = lock.lock().await;
            if dir.is_dir() {
                report.add(layer.size.max(0) as u64);
                report.send("cached", Some(&layer.digest));
            } else {
                self.fetch_layer(client, reference, r, layer, &dir, report)
                    .await?;
            }
            layers.push(dir.to_string_lossy().into_owned());
        }
        let image = image_config(&config, &digest, layers, size)?;
        let rec = ImageRecord {
            reference: reference.to_string(),
            resolved: resolved.to_string(),
            image,
            authenticated,
        };
        let tmp = self.ref_file(reference).with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&rec).map_err(Error::internal)?,
        )
        .and_then(|_| std::fs::rename(&tmp, self.ref_file(reference)))
        .map_err(|e| Error::Internal(format!("record image: {e}")))?;
        Ok(rec)
    }

    async fn fetch_layer(
        &self,
        client: &Client,
        reference: &str,
        r: &Reference,
        layer: &oci_client::manifest::OciDescriptor,
        dir: &Path,
        report: &Reporter,
    ) -> Result<()> {
        let hex = hex_of(&layer.digest)?.to_string();
        let blob = self.root.join("blobs").join(format!("{hex}.partial"));
        let file = tokio::fs::File::create(&blob)
            .await
            .map_err(|e| Error::Internal(format!("layer download: {e}")))?;
        let before = report.current();
        report.send("downloading", Some(&layer.digest));
        let file = Counting {
            inner: file,
            report,
            layer: &layer.digest,
        };
        let res = client.pull_blob(r, layer, file).await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&blob).await;
            return Err(pull_error(reference, e));
        }
        // The layer counts as its declared size, whatever the transfer was.
        report.set(before + layer.size.max(0) as u64);
        report.send("extracting", Some(&layer.digest));
        let media = layer.media_type.clone();
        let dir = dir.to_path_buf();
        let blob2 = blob.clone();
        let out = tokio::task::spawn_blocking(move || unpack::unpack_layer(&blob2, &media, &dir))
            .await
            .map_err(Error::internal)?;
        let _ = tokio::fs::remove_file(&blob).await;
        if out.is_ok() {
            report.send("extracted", Some(&layer.digest));
        }
        out
    }

    /// Removes a reference's record (its layers stay until `prune`).
    pub fn remove(&self, reference: &str) -> Result<bool> {
        match std::fs::remove_file(self.ref_file(reference)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Internal(e.to_string())),
        }
    }

    /// Removes layers that no recorded image and no path in `in_use` needs.
    pub async fn prune(&self, in_use: &[String]) -> Result<usize> {
        let _alone = self.prune_lock.write().await;
        let mut keep: std::collections::HashSet<String> = in_use.iter().cloned().collect();
        for rec in self.list() {
            keep.extend(rec.image.layers);
        }
        let mut n = 0;
        for e in std::fs::read_dir(self.root.join("layers"))
            .map_err(Error::internal)?
            .flatten()
        {
            let p = e.path().to_string_lossy().into_owned();
            if !keep.contains(&p) {
                std::fs::remove_dir_all(e.path()).map_err(Error::internal)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Reads what a sandbox needs from an image config blob.
fn image_config(
    config: &str,
    digest: &str,
    layers: Vec<String>,
    size: u64,
) -> Result<ResolvedImage> {
    let v: serde_json::Value = serde_json::from_str(config).map_err(|e| Error::Unavailable {
        what: "image".into(),
        reason: format!("bad image config: {e}"),
    })?;
    let c = &v["config"];
    let strings = |x: &serde_json::Value| -> Option<Vec<String>> {
        x.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
    };
    let mut ports: Vec<u16> = c["ExposedPorts"]
        .as_object()
        .map(|o| {
            o.keys()
                .filter_map(|k| k.split('/').next().and_then(|p| p.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    Ok(ResolvedImage {
        digest: digest.to_string(),
        layers,
        env: strings(&c["Env"]).unwrap_or_default(),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        working_dir: c["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        user: c["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        exposed_ports: ports,
        size,
    })
}

impl ImageRecord {
    pub fn info(&self) -> ImageInfo {
        ImageInfo {
            reference: self.reference.clone(),
            resolved: self.resolved.clone(),
            digest: self.image.digest.clone(),
            layers: self.image.layers.len(),
            size: self.image.size,
            exposed_ports: self.image.exposed_ports.clone(),
        }
    }
}

#[async_trait::async_trait]
impl paddock_core::engine::Images for ImageStore {
    async fn resolve(&self, reference: &str, credentials: bool) -> Result<ResolvedImage> {
        self.ensure(reference, credentials).await
    }

    async fn pull(
        &self,
        reference: &str,
        credentials: bool,
        progress: Option<ProgressFn>,
    ) -> Result<ImageInfo> {
        Ok(
            ImageStore::pull_with(self, reference, credentials, progress)
                .await?
                .info(),
        )
    }

    fn locate(&self, reference: &str) -> Result<String> {
        ImageStore::locate(self, reference)
    }

    fn list(&self) -> Vec<ImageInfo> {
        ImageStore::list(self)
            .iter()
            .map(ImageRecord::info)
            .collect()
    }

    fn inspect(&self, reference: &str) -> Result<ImageInfo> {
        self.cached(reference)
            .map(|r| r.info())
            .ok_or_else(|| Error::not_found(format!("image {reference} in the cache")))
    }

    fn remove(&self, reference: &str) -> Result<()> {
        if ImageStore::remove(self, reference)? {
            Ok(())
        } else {
            Err(Error::not_found(format!("image {reference} in the cache")))
        }
    }

    async fn prune(&self, in_use: &[String]) -> Result<usize> {
        ImageStore::prune(self, in_use).await
    }
}
