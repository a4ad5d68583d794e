//! Facts about the host the daemon runs on.

/// Fields of /proc/meminfo, KiB, in the order asked; None when the file
/// cannot be read. A field the kernel lacks reads as 0.
pub fn meminfo_kib(fields: &[&str]) -> Option<Vec<u64>> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(
        fields
            .iter()
            .map(|k| {
                m.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect(),
    )
}

/// Whether process `pid` exists and has not exited: a zombie (exited, not
/// yet reaped by its parent) does not count.
pub fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which may itself hold ") ".
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(c) if c != 'Z' && c != 'X')
}
