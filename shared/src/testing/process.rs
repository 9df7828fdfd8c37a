//! Reading a child process's memory, for the benchmarks.

/// A `/proc/{pid}/status` field in KiB, such as `VmRSS:` (resident now) or `VmHWM:` (peak
/// resident). `None` where `/proc` is not available or the process has gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
