//! The main processes' output, kept on the host.
//!
//! The agent holds a sandbox's main-process output (`MainOutput` in the
//! agent protocol); the engine follows it and appends it here, one file
//! per sandbox in the daemon's log directory, which no sandbox can reach.
//! Each sandbox gets at most `max_bytes` on disk: its current file is
//! rotated to `<id>.log.1` (replacing the older one) once it holds half of
//! that. Offsets are counted over everything ever written, so a reader
//! that follows with an offset keeps its place across rotations; what was
//! rotated away is skipped.
//!
//! `<id>.log.pos` records, as text, where the current file starts in the
//! whole output and how far into the agent's output the engine has read,
//! so that a restarted daemon asks the agent for what it has not stored.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{Error, Result};

/// The most a read returns at once.
const READ_MAX: u64 = 16 << 20;

/// Where a sandbox's output stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Offset (in the whole output) of the current file's first byte.
    pub base: u64,
    /// Offset (in the whole output) of the rotated file's first byte.
    pub rotated_base: u64,
    /// How much of the agent's output (this boot) has been stored.
    pub agent: u64,
}

pub struct LogStore {
    dir: PathBuf,
    max_bytes: u64,
}

fn io(what: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let p = p.display().to_string();
    move |e| Error::Internal(format!("{what} {p}: {e}"))
}

impl LogStore {
    /// Logs under `dir`, at most `max_bytes` a sandbox (at least 2 KiB).
    pub fn new(dir: PathBuf, max_bytes: u64) -> Result<LogStore> {
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        Ok(LogStore {
            dir,
            max_bytes: max_bytes.max(2048),
        })
    }

    fn current(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    fn rotated(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log.1"))
    }

    fn pos_file(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log.pos"))
    }

    pub fn position(&self, id: Uuid) -> Position {
        let text = std::fs::read_to_string(self.pos_file(id)).unwrap_or_default();
        let n: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match n[..] {
            [base, rotated_base, agent] if rotated_base <= base => Position {
                base,
                rotated_base,
                agent,
            },
            _ => Position::default(),
        }
    }

    fn save(&self, id: Uuid, p: Position) -> Result<()> {
        let path = self.pos_file(id);
        std::fs::write(
            &path,
            format!("{} {} {}\n", p.base, p.rotated_base, p.agent),
        )
        .map_err(io("write", &path))
    }

    fn len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// A new boot of the sandbox: its agent counts its output from 0.
    pub fn new_boot(&self, id: Uuid) -> Result<()> {
        let mut p = self.position(id);
        if p.agent != 0 {
            p.agent = 0;
            self.save(id, p)?;
        }
        Ok(())
    }

    /// Appends what the agent sent from `agent_offset` on; returns the
    /// agent offset to ask from next. A gap (output the agent no longer
    /// held) is noted in the log.
    pub fn append(&self, id: Uuid, agent_offset: u64, data: &[u8]) -> Result<u64> {
        let sent = data.len() as u64;
        let mut p = self.position(id);
        let path = self.current(id);
        let mut note = Vec::new();
        if agent_offset > p.agent {
            note = format!(
                "[paddock] {} bytes of output were lost while nobody read them\n",
                agent_offset - p.agent
            )
            .into_bytes();
        }
        let len = Self::len(&path);
        let adding = (note.len() + data.len()) as u64;
        if len > 0 && len + adding > self.max_bytes / 2 {
            let rotated = self.rotated(id);
            std::fs::rename(&path, &rotated).map_err(io("rotate", &path))?;
            p.rotated_base = p.base;
            p.base += len;
        }
        // A single chunk larger than a file may hold keeps its tail.
        let keep = (self.max_bytes / 2) as usize;
        let (note, data) = if note.len() + data.len() > keep {
            let skip = note.len() + data.len() - keep;
            p.base += skip as u64;
            let all: Vec<u8> = note.iter().chain(data).copied().collect();
            (Vec::new(), all[skip..].to_vec())
        } else {
            (note, data.to_vec())
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        f.write_all(&note)
            .and_then(|()| f.write_all(&data))
            .map_err(io("write", &path))?;
        p.agent = agent_offset.saturating_add(sent);
        self.save(id, p)?;
        Ok(p.agent)
    }

    /// The output from `offset` (in the whole output) on, at most 16 MiB:
    /// from the oldest byte still kept when `offset` was rotated away.
    pub fn read(&self, id: Uuid, offset: u64) -> Result<Vec<u8>> {
        let p = self.position(id);
        let mut out = Vec::new();
        let rotated = self.rotated(id);
        let rotated_len = Self::len(&rotated);
        let mut at = offset;
        if rotated_len > 0 {
            at = at.max(p.rotated_base);
            if at < p.rotated_base + rotated_len {
                read_from(&rotated, at - p.rotated_base, READ_MAX, &mut out)?;
                at = p.base;
            }
        }
        let at = at.max(p.base);
        let left = READ_MAX.saturating_sub(out.len() as u64);
        read_from(&self.current(id), at - p.base, left, &mut out)?;
        Ok(out)
    }

    /// Forgets a sandbox's output.
    pub fn remove(&self, id: Uuid) {
        for p in [self.current(id), self.rotated(id), self.pos_file(id)] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn read_from(path: &Path, offset: u64, max: u64, out: &mut Vec<u8>) -> Result<()> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("open", path)(e)),
    };
    // Past the end (or beyond what a file offset holds): nothing yet.
    if offset >= f.metadata().map_err(io("read", path))?.len() {
        return Ok(());
    }
    f.seek(SeekFrom::Start(offset)).map_err(io("read", path))?;
    f.take(max).read_to_end(out).map_err(io("read", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: u64) -> (LogStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "paddock-logs-{}-{}",
            std::process::id(),
            Uuid::new_v4()
        ));
        (LogStore::new(dir.clone(), max).unwrap(), dir)
    }

