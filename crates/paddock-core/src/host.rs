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
