//! Resource figures from the kernel: CPU time of this process (getrusage) and of the
//! server (utime+stime in `/proc/PID/stat`, all threads), the server's VmRSS, and the
//! descriptor limit.

use anyhow::{Context as _, Result, bail};
use std::time::{Duration, Instant};

/// Raises this process's RLIMIT_NOFILE soft limit to the hard limit; returns the new limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error()).context("setrlimit");
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// A short id unique enough to keep login names of successive runs apart.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id() & 0xffff, nanos & 0xfffff)
}

/// CPU seconds (user + system) this process has used.
pub fn own_cpu() -> f64 {
    // SAFETY: getrusage with a pointer to a zeroed, live rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (utime + stime, all threads) process `pid` has used, from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server PID right?)"))?;
    parse_stat_cpu(&text, clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn parse_stat_cpu(text: &str, ticks: f64) -> Result<f64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let after = text.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    if fields.len() < 13 {
        bail!("unexpected /proc stat format");
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok((utime + stime) as f64 / ticks)
}

/// Resident set size of `pid` in bytes, from VmRSS in `/proc/PID/status`.
pub fn process_rss(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&text)
}

fn parse_vm_rss(text: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()
        .context("VmRSS value")?;
    Ok(kib * 1024)
}

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub client_cpu: f64,
    /// Per server PID given, in order; `None` where `/proc` could not be read.
    pub server_cpus: Vec<Option<f64>>,
    /// Busy CPU seconds of the whole machine (`/proc/stat`), to see foreign load.
    pub machine_busy: Option<f64>,
}

impl Snapshot {
    /// Reads this process's CPU time, that of every PID in `server_pids`, and the machine's.
    pub fn take(server_pids: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            client_cpu: own_cpu(),
            server_cpus: server_pids.iter().map(|&p| process_cpu(p).ok()).collect(),
            machine_busy: machine_busy(),
        }
    }

    /// Wall time and CPU used from `self` to `later`.
    pub fn until(&self, later: &Snapshot) -> Usage {
        let per_server: Option<Vec<f64>> = self
            .server_cpus
            .iter()
            .zip(&later.server_cpus)
            .map(|(a, b)| Some((*b)? - (*a)?))
            .collect();
        let per_server = per_server.filter(|v| !v.is_empty());
        Usage {
            wall: later.at.saturating_duration_since(self.at),
            client_cpu: later.client_cpu - self.client_cpu,
            server_cpu: per_server.as_ref().map(|v| v.iter().sum()),
            per_server: per_server.unwrap_or_default(),
            machine_busy: match (self.machine_busy, later.machine_busy) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
        }
    }
}

/// Wall and CPU time over a measured window.
#[derive(Debug, Clone)]
pub struct Usage {
    pub wall: Duration,
    pub client_cpu: f64,
    /// All server processes together; `None` without server PIDs (or unreadable).
    pub server_cpu: Option<f64>,
    /// Each server process, in the order the PIDs were given (empty when `server_cpu` is
    /// `None`).
    pub per_server: Vec<f64>,
    /// Busy CPU seconds of the whole machine over the window.
    pub machine_busy: Option<f64>,
}

impl Usage {
    /// CPU seconds used by everything but this client and the server: other processes
    /// (a compiler, another benchmark) disturbing the measurement.
    pub fn other_cpu(&self) -> Option<f64> {
        Some((self.machine_busy? - self.client_cpu - self.server_cpu.unwrap_or(0.0)).max(0.0))
    }
}

/// Busy CPU seconds of all CPUs since boot: the first line of `/proc/stat` minus idle and
/// iowait.
pub fn machine_busy() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(&text, clock_ticks())
}

fn parse_machine_busy(text: &str, ticks: f64) -> Option<f64> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    if v.len() < 8 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some(busy as f64 / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "1234 (node (x) y) S 1 1234 1234 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 11 0";
        assert_eq!(parse_stat_cpu(stat, 100.0).unwrap(), 3.0);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tnode\nVmPeak:\t  999 kB\nVmRSS:\t   51200 kB\nThreads:\t11\n";
        assert_eq!(parse_vm_rss(status).unwrap(), 51200 * 1024);
    }

    #[test]
    fn parses_proc_stat() {
        let stat = "cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_busy(stat, 100.0), Some(1.61));
        assert!(machine_busy().is_some());
    }

    #[test]
    fn sums_several_servers() {
        let me = std::process::id();
        let a = Snapshot::take(&[me, me]);
        let b = Snapshot::take(&[me, me]);
        let u = a.until(&b);
        assert_eq!(u.per_server.len(), 2);
        assert!((u.server_cpu.unwrap() - u.per_server.iter().sum::<f64>()).abs() < 1e-12);
        assert!(a.until(&Snapshot::take(&[])).server_cpu.is_none());
        let dead = Snapshot::take(&[me, u32::MAX]);
        assert!(dead.until(&dead).server_cpu.is_none());
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(process_cpu(pid).unwrap() >= 0.0);
        assert!(process_rss(pid).unwrap() > 0);
    }
}
