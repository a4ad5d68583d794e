//! Finds the in-sandbox agent binary and refuses one that cannot run in
//! every image: the agent is PID 1 of sandboxes whose images may have no
//! libc at all (or another one, like alpine's musl), so it must be linked
//! statically. A workspace build (`cargo build --release`, `cargo test
//! --release`) leaves a dynamically linked `target/release/paddock-agent`
//! next to the daemon; the static one is under the explicit target's dir.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// How to build the agent so that it runs in any image.
const HOW: &str = "build the static agent with scripts/build.sh (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p paddock-agent --target x86_64-unknown-linux-gnu)";

/// The agent binary: `explicit` (`--agent`) if given, else the first static
/// one among the places a build or an install puts it. A dynamically linked
/// one is an error naming it, never a sandbox that fails to boot later.
pub fn find(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        // The OCI runtime resolves a relative mount source against the bundle.
        let p = std::fs::canonicalize(&p)
            .with_context(|| format!("--agent {}: no such file", p.display()))?;
        check_static(&p).with_context(|| format!("--agent {}", p.display()))?;
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    find_in(&candidates(dir))
}

/// Where to look, static builds first: an install puts the agent next to
/// the daemon; a workspace build's static agent is under the target triple's
/// dir, while `target/release/paddock-agent` is the dynamic one.
fn candidates(dir: &Path) -> Vec<PathBuf> {
    vec![
        dir.join("../x86_64-unknown-linux-gnu/release/paddock-agent"),
        dir.join("../../x86_64-unknown-linux-gnu/release/paddock-agent"),
        dir.join("paddock-agent"),
        PathBuf::from("/usr/local/lib/paddock/paddock-agent"),
    ]
}

fn find_in(candidates: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let mut refused = Vec::new();
    for p in candidates.iter().filter(|p| p.is_file()) {
        match check_static(p) {
            Ok(()) => return Ok(p.canonicalize().unwrap_or_else(|_| p.clone())),
            Err(e) => refused.push(format!("{}: {e:#}", p.display())),
        }
    }
    if refused.is_empty() {
        anyhow::bail!(
            "no paddock-agent binary found (looked at {candidates:?}); {HOW}, or pass --agent"
        );
    }
    anyhow::bail!(
        "no usable paddock-agent binary: {}; {HOW}, or pass --agent",
        refused.join("; ")
    )
}

/// Refuses a binary that is not a statically linked x86-64 ELF executable.
pub fn check_static(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    match elf_interpreter(&bytes) {
        Ok(None) => Ok(()),
        Ok(Some(interp)) => anyhow::bail!(
            "it is dynamically linked (interpreter {interp}) and cannot run in images without that libc; {HOW}"
        ),
        Err(why) => anyhow::bail!("not an x86-64 ELF executable ({why})"),
    }
}

/// The program interpreter (`PT_INTERP`) an ELF64 little-endian executable
/// names, `None` for a static one. Reading one program header type needs no
/// ELF crate: the header layout is fixed by the ELF64 specification.
fn elf_interpreter(b: &[u8]) -> Result<Option<String>, &'static str> {
    const PT_INTERP: u32 = 3;
    let at = |o: usize, n: usize| b.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| at(o, 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| at(o, 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()));
    let u64_at = |o: usize| at(o, 8).map(|s| u64::from_le_bytes(s.try_into().unwrap()));
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("no ELF magic");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("not 64-bit little-endian");
    }
    if u16_at(18) != Some(62) {
        return Err("not x86-64");
    }
    let phoff = u64_at(32).ok_or("truncated")? as usize;
    let phentsize = u16_at(54).ok_or("truncated")? as usize;
    let phnum = u16_at(56).ok_or("truncated")? as usize;
    if phentsize < 56 {
        return Err("bad program header size");
    }
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or("program headers past the end")?;
        if u32_at(ph).ok_or("truncated program headers")? != PT_INTERP {
            continue;
        }
        let off = u64_at(ph + 8).ok_or("truncated")? as usize;
        let len = u64_at(ph + 32).ok_or("truncated")? as usize;
        let raw = b
            .get(off..off.saturating_add(len))
            .ok_or("truncated interpreter")?;
        let name = raw.split(|&c| c == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic_and_refused() {
        // Test binaries are linked against the host's libc.
        let me = std::env::current_exe().unwrap();
        let e = check_static(&me).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert!(e.contains("scripts/build.sh"), "{e}");
    }

    #[test]
    fn a_static_agent_is_taken_and_found_before_a_dynamic_one() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
        let stat = root.join("x86_64-unknown-linux-gnu/release/paddock-agent");
        if !stat.is_file() {
            // Needs scripts/build.sh; the suite's scripts/test.sh runs it first.
            panic!("{} missing: run scripts/build.sh", stat.display());
        }
        check_static(&stat).unwrap();
        // A dynamic candidate first in the list is skipped for the static one.
        let me = std::env::current_exe().unwrap();
        assert_eq!(
            find_in(&[me.clone(), stat.clone()]).unwrap(),
            stat.canonicalize().unwrap()
        );
        // Only a dynamic one: an error naming it and how to build.
        let e = format!("{:#}", find_in(std::slice::from_ref(&me)).unwrap_err());
        assert!(e.contains(&me.display().to_string()), "{e}");
        assert!(e.contains("dynamically linked"), "{e}");
        // The static build is looked for before the daemon's own dir, where a
        // workspace build leaves the dynamic one.
        let c = candidates(&root.join("release"));
        assert!(c[0].ends_with("x86_64-unknown-linux-gnu/release/paddock-agent"));
    }

    #[test]
    fn garbage_is_not_an_agent() {
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(b"\x7fELF\x02\x01").is_err());
        let mut trunc = vec![0u8; 64];
        trunc[..4].copy_from_slice(b"\x7fELF");
        trunc[4] = 2;
        trunc[5] = 1;
        trunc[18] = 62;
        trunc[32] = 200; // program headers past the end
        trunc[54] = 56;
        trunc[56] = 1;
        assert!(elf_interpreter(&trunc).is_err());
        // Offsets at the end of the address space: an error, not an overflow.
        let mut huge = trunc.clone();
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(elf_interpreter(&huge).is_err());
    }
}
