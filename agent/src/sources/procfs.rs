//! Readers of procfs: host CPU time (`/proc/stat`), CPU model and topology (`/proc/cpuinfo`), and
//! the CPU time of a job's process tree (`/proc/<pid>/stat`), used by the CPU estimate and by
//! process attribution.
//!
//! Times are in clock ticks of `USER_HZ`, which Linux fixes at 100 per second for user space on
//! every architecture it supports (proc(5): "units of USER_HZ (1/100ths of a second on most
//! architectures)"; the kernel's `USER_HZ` constant is 100 in `include/asm-generic/param.h`).

use super::{SourceError, read_small};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Clock ticks per second of procfs CPU times (`USER_HZ`, see the module documentation).
pub const USER_HZ: f64 = 100.0;

/// Host-wide CPU time from the first (`cpu`) line of `/proc/stat`, in `USER_HZ` ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostCpuTimes {
    /// user + nice + system + irq + softirq + steal (guest time is already inside user).
    pub busy_ticks: u64,
    /// busy + idle + iowait.
    pub total_ticks: u64,
}

/// Parses the `cpu` line of `/proc/stat` (fields: user nice system idle iowait irq softirq steal
/// guest guest_nice, proc(5)); `None` when the text does not start with it.
#[must_use]
pub fn parse_host_cpu(stat: &[u8]) -> Option<HostCpuTimes> {
    let text = std::str::from_utf8(stat).ok()?;
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    for slot in &mut v {
        *slot = match fields.next() {
            Some(f) => f.parse().ok()?,
            None => 0, // old kernels lack steal
        };
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    let busy = user + nice + system + irq + softirq + steal;
    Some(HostCpuTimes {
        busy_ticks: busy,
        total_ticks: busy + idle + iowait,
    })
}

/// Reads `/proc/stat` through a caller-owned buffer (no allocation per read).
#[derive(Debug)]
pub struct HostCpuReader {
    path: PathBuf,
    buf: Vec<u8>,
}

impl HostCpuReader {
    /// A reader of `<procfs_root>/stat`.
    #[must_use]
    pub fn new(procfs_root: &Path) -> Self {
        Self {
            path: procfs_root.join("stat"),
            // The `cpu` line is well under 256 bytes; the rest of the file is not needed.
            buf: vec![0; 256],
        }
    }

    /// The file read.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current host CPU times.
    ///
    /// # Errors
    /// [`SourceError::Io`] naming the file, or [`SourceError::Parse`] when its first line is not
    /// a `cpu` line.
    pub fn read(&mut self) -> Result<HostCpuTimes, SourceError> {
        let n = read_small(&self.path, &mut self.buf)?;
        // Only complete lines: the first line ends before the buffer does.
        parse_host_cpu(&self.buf[..n]).ok_or_else(|| SourceError::Parse {
            what: self.path.display().to_string(),
            text: String::from_utf8_lossy(&self.buf[..n.min(80)]).into_owned(),
        })
    }
}

/// CPU model and topology from `/proc/cpuinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTopology {
    /// The first `model name` line (x86) or `Model`/`Hardware` line (ARM), if any.
    pub model_name: Option<String>,
    /// Number of `processor` entries (logical CPUs), at least 1.
    pub logical_cpus: u32,
    /// Number of distinct `physical id` values, at least 1 (ARM kernels print none).
    pub sockets: u32,
}

/// Parses `/proc/cpuinfo` text.
#[must_use]
pub fn parse_cpuinfo(text: &str) -> CpuTopology {
    let mut model = None;
    let mut fallback_model = None;
    let mut logical = 0u32;
    let mut sockets = HashSet::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => logical += 1,
            "model name" if model.is_none() && !value.is_empty() => model = Some(value.to_string()),
            "Model" | "Hardware" if fallback_model.is_none() && !value.is_empty() => {
                fallback_model = Some(value.to_string());
            }
            "physical id" => {
                sockets.insert(value.to_string());
            }
            _ => {}
        }
    }
    CpuTopology {
        model_name: model.or(fallback_model),
        logical_cpus: logical.max(1),
        sockets: u32::try_from(sockets.len()).unwrap_or(1).max(1),
    }
}

