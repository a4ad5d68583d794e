//! The `sftp` subsystem (what `sftp` and `scp` speak) over the engine's
//! file calls. Those stream whole files, so a handle reads forward (a read
//! before what it holds opens the file again) and writes forward (writes
//! ahead of the next byte wait, in order, up to [`MAX_AHEAD`]); overwriting
//! part of a file in place is not supported (the client is told so).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use paddock_core::error::Error;
use paddock_core::model::{FileInfo, Principal, WriteOptions};
use paddock_core::Engine;
use russh::server::Msg;
use russh::Channel;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The most bytes written ahead of the next one a session holds, over all
/// its handles.
const MAX_AHEAD: usize = 64 << 20;
/// The most every session of the daemon holds so, together: what a
/// client that opens many sessions can make the daemon keep.
const MAX_AHEAD_ALL: usize = 512 << 20;

/// Bytes held ahead of a gap by every session.
static AHEAD_ALL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Takes `n` bytes of the daemon-wide budget, if there is room.
fn reserve_ahead(n: usize) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    AHEAD_ALL
        .fetch_update(SeqCst, SeqCst, |cur| {
            cur.checked_add(n).filter(|&t| t <= MAX_AHEAD_ALL)
        })
        .is_ok()
}

fn release_ahead(n: usize) {
    AHEAD_ALL.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
}
/// The most a read answers (clients ask for 32 KiB to 255 KiB).
const MAX_READ: u32 = 256 << 10;
/// Open handles per session.
const MAX_HANDLES: usize = 256;
/// Directory entries per `readdir` answer.
const DIR_BATCH: usize = 128;

pub async fn run(engine: Arc<Engine>, p: Principal, id: Uuid, ch: Channel<Msg>) {
    // The home directory: relative paths are taken from it.
    let home = match engine.get(&p, id) {
        Ok(sb) if sb.config.cwd.starts_with('/') => sb.config.cwd,
        _ => "/".to_string(),
    };
    let h = Sftp {
        engine,
        p,
        id,
        home,
        handles: HashMap::new(),
        next: 0,
    };
    russh_sftp::server::run(ch.into_stream(), h).await;
}

struct Sftp {
    engine: Arc<Engine>,
    p: Principal,
    id: Uuid,
    home: String,
    handles: HashMap<String, Open>,
    next: u64,
}

enum Open {
    Dir(Vec<File>),
    Read(Reader),
    Write(Writer),
}

struct Reader {
    path: String,
    /// (In a mutex only to be `Sync`: reached by `get_mut`, never locked.)
    stream: std::sync::Mutex<BoxStream<'static, paddock_core::error::Result<Bytes>>>,
    /// Bytes from `base` on, read and not yet passed.
    buf: BytesMut,
    base: u64,
    eof: bool,
}

impl Drop for Writer {
    /// What it held ahead goes back to the daemon's budget.
    fn drop(&mut self) {
        release_ahead(self.ahead_bytes);
    }
}

struct Writer {
    path: String,
    tx: Option<mpsc::Sender<paddock_core::error::Result<Bytes>>>,
    task: tokio::task::JoinHandle<paddock_core::error::Result<FileInfo>>,
    /// The offset of the next byte the file takes.
    next: u64,
    /// Writes ahead of it, by offset.
    ahead: BTreeMap<u64, Vec<u8>>,
    ahead_bytes: usize,
    /// The file's size when it was opened without truncation (scp opens
    /// so, writes from the start, then sets the size): what it keeps
    /// unless the client sets another size.
    old_size: u64,
    /// The size the client set (`fsetstat`).
    set_size: Option<u64>,
}

fn reply(code: StatusCode, msg: impl Into<String>) -> StatusReply {
    StatusReply::new(code).with_message(msg)
}

