//! 0.8.1's files: list a directory, download, upload (at most 32 MiB:
//! 413 past it), and a directory as a zip, streamed as it is made.

use std::io::Write;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use paddock_core::model::WriteOptions;
use paddock_core::Error;

use super::*;

/// The most an upload may bring (the SDK's `FilesAPI.MAX_BYTES`).
pub const MAX_UPLOAD: u64 = 32 << 20;
/// The most entries an archive walks, and the most their names may come
/// to (the zip writer keeps every name until its central directory).
const MAX_ENTRIES: usize = 20_000;
const MAX_NAMES: usize = 16 << 20;
const MAX_DEPTH: usize = 64;

#[derive(serde::Deserialize)]
pub(crate) struct PathParam {
    #[serde(default)]
    path: Option<String>,
}

pub(crate) async fn list(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<PathParam>,
) -> AtResult<Json<serde_json::Value>> {
    let sb = st.sandbox(&p, &id)?;
    let path = q.path.unwrap_or_else(|| "/workspace".into());
    let entries: Vec<FileEntry> = st
        .engine
        .list_dir(&p, sb.id, &path)
        .await?
        .into_iter()
        .map(|f| FileEntry {
            is_dir: f.kind == "dir",
            mode: mode_string(&f.kind, f.mode),
            modified_at: f.modified_at.timestamp(),
            size: f.size,
            name: f.name,
        })
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries })))
}

pub(crate) async fn read(
    State(st): State<At>,
    Extension(p): P,
    Path((id, path)): Path<(String, String)>,
) -> AtResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let (size, stream) = st.engine.read_file(&p, sb.id, &format!("/{path}")).await?;
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(n) = size {
        r = r.header(header::CONTENT_LENGTH, n);
    }
    r.body(Body::from_stream(stream))
        .map_err(|e| AtError::from(Error::internal(e)))
}

pub(crate) async fn write(
    State(st): State<At>,
    Extension(p): P,
    Path((id, path)): Path<(String, String)>,
    req: Request,
) -> AtResult<StatusCode> {
    let sb = st.sandbox(&p, &id)?;
    let upload = paddock_http_kit::upload::Upload::new(req.into_body());
    if upload.size.is_some_and(|n| n > MAX_UPLOAD) {
        upload.drain().await;
        return Err(too_large());
    }
    // A body without a length is cut off past the cap.
    let mut seen = 0u64;
    let data = upload.stream("body").map(move |c| {
        let c = c?;
        seen += c.len() as u64;
        if seen > MAX_UPLOAD {
            return Err(Error::Quota(format!(
                "an upload larger than {MAX_UPLOAD} bytes"
            )));
        }
        Ok(c)
    });
    let opts = WriteOptions {
        mkdir_parents: true,
        atomic: true,
        size: upload.size,
        ..Default::default()
    };
    match st
        .engine
        .write_file(&p, sb.id, &format!("/{path}"), &opts, data)
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(Error::Quota(_)) => {
            upload.drain().await;
            Err(too_large())
        }
        Err(e) => {
            upload.drain().await;
            Err(e.into())
        }
    }
}

fn too_large() -> AtError {
    AtError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("an upload may be at most {MAX_UPLOAD} bytes (32 MiB)"),
    )
}

/// The zip as it is made: what the writer has written since the last take.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Shared {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) async fn archive(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<PathParam>,
) -> AtResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let root = q.path.unwrap_or_else(|| "/workspace".into());
    let root = root.trim_end_matches('/').to_string();
    let root = if root.is_empty() {
        "/".to_string()
    } else {
        root
    };
    // The directory must be there before the answer starts.
    st.engine.list_dir(&p, sb.id, &root).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let engine = st.engine.clone();
    tokio::spawn(async move {
        if let Err(e) = zip_tree(&engine, &p, sb.id, &root, &tx).await {
            tracing::warn!(sandbox = %sb.id, "archive of {root}: {e}");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let name = id.replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.zip\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Writes every file below `root` (symlinks as they are, not followed) into
/// a zip sent down `tx` as it is made.
async fn zip_tree(
    engine: &paddock_core::Engine,
    p: &Principal,
    id: uuid::Uuid,
    root: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) -> Result<(), Error> {
    use zip::write::SimpleFileOptions;
    let out = Shared::default();
    let mut zip = zip::ZipWriter::new_stream(out.clone());
    let zerr = |e: zip::result::ZipError| Error::internal(format!("zip: {e}"));
    let mut todo = vec![(root.to_string(), String::new(), 0usize)];
    let (mut entries, mut names) = (0usize, 0usize);
    while let Some((dir, prefix, depth)) = todo.pop() {
        let mut list = engine.list_dir(p, id, &dir).await?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for f in list {
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(Error::invalid(
                    "path",
                    format!("more than {MAX_ENTRIES} entries"),
                ));
            }
            let rel = format!("{prefix}{}", f.name);
            names += rel.len();
            if names > MAX_NAMES {
                return Err(Error::invalid(
                    "path",
                    "the entries' names come to more than 16 MiB",
                ));
            }
            let full = format!("{}/{}", dir.trim_end_matches('/'), f.name);
            let opts = SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(f.mode & 0o7777)
                .large_file(f.size >= u32::MAX as u64);
            match f.kind.as_str() {
                "dir" => {
                    zip.add_directory(format!("{rel}/"), opts).map_err(zerr)?;
                    if depth < MAX_DEPTH {
                        todo.push((full, format!("{rel}/"), depth + 1));
                    }
                }
                "file" => {
                    zip.start_file(rel, opts).map_err(zerr)?;
                    let (_, mut s) = engine.read_file(p, id, &full).await?;
                    while let Some(c) = s.next().await {
                        zip.write_all(&c?).map_err(Error::internal)?;
                        let chunk = out.take();
                        if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                            return Ok(()); // The client went away.
                        }
                    }
                }
                "symlink" => {
                    let target = f.symlink_target.unwrap_or_default();
                    zip.add_symlink(rel, target, opts).map_err(zerr)?;
                }
                _ => {}
            }
            let chunk = out.take();
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
        }
    }
    zip.finish().map_err(zerr)?;
    let chunk = out.take();
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk)).await;
    }
    Ok(())
}
