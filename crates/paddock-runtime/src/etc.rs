//! The default image's `/etc`: what programs need of the host's, and
//! nothing else.
//!
//! The host's whole `/etc` used to be bound into sandboxes with a denylist
//! of masks over it, and root in a sandbox (CAP_DAC_OVERRIDE) read every
//! file left unmasked: the daemon's own config with its registry
//! passwords, other services' secrets (`/etc/postgresql/.../pg_hba.conf`),
//! tokens in `pip.conf` or `npmrc`. Now the backend copies, at every start
//! (so host updates reach it), the entries of [`ALLOWED`] into a directory
//! of its data dir, bound read-only over the sandboxes' `/etc`. Of those
//! only what everyone on the host may read is copied (a mode-0600 file
//! under an allowed directory stays out); symlinks are copied as symlinks
//! (into `/usr`, which sandboxes see, or within this `/etc`); `passwd` and
//! `group` keep only the base accounts ([`base_account`]).
//!
//! The directory is updated in place (each file written aside and renamed
//! over), so sandboxes that outlive a restart of the daemon keep a whole
//! `/etc`; `hosts`, `hostname` and `resolv.conf` are only mount points for
//! each sandbox's own, never replaced (replacing one would detach the
//! running sandboxes' mounts over it).

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_core::{Error, Result};

/// What is copied of the host's `/etc`, by what needs it. A name ending in
/// `*` stands for every top-level entry it begins.
pub const ALLOWED: &[(&str, &[&str])] = &[
    (
        "the dynamic linker",
        &["ld.so.cache", "ld.so.conf", "ld.so.conf.d"],
    ),
    (
        "users and groups (passwd and group are made apart) and name \
         services (hosts, hostname and resolv.conf are each sandbox's own)",
        &[
            "nsswitch.conf",
            "host.conf",
            "gai.conf",
            "networks",
            "protocols",
            "services",
            "rpc",
            "ethertypes",
            "login.defs",
        ],
    ),
    (
        "TLS: the CA certificates and OpenSSL's config (never ssl/private)",
        &["ssl/certs", "ssl/openssl.cnf", "ca-certificates.conf"],
    ),
    (
        "commands chosen among alternatives (symlinks into /usr)",
        &["alternatives"],
    ),
    (
        "what the system is",
        &["os-release", "lsb-release", "debian_version"],
    ),
    (
        "the interpreters' and runtimes' own config",
        &["python3*", "perl", "java-*"],
    ),
    (
        "shells and terminals",
        &[
            "bash.bashrc",
            "profile",
            "profile.d",
            "inputrc",
            "shells",
            "terminfo",
        ],
    ),
    (
        "time, locale, file types, fonts and the mount table",
        &[
            "localtime",
            "timezone",
            "locale.alias",
            "mime.types",
            "magic",
            "magic.mime",
            "fonts",
            "mtab",
        ],
    ),
];

/// Each sandbox's own files, bound over these (empty) mount points.
pub const MOUNT_POINTS: &[&str] = &["hosts", "hostname", "resolv.conf"];

/// How deep allowed directories are copied.
const MAX_DEPTH: usize = 8;
/// Larger files are not copied (nothing /etc should hold).
const MAX_FILE: u64 = 16 << 20;

/// Whether a host account or group id is one the sandbox keeps: Debian's
/// static base accounts (0-99, the same on every host: root, daemon, bin,
/// www-data...) and nobody/nogroup. Accounts of the host's users and
/// services (postgres, ...) stay out.
pub fn base_account(id: u32) -> bool {
    id < 100 || id == 65534
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// Makes or refreshes `dir` from `host` (the host's `/etc`).
pub fn prepare(host: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io(dir.display()))?;
    let mut kept: HashSet<PathBuf> = HashSet::new();
    for rel in expand(host) {
        for a in rel.ancestors().skip(1) {
            if !a.as_os_str().is_empty() {
                kept.insert(a.to_path_buf());
                let d = dir.join(a);
                if !std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                    remove_any(&d);
                    std::fs::create_dir(&d).map_err(io(d.display()))?;
                }
            }
        }
        sync(&host.join(&rel), &dir.join(&rel), 0)?;
        kept.insert(rel);
    }
    // Made from the host's, with only the base accounts.
    for (name, users) in [("passwd", true), ("group", false)] {
        let text = std::fs::read_to_string(host.join(name)).unwrap_or_default();
        write_if_changed(&dir.join(name), accounts(&text, users).as_bytes(), 0o644)?;
        kept.insert(name.into());
    }
    for m in MOUNT_POINTS {
        let p = dir.join(m);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::write(&p, "").map_err(io(p.display()))?;
        }
        kept.insert(m.into());
    }
    prune(dir, Path::new(""), &kept);
    Ok(())
}