/// Parses `/proc/<pid>/stat`: `(ppid, utime + stime + cutime + cstime)` in ticks. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after the last `)`.
#[must_use]
pub fn parse_pid_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the comm: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let ppid = f.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..=14 {
        // cutime/cstime are signed in the kernel's format; negative never happens in practice.
        let v: i64 = f.get(i)?.parse().ok()?;
        ticks += u64::try_from(v).unwrap_or(0);
    }
    Some((ppid, ticks))
}

/// CPU time of a job's process tree: `job_pid` and all its descendants (found through the
/// `ppid` field of every `/proc/<pid>/stat`), summing utime + stime + cutime + cstime of live
/// members. The total is kept monotone: when a member exits and its time leaves the sum (its
/// parent outside the tree, or not yet reaped), the last total is kept rather than going back.
///
/// A scan lists `/proc` and allocates, so the sampler runs it once per window, not per sample.
#[derive(Debug)]
pub struct ProcessTree {
    procfs_root: PathBuf,
    job_pid: u32,
    last_ticks: u64,
}

impl ProcessTree {
    /// Tracks the tree rooted at `job_pid`.
    #[must_use]
    pub fn new(procfs_root: &Path, job_pid: u32) -> Self {
        Self {
            procfs_root: procfs_root.to_path_buf(),
            job_pid,
            last_ticks: 0,
        }
    }

    /// Scans procfs and returns the tree's cumulative CPU ticks (never less than the last call).
    pub fn cpu_ticks(&mut self) -> u64 {
        let now = scan_tree(&self.procfs_root, self.job_pid);
        self.last_ticks = self.last_ticks.max(now);
        self.last_ticks
    }
}

fn scan_tree(procfs_root: &Path, job_pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(procfs_root) else {
        return 0;
    };
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, ticks)) = parse_pid_stat(&text) {
            procs.push((pid, ppid, ticks));
        }
    }
    let mut members: HashSet<u32> = HashSet::from([job_pid]);
    // Parents may have higher pids than children after pid wrap-around: iterate to a fixpoint.
    loop {
        let before = members.len();
        for &(pid, ppid, _) in &procs {
            if members.contains(&ppid) {
                members.insert(pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    procs
        .iter()
        .filter(|(pid, _, _)| members.contains(pid))
        .map(|&(_, _, t)| t)
        .sum()
}

/// The job's share of host CPU time between two readings, clamped to [0, 1]; 0 when the host
/// was idle.
#[must_use]
pub fn cpu_share(tree_delta_ticks: u64, host_busy_delta_ticks: u64) -> f64 {
    if host_busy_delta_ticks == 0 {
        return 0.0;
    }
    (tree_delta_ticks as f64 / host_busy_delta_ticks as f64).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpu_counts_busy_fields() {
        let t = parse_host_cpu(b"cpu  100 2 30 500 7 1 4 5 0 0\ncpu0 1 2 3\n").expect("cpu line");
        assert_eq!(t.busy_ticks, 100 + 2 + 30 + 1 + 4 + 5);
        assert_eq!(t.total_ticks, t.busy_ticks + 500 + 7);
        assert_eq!(parse_host_cpu(b"intr 1 2"), None);
    }

    #[test]
    fn pid_stat_survives_odd_command_names() {
        let line = "1234 (my (odd) prog) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 50 10 5 20 0 1 0 100 0 0";
        assert_eq!(parse_pid_stat(line), Some((77, 250 + 50 + 10 + 5)));
    }

    #[test]
    fn cpuinfo_counts_sockets_and_threads() {
        let text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\nphysical id\t: 0\n\nprocessor\t: 1\nphysical id\t: 1\n";
        let t = parse_cpuinfo(text);
        assert_eq!(t.logical_cpus, 2);
        assert_eq!(t.sockets, 2);
        assert_eq!(
            t.model_name.as_deref(),
            Some("Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz")
        );
        assert_eq!(parse_cpuinfo("").logical_cpus, 1);
    }

    #[test]
    fn share_is_clamped() {
        assert_eq!(cpu_share(5, 0), 0.0);
        assert_eq!(cpu_share(50, 100), 0.5);
        assert_eq!(cpu_share(150, 100), 1.0);
    }

    #[test]
    fn own_process_tree_is_found_in_real_proc() {
        let mut tree = ProcessTree::new(Path::new("/proc"), std::process::id());
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let a = tree.cpu_ticks();
        let b = tree.cpu_ticks();
        assert!(b >= a);
    }
}