    #[test]
    fn appends_reads_and_keeps_the_agents_place() {
        let (s, dir) = store(1 << 20);
        let id = Uuid::new_v4();
        assert_eq!(s.read(id, 0).unwrap(), b"");
        assert_eq!(s.append(id, 0, b"hello ").unwrap(), 6);
        assert_eq!(s.append(id, 6, b"world\n").unwrap(), 12);
        assert_eq!(s.read(id, 0).unwrap(), b"hello world\n");
        assert_eq!(s.read(id, 6).unwrap(), b"world\n");
        assert_eq!(s.read(id, 99).unwrap(), b"");
        assert_eq!(s.read(id, u64::MAX).unwrap(), b"");
        assert_eq!(s.position(id).agent, 12);
        // A new boot counts from 0 again; what was stored stays.
        s.new_boot(id).unwrap();
        assert_eq!(s.append(id, 0, b"again\n").unwrap(), 6);
        assert_eq!(s.read(id, 0).unwrap(), b"hello world\nagain\n");
        // Output the agent dropped is noted.
        s.append(id, 10, b"x").unwrap();
        let all = String::from_utf8(s.read(id, 0).unwrap()).unwrap();
        assert!(all.ends_with("[paddock] 4 bytes of output were lost while nobody read them\nx"));
        s.remove(id);
        assert_eq!(s.read(id, 0).unwrap(), b"");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn never_holds_more_than_its_cap() {
        let (s, dir) = store(4096);
        let id = Uuid::new_v4();
        let mut agent = 0;
        for i in 0..1000u32 {
            let line = format!("line {i:05}\n");
            agent = s.append(id, agent, line.as_bytes()).unwrap();
        }
        let on_disk: u64 = [s.current(id), s.rotated(id)]
            .iter()
            .map(|p| LogStore::len(p))
            .sum();
        assert!(on_disk <= 4096, "{on_disk} bytes kept");
        // Offsets count everything: the last line is where it was written.
        let end = 1000 * 11;
        assert_eq!(s.read(id, end - 11).unwrap(), b"line 00999\n");
        // From 0: the oldest line still kept, whole lines in order.
        let kept = String::from_utf8(s.read(id, 0).unwrap()).unwrap();
        assert!(kept.ends_with("line 00999\n"));
        assert!(kept.starts_with("line "), "{kept:.40}");
        assert_eq!(kept.len() as u64, on_disk);
        // One chunk larger than a file may hold keeps its tail.
        let big = vec![b'z'; 5000];
        s.append(id, agent, &big).unwrap();
        assert!(LogStore::len(&s.current(id)) <= 2048);
        let _ = std::fs::remove_dir_all(dir);
    }
}