/// [`ALLOWED`]'s entries that the host has, relative to `host`.
fn expand(host: &Path) -> Vec<PathBuf> {
    let top: Vec<String> = std::fs::read_dir(host)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in ALLOWED.iter().flat_map(|(_, n)| n.iter()) {
        match name.strip_suffix('*') {
            Some(prefix) => {
                let mut m: Vec<&String> = top.iter().filter(|t| t.starts_with(prefix)).collect();
                m.sort();
                out.extend(m.into_iter().map(PathBuf::from));
            }
            None if std::fs::symlink_metadata(host.join(name)).is_ok() => {
                out.push(PathBuf::from(name))
            }
            None => {}
        }
    }
    out
}

/// Removes what `dir`/`rel` holds beyond `kept` (entries and their
/// ancestors), looking into the ancestors only.
fn prune(dir: &Path, rel: &Path, kept: &HashSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        let r = rel.join(e.file_name());
        if !kept.contains(&r) {
            remove_any(&e.path());
        } else if kept.iter().any(|k| k != &r && k.starts_with(&r)) {
            prune(dir, &r, kept);
        }
    }
}

/// The host's `passwd` (`users`) or `group` with only the base accounts,
/// no password hashes, and no group members; root and nobody (nogroup)
/// always.
pub fn accounts(host: &str, users: bool) -> String {
    let mut out = String::new();
    let (mut root, mut nobody) = (false, false);
    for line in host.lines() {
        let mut f: Vec<&str> = line.split(':').collect();
        let want = if users { 7 } else { 4 };
        let Some(id) = f.get(2).and_then(|i| i.parse::<u32>().ok()) else {
            continue;
        };
        if f.len() != want || !base_account(id) {
            continue;
        }
        f[1] = "x";
        if !users {
            f[3] = "";
        }
        root |= id == 0;
        nobody |= id == 65534;
        out.push_str(&f.join(":"));
        out.push('\n');
    }
    let (r, n) = if users {
        (
            "root:x:0:0:root:/root:/bin/sh\n",
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
    } else {
        ("root:x:0:\n", "nogroup:x:65534:\n")
    };
    if !root {
        out.insert_str(0, r);
    }
    if !nobody {
        out.push_str(n);
    }
    out
}

/// Removes a file, link or directory tree, if there.
fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Where a new version of `p` is written before it is renamed over `p`.
fn aside(p: &Path) -> PathBuf {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    p.with_file_name(format!(".{name}.paddock-new"))
}

/// Writes `bytes` to `p` (mode `mode`), written aside and renamed over it,
/// unless `p` already holds them with that mode.
fn write_if_changed(p: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if m.is_file()
            && m.permissions().mode() & 0o7777 == mode
            && std::fs::read(p).is_ok_and(|b| b == bytes)
        {
            return Ok(());
        }
        if m.is_dir() {
            remove_any(p);
        }
    }
    let tmp = aside(p);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(tmp.display()))?;
    f.write_all(bytes).map_err(io(tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io(tmp.display()))?;
    std::fs::rename(&tmp, p).map_err(io(p.display()))
}