fn engine_error(e: Error) -> StatusReply {
    let code = match &e {
        Error::NotFound { .. } => StatusCode::NoSuchFile,
        Error::Forbidden(_) | Error::ForbiddenField { .. } => StatusCode::PermissionDenied,
        Error::Unsupported(_) => StatusCode::OpUnsupported,
        _ => StatusCode::Failure,
    };
    reply(code, e.to_string())
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn attrs(f: &FileInfo) -> FileAttributes {
    let kind = match f.kind.as_str() {
        "dir" => 0o040000,
        "symlink" => 0o120000,
        "file" => 0o100000,
        _ => 0,
    };
    let mtime = f.modified_at.timestamp().clamp(0, u32::MAX as i64) as u32;
    FileAttributes {
        size: Some(f.size),
        uid: None,
        user: None,
        gid: None,
        group: None,
        permissions: Some(kind | (f.mode & 0o7777)),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

impl Sftp {
    /// `path` made absolute (from the home directory) and normal: `.` and
    /// `..` resolved by name, never above `/`.
    fn resolve(&self, path: &str) -> Result<String, StatusReply> {
        if path.contains('\0') {
            return Err(reply(StatusCode::BadMessage, "a path must not contain NUL"));
        }
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.home)
        };
        let mut parts: Vec<&str> = Vec::new();
        for c in full.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }

    fn add(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(reply(
                StatusCode::Failure,
                format!("at most {MAX_HANDLES} open handles"),
            ));
        }
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    async fn open_read(&self, path: &str) -> Result<Reader, StatusReply> {
        let (_, s) = self
            .engine
            .read_file(&self.p, self.id, path)
            .await
            .map_err(engine_error)?;
        Ok(Reader {
            path: path.to_string(),
            stream: std::sync::Mutex::new(s.boxed()),
            buf: BytesMut::new(),
            base: 0,
            eof: false,
        })
    }

    async fn read_at(
        &mut self,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StatusReply> {
        let len = len.min(MAX_READ) as usize;
        let again = match self.handles.get(handle) {
            Some(Open::Read(r)) => offset < r.base,
            _ => return Err(reply(StatusCode::Failure, "not a file open for reading")),
        };
        if again {
            // Behind what the handle holds: from the start again.
            let path = match self.handles.get(handle) {
                Some(Open::Read(r)) => r.path.clone(),
                _ => unreachable!(),
            };
            let fresh = self.open_read(&path).await?;
            self.handles.insert(handle.to_string(), Open::Read(fresh));
        }
        let Some(Open::Read(r)) = self.handles.get_mut(handle) else {
            return Err(reply(StatusCode::Failure, "not a file open for reading"));
        };
        loop {
            // Drop what lies before `offset`.
            let skip = (offset - r.base).min(r.buf.len() as u64) as usize;
            let _ = r.buf.split_to(skip);
            r.base += skip as u64;
            if (r.base == offset && r.buf.len() >= len) || r.eof {
                break;
            }
            let stream = r.stream.get_mut().unwrap_or_else(|e| e.into_inner());
            match stream.next().await {
                Some(Ok(b)) => r.buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(engine_error(e)),
                None => r.eof = true,
            }
        }
        if r.base < offset || r.buf.is_empty() {
            return Err(reply(StatusCode::Eof, "end of file"));
        }
        Ok(r.buf[..len.min(r.buf.len())].to_vec())
    }

    fn open_write(&self, path: &str, mode: Option<u32>, append: bool, old_size: u64) -> Writer {
        let (tx, rx) = mpsc::channel::<paddock_core::error::Result<Bytes>>(16);
        let (engine, p, id, path2) = (
            self.engine.clone(),
            self.p.clone(),
            self.id,
            path.to_string(),
        );
        let opts = WriteOptions {
            mode,
            mkdir_parents: false,
            // A transfer that breaks off leaves the file as it was.
            atomic: !append,
            append,
            size: None,
        };
        let task = tokio::spawn(async move {
            let data = tokio_stream::wrappers::ReceiverStream::new(rx);
            engine.write_file(&p, id, &path2, &opts, data).await
        });
        Writer {
            path: path.to_string(),
            tx: Some(tx),
            task,
            next: 0,
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            old_size,
            set_size: None,
        }
    }

    async fn write_at(
        &mut self,
        handle: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), StatusReply> {
        let session_ahead: usize = self
            .handles
            .values()
            .map(|h| match h {
                Open::Write(w) => w.ahead_bytes,
                _ => 0,
            })
            .sum();
        let Some(Open::Write(w)) = self.handles.get_mut(handle) else {
            return Err(reply(StatusCode::Failure, "not a file open for writing"));
        };
        if offset < w.next {
            return Err(reply(
                StatusCode::OpUnsupported,
                "writing over what was written is not supported (files are written from start to end)",
            ));
        }
        if offset > w.next {
            let n = data.len();
            if session_ahead + n > MAX_AHEAD || !reserve_ahead(n) {
                return Err(reply(
                    StatusCode::Failure,
                    "too much written ahead of a gap",
                ));
            }
            w.ahead_bytes += n;
            if let Some(old) = w.ahead.insert(offset, data) {
                w.ahead_bytes -= old.len();
                release_ahead(old.len());
            }
            return Ok(());
        }
        let mut pieces = vec![data];
        let mut next = w.next + pieces[0].len() as u64;
        while let Some(d) = w.ahead.remove(&next) {
            w.ahead_bytes -= d.len();
            release_ahead(d.len());
            next += d.len() as u64;
            pieces.push(d);
        }
        let Some(tx) = &w.tx else {
            return Err(reply(StatusCode::Failure, "the write failed"));
        };
        for d in pieces {
            let n = d.len() as u64;
            if tx.send(Ok(Bytes::from(d))).await.is_err() {
                // The write ended early: its error.
                w.tx = None;
                let r = (&mut w.task).await;
                return Err(match r {
                    Ok(Err(e)) => engine_error(e),
                    _ => reply(StatusCode::Failure, "the write ended early"),
                });
            }
            w.next += n;
        }
        Ok(())
    }

    async fn file_attrs(&self, path: &str) -> Result<FileAttributes, StatusReply> {
        let f = self
            .engine
            .stat(&self.p, self.id, path)
            .await
            .map_err(engine_error)?;
        Ok(attrs(&f))
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        reply(StatusCode::OpUnsupported, "not supported")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.resolve(&filename)?;
        let write = pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND);
        let open = if !write {
            Open::Read(self.open_read(&path).await?)
        } else {
            if pflags.contains(OpenFlags::READ) {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    "opening a file for reading and writing at once is not supported",
                ));
            }
            let append = pflags.contains(OpenFlags::APPEND);
            let mut old_size = 0;
            if !append && !pflags.contains(OpenFlags::TRUNCATE) {
                // Without truncation: written from the start, the file
                // must end up at least as long as it was (checked at
                // close).
                match self.engine.stat(&self.p, self.id, &path).await {
                    Ok(f) if pflags.contains(OpenFlags::EXCLUDE) => {
                        return Err(reply(StatusCode::Failure, format!("{} exists", f.path)))
                    }
                    Ok(f) if f.kind == "dir" => {
                        return Err(reply(
                            StatusCode::Failure,
                            format!("{} is a directory", f.path),
                        ))
                    }
                    Ok(f) => old_size = f.size,
                    Err(Error::NotFound { .. }) if pflags.contains(OpenFlags::CREATE) => {}
                    Err(e) => return Err(engine_error(e)),
                }
            }
            let mode = attrs.permissions.map(|m| m & 0o7777);
            Open::Write(self.open_write(&path, mode, append, old_size))
        };
        Ok(Handle {
            id,
            handle: self.add(open)?,
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::Write(mut w)) => {
                let gap = !w.ahead.is_empty();
                if gap {
                    // A gap never filled: nothing is committed.
                    w.task.abort();
                    return Err(reply(
                        StatusCode::Failure,
                        format!("{}: writes left a gap; nothing written", w.path),
                    ));
                }
                // The file as the client means it: what it set, else what
                // was written over what was there. Anything but what was
                // written would need writing in place: not committed.
                let want = w.set_size.unwrap_or(w.next.max(w.old_size));
                if want != w.next {
                    w.task.abort();
                    return Err(reply(
                        StatusCode::OpUnsupported,
                        format!(
                            "{}: overwriting part of a file is not supported (files are written whole); nothing written",
                            w.path
                        ),
                    ));
                }
                drop(w.tx.take());
                match (&mut w.task).await {
                    Ok(Ok(_)) => Ok(ok(id)),
                    Ok(Err(e)) => Err(engine_error(e)),
                    Err(_) => Err(reply(StatusCode::Failure, "the write failed")),
                }
            }
            Some(_) => Ok(ok(id)),
            None => Err(reply(StatusCode::Failure, "no such handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let data = self.read_at(&handle, offset, len).await?;
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.write_at(&handle, offset, data).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path)?;
        Ok(Attrs {
            id,
            attrs: self.file_attrs(&path).await?,
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path)?;
        Ok(Attrs {
            id,
            attrs: self.file_attrs(&path).await?,
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let path = match self.handles.get(&handle) {
            Some(Open::Read(r)) => r.path.clone(),
            Some(Open::Write(w)) => {
                // Not written yet (an atomic write lands at close): what
                // the handle has taken so far.
                return Ok(Attrs {
                    id,
                    attrs: FileAttributes {
                        size: Some(w.next),
                        permissions: Some(0o100644),
                        ..FileAttributes::empty()
                    },
                });
            }
            Some(Open::Dir(_)) => {
                return Err(reply(StatusCode::OpUnsupported, "fstat of a directory"))
            }
            None => return Err(reply(StatusCode::Failure, "no such handle")),
        };
        Ok(Attrs {
            id,
            attrs: self.file_attrs(&path).await?,
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        // Modes and times are kept as they are (scp -p, sftp -p ask for
        // them): the file must exist.
        let path = self.resolve(&path)?;
        self.file_attrs(&path).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.handles.get_mut(&handle) {
            // A size set on a file being written: held to at close.
            Some(Open::Write(w)) => {
                if let Some(n) = attrs.size {
                    w.set_size = Some(n);
                }
                Ok(ok(id))
            }
            // Modes and times are kept as they are.
            Some(_) => Ok(ok(id)),
            None => Err(reply(StatusCode::Failure, "no such handle")),
        }
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = self.resolve(&path)?;
        let list = self
            .engine
            .list_dir(&self.p, self.id, &path)
            .await
            .map_err(engine_error)?;
        let mut files: Vec<File> = list
            .iter()
            .map(|f| File::new(f.name.clone(), attrs(f)))
            .collect();
        // Handed out from the end.
        files.reverse();
        Ok(Handle {
            id,
            handle: self.add(Open::Dir(files))?,
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Open::Dir(files)) = self.handles.get_mut(&handle) else {
            return Err(reply(StatusCode::Failure, "not a directory handle"));
        };
        if files.is_empty() {
            return Err(reply(StatusCode::Eof, "end of directory"));
        }
        let at = files.len().saturating_sub(DIR_BATCH);
        let mut batch = files.split_off(at);
        batch.reverse();
        Ok(Name { id, files: batch })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&filename)?;
        self.engine
            .remove(&self.p, self.id, &path, false)
            .await
            .map_err(engine_error)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.resolve(&path)?;
        let mode = attrs.permissions.map(|m| m & 0o7777);
        self.engine
            .mkdir(&self.p, self.id, &path, false, mode)
            .await
            .map_err(engine_error)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&path)?;
        match self.engine.stat(&self.p, self.id, &path).await {
            Ok(f) if f.kind != "dir" => {
                return Err(reply(
                    StatusCode::Failure,
                    format!("{path} is not a directory"),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(engine_error(e)),
        }
        self.engine
            .remove(&self.p, self.id, &path, false)
            .await
            .map_err(engine_error)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.resolve(&path)?;
        Ok(Name {
            id,
            files: vec![File::dummy(path)],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let from = self.resolve(&oldpath)?;
        let to = self.resolve(&newpath)?;
        self.engine
            .rename(&self.p, self.id, &from, &to)
            .await
            .map_err(engine_error)?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_core::model::SandboxSpec;
    use paddock_core::store::Store;
    use paddock_core::testing::FakeRuntime;
    use paddock_core::{EngineConfig, Runtime};

    /// One session writing ahead of a gap on many handles: the daemon
    /// keeps at most `MAX_AHEAD` for it (each handle's own bound let a
    /// session hold 256 × 64 MiB).
    #[tokio::test]
    async fn writes_ahead_of_a_gap_are_bounded_per_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("paddock.db")).unwrap());
        let rt = Arc::new(FakeRuntime::default());
        let agents = rt.connector();
        let cfg = EngineConfig {
            agent_timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        let engine = Engine::new(store, vec![rt as Arc<dyn Runtime>], None, agents, cfg).unwrap();
        let p = Principal::new("alice");
        let (sb, _) = engine.create(&p, SandboxSpec::default()).await.unwrap();
        let mut h = Sftp {
            engine,
            p,
            id: sb.id,
            home: "/".into(),
            handles: HashMap::new(),
            next: 0,
        };
        let chunk = vec![0u8; 1 << 20];
        let mut held = 0;
        for i in 0..6 {
            let w = h.open_write(&format!("/f{i}"), None, false, 0);
            let handle = h.add(Open::Write(w)).unwrap();
            // Byte 0 never comes: everything after it waits.
            for k in 1..=20u64 {
                if h.write_at(&handle, k << 20, chunk.clone()).await.is_err() {
                    break;
                }
                held += chunk.len();
            }
        }
        assert!(held <= MAX_AHEAD, "the session holds {held} bytes ahead");
        assert!(AHEAD_ALL.load(std::sync::atomic::Ordering::SeqCst) <= MAX_AHEAD);
        // Its handles gone, the daemon's budget is whole again.
        drop(h);
        assert_eq!(AHEAD_ALL.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
