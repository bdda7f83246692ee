//! What the process uses of the machine — CPU time, resident memory against its bound,
//! and the disk under the data directory — read from Linux's `/proc`, the cgroup and
//! `statvfs`, published as gauges every few seconds for alerts, the dashboard and the
//! degradation levels.
//!
//! Read by hand rather than through a process-metrics crate: three small files and one
//! system call, where the crates that do it bring a `/proc` parser of a few thousand lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the gauges are refreshed.
pub const EVERY: Duration = Duration::from_secs(5);

/// The machine as the process sees it at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    /// The memory the process may use: its cgroup's limit, or the machine's memory.
    pub memory_limit_bytes: u64,
    /// The filesystem holding the data directory: free to an unprivileged writer, and in all.
    pub disk_free_bytes: u64,
    pub disk_capacity_bytes: u64,
}

impl Reading {
    pub fn take(data_dir: &Path) -> Reading {
        let (disk_free_bytes, disk_capacity_bytes) = disk(data_dir).unwrap_or((0, 0));
        Reading {
            cpu_seconds: cpu_seconds().unwrap_or(0.0),
            resident_bytes: crate::memory::rss_bytes(),
            memory_limit_bytes: memory_limit_bytes().unwrap_or(0),
            disk_free_bytes,
            disk_capacity_bytes,
        }
    }

    fn publish(&self) {
        metrics::gauge!("k2_process_cpu_seconds").set(self.cpu_seconds);
        metrics::gauge!("k2_process_resident_memory_bytes").set(self.resident_bytes as f64);
        metrics::gauge!("k2_process_memory_limit_bytes").set(self.memory_limit_bytes as f64);
        metrics::gauge!("k2_data_dir_free_bytes").set(self.disk_free_bytes as f64);
        metrics::gauge!("k2_data_dir_capacity_bytes").set(self.disk_capacity_bytes as f64);
    }
}

pub fn describe() {
    use metrics::{Unit, describe_gauge};
    describe_gauge!(
        "k2_process_cpu_seconds",
        Unit::Seconds,
        "CPU time the process has used, user and system (a counter's value, read from /proc)."
    );
    describe_gauge!(
        "k2_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the process."
    );
    describe_gauge!(
        "k2_process_memory_limit_bytes",
        Unit::Bytes,
        "The memory the process may use: its cgroup's limit, else the machine's memory."
    );
    describe_gauge!(
        "k2_data_dir_free_bytes",
        Unit::Bytes,
        "Free space of the filesystem under the data directory."
    );
    describe_gauge!(
        "k2_data_dir_capacity_bytes",
        Unit::Bytes,
        "Size of the filesystem under the data directory."
    );
}

/// Publishes a [`Reading`] now and every [`EVERY`] for as long as the process runs.
pub fn publish_periodically(data_dir: PathBuf) {
    Reading::take(&data_dir).publish();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let dir = data_dir.clone();
            if let Ok(reading) = tokio::task::spawn_blocking(move || Reading::take(&dir)).await {
                reading.publish();
            }
        }
    });
}

/// User plus system CPU time of this process (`/proc/self/stat`, fields 14 and 15).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system; no pointers.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// The cgroup's memory limit (v2 `memory.max`, else v1 `memory.limit_in_bytes`) when it
/// sets one below the machine's memory, else the machine's memory (`/proc/meminfo`).
fn memory_limit_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)?;
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    Some(cgroup.map_or(machine, |limit| limit.min(machine)))
}

/// (free to unprivileged users, capacity) of the filesystem holding `dir` (or the nearest
/// existing parent).
fn disk(dir: &Path) -> Option<(u64, u64)> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `stat` is written
    // by the call before it is read, and only when the call succeeds.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    let block = stat.f_frsize as u64;
    Some((stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_of_this_process_is_plausible() {
        // Some CPU used first: a fresh test process may not have used a clock tick yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while cpu_seconds() == Some(0.0) && std::time::Instant::now() < deadline {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let dir = tempfile::tempdir().unwrap();
        let r = Reading::take(&dir.path().join("not-yet"));
        assert!(r.cpu_seconds > 0.0, "{r:?}");
        assert!(r.resident_bytes > 1 << 20, "{r:?}");
        assert!(r.memory_limit_bytes >= r.resident_bytes, "{r:?}");
        assert!(
            r.disk_capacity_bytes >= r.disk_free_bytes && r.disk_capacity_bytes > 0,
            "{r:?}"
        );
    }
}