/// Makes `dst` what `src` is: a copy of a file that everyone may read, the
/// same symlink, or a directory of the same, recursively; nothing when
/// `src` is none of these.
fn sync(src: &Path, dst: &Path, depth: usize) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(src) else {
        remove_any(dst);
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(io(src.display()))?;
        if std::fs::read_link(dst).ok().as_deref() == Some(target.as_path()) {
            return Ok(());
        }
        if std::fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
            remove_any(dst);
        }
        let tmp = aside(dst);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io(tmp.display()))?;
        std::fs::rename(&tmp, dst).map_err(io(dst.display()))
    } else if ft.is_file() && mode & 0o004 != 0 && meta.len() <= MAX_FILE {
        let bytes = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
            .and_then(|mut f| {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut b).map(|_| b)
            })
            .map_err(io(src.display()))?;
        write_if_changed(dst, &bytes, mode)
    } else if ft.is_dir() && mode & 0o005 == 0o005 && depth < MAX_DEPTH {
        if !std::fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
            remove_any(dst);
            std::fs::create_dir(dst).map_err(io(dst.display()))?;
        }
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
            .map_err(io(dst.display()))?;
        let mut names = HashSet::new();
        for e in std::fs::read_dir(src).map_err(io(src.display()))?.flatten() {
            names.insert(e.file_name());
            sync(&e.path(), &dst.join(e.file_name()), depth + 1)?;
        }
        if let Ok(rd) = std::fs::read_dir(dst) {
            for e in rd.flatten() {
                if !names.contains(&e.file_name()) {
                    remove_any(&e.path());
                }
            }
        }
        Ok(())
    } else {
        // Private to its owner, a device, a socket...: not copied.
        remove_any(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(p: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn copies_only_the_allowlist_and_refreshes() {
        let t = tempfile::tempdir().unwrap();
        let (host, dir) = (t.path().join("host"), t.path().join("etc"));
        write(&host.join("ld.so.cache"), "cache", 0o644);
        write(&host.join("nsswitch.conf"), "passwd: files", 0o644);
        write(&host.join("shadow"), "root:$6$hash", 0o640);
        write(&host.join("paddock/config.toml"), "password", 0o600);
        write(&host.join("postgresql/15/main/pg_hba.conf"), "x", 0o640);
        write(&host.join("pip.conf"), "token", 0o644);
        write(&host.join("ssl/certs/ca.pem"), "CERT", 0o644);
        write(&host.join("ssl/openssl.cnf"), "cnf", 0o644);
        write(&host.join("ssl/private/key.pem"), "KEY", 0o600);
        write(&host.join("python3.11/sitecustomize.py"), "", 0o644);
        write(
            &host.join("java-17-openjdk/jmxremote.password"),
            "pw",
            0o600,
        );
        write(
            &host.join("java-17-openjdk/security/java.security"),
            "j",
            0o644,
        );
        write(&host.join("hosts"), "host's hosts", 0o644);
        std::fs::create_dir_all(host.join("alternatives")).unwrap();
        symlink("/usr/bin/mawk", host.join("alternatives/awk")).unwrap();
        symlink("../usr/lib/os-release", host.join("os-release")).unwrap();
        symlink("ca.pem", host.join("ssl/certs/abcd.0")).unwrap();
        write(
            &host.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n\
             daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
             alice:x:1000:1000::/home/alice:/bin/bash\n\
             postgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n",
            0o644,
        );
        write(
            &host.join("group"),
            "root:x:0:\nsudo:x:27:alice\nnogroup:x:65534:\nalice:x:1000:\n",
            0o644,
        );

        prepare(&host, &dir).unwrap();
        assert_eq!(
            names(&dir),
            [
                "alternatives",
                "group",
                "hostname",
                "hosts",
                "java-17-openjdk",
                "ld.so.cache",
                "nsswitch.conf",
                "os-release",
                "passwd",
                "python3.11",
                "resolv.conf",
                "ssl"
            ]
        );
        assert_eq!(names(&dir.join("ssl")), ["certs", "openssl.cnf"]);
        assert_eq!(names(&dir.join("java-17-openjdk")), ["security"]);
        assert_eq!(
            std::fs::read_link(dir.join("alternatives/awk")).unwrap(),
            Path::new("/usr/bin/mawk")
        );
        assert_eq!(
            std::fs::read_link(dir.join("ssl/certs/abcd.0")).unwrap(),
            Path::new("ca.pem")
        );
        assert_eq!(std::fs::read_to_string(dir.join("hosts")).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(dir.join("passwd")).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\n\
             daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("group")).unwrap(),
            "root:x:0:\nsudo:x:27:\nnogroup:x:65534:\n"
        );

        // A restart after host updates: a changed file, a removed one, a
        // new allowed one, a file made private; what the sandboxes bound
        // over the mount points stays.
        write(&host.join("nsswitch.conf"), "passwd: files systemd", 0o644);
        std::fs::remove_file(host.join("ssl/certs/abcd.0")).unwrap();
        write(&host.join("ssl/certs/new.pem"), "NEW", 0o644);
        write(&host.join("timezone"), "UTC", 0o644);
        std::fs::set_permissions(
            host.join("ld.so.cache"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.join("resolv.conf"), "mount point").unwrap();
        std::fs::write(dir.join("stray"), "left by an older daemon").unwrap();
        prepare(&host, &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("nsswitch.conf")).unwrap(),
            "passwd: files systemd"
        );
        assert_eq!(names(&dir.join("ssl/certs")), ["ca.pem", "new.pem"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("timezone")).unwrap(),
            "UTC"
        );
        assert!(!dir.join("ld.so.cache").exists());
        assert!(!dir.join("stray").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
            "mount point"
        );
    }

    #[test]
    fn accounts_keep_root_and_nobody() {
        assert_eq!(
            accounts("alice:x:1000:1000::/home/alice:/bin/bash\n", true),
            "root:x:0:0:root:/root:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(
            accounts("root:$6$hash:0:0:root:/root:/bin/bash\n", true)
                .lines()
                .next(),
            Some("root:x:0:0:root:/root:/bin/bash")
        );
        assert_eq!(accounts("", false), "root:x:0:\nnogroup:x:65534:\n");
    }
}
