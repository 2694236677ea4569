//! CPU time of the processes a run loads, from `/proc/<pid>/stat`: what each server (and
//! the load generator itself) spends per processed bid and per delivered frame is steadier
//! than wall-clock throughput on a shared machine, and says where the time goes.

use std::collections::BTreeMap;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` of one process (every thread), with its parent's pid, in ticks.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last `)`.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU ticks of `root` and of its live children (PostgreSQL's backends are children of
/// the postmaster; a child's time is in its own `stat` until it is reaped).
fn tree_ticks(root: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (ppid, ticks) = stat(pid)?;
            (pid == root || ppid == root).then_some(ticks)
        })
        .sum()
}

/// A named process whose CPU is measured (`name=pid` on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The name it is reported under, e.g. `redis`.
    pub name: String,
    /// Its pid; its live children are counted with it.
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected name=pid"))?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: the pid is not a number"))?;
        if name.trim().is_empty() {
            return Err(format!("`{s}`: the name is empty"));
        }
        Ok(Self {
            name: name.trim().to_owned(),
            pid,
        })
    }
}

/// CPU readings of every watched process (and of this one) at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    ticks: Vec<u64>,
    own: u64,
}

/// Reads the CPU of every watched process and of the load generator.
pub fn sample(watched: &[Watched]) -> Sample {
    Sample {
        ticks: watched.iter().map(|w| tree_ticks(w.pid)).collect(),
        own: stat(std::process::id()).map_or(0, |(_, t)| t),
    }
}

/// One process's CPU over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessCpu {
    /// CPU seconds (user + system) over the measured window.
    pub cpu_s: f64,
    /// Share of one core over the window, %.
    pub core_percent: f64,
    /// CPU µs per processed bid (accepted or refused), when bids were processed.
    pub us_per_bid: Option<f64>,
    /// CPU µs per delivered frame (`price` frames plus bid replies), when any.
    pub us_per_frame: Option<f64>,
}

/// What was processed in the measured window, to divide the CPU by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    /// Bids answered (accepted or refused).
    pub bids: u64,
    /// Frames delivered to the clients: `price` frames and bid replies.
    pub frames: u64,
    /// Length of the window, s.
    pub seconds: f64,
}

/// The CPU of each process between two samples, per unit of work; the load generator
/// itself is reported as `gavel-load`.
pub fn report(
    watched: &[Watched],
    before: &Sample,
    after: &Sample,
    work: Work,
) -> BTreeMap<String, ProcessCpu> {
    let per = |ticks: u64| {
        let cpu_s = ticks as f64 / TICKS_PER_SECOND;
        let per = |n: u64| (n > 0).then(|| cpu_s * 1e6 / n as f64);
        ProcessCpu {
            cpu_s,
            core_percent: if work.seconds > 0.0 {
                cpu_s / work.seconds * 100.0
            } else {
                0.0
            },
            us_per_bid: per(work.bids),
            us_per_frame: per(work.frames),
        }
    };
    let mut out = BTreeMap::new();
    for (i, w) in watched.iter().enumerate() {
        let ticks = after.ticks[i].saturating_sub(before.ticks[i]);
        *out.entry(w.name.clone()).or_insert(0) += ticks;
    }
    let mut out: BTreeMap<String, ProcessCpu> =
        out.into_iter().map(|(name, t)| (name, per(t))).collect();
    out.insert(
        "gavel-load".into(),
        per(after.own.saturating_sub(before.own)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_pids_parse() {
        assert_eq!(
            "redis=42".parse::<Watched>(),
            Ok(Watched {
                name: "redis".into(),
                pid: 42
            })
        );
        assert!("redis".parse::<Watched>().is_err());
        assert!("redis=x".parse::<Watched>().is_err());
        assert!("=3".parse::<Watched>().is_err());
    }

    /// A child that burns CPU is counted with its parent while it lives, and the per-bid
    /// figure divides the CPU by the work.
    #[test]
    fn a_busy_child_is_counted_with_its_parent() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let watched = vec![Watched {
            name: "me".into(),
            pid: std::process::id(),
        }];
        let before = sample(&watched);
        let child_before = stat(child.id()).unwrap().1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut child_after = child_before;
        while child_after < child_before + 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            child_after = stat(child.id()).unwrap().1;
        }
        let after = sample(&watched);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(child_after >= child_before + 5, "the busy child got no CPU");
        let work = Work {
            bids: 1_000,
            frames: 0,
            seconds: 1.0,
        };
        let report = report(&watched, &before, &after, work);
        let me = &report["me"];
        // This process mostly sleeps: without its child its time would not grow this much.
        assert!(me.cpu_s * TICKS_PER_SECOND >= (child_after - child_before) as f64 - 0.5);
        assert_eq!(me.us_per_bid, Some(me.cpu_s * 1e6 / 1_000.0));
        assert_eq!(me.us_per_frame, None);
        assert!(report.contains_key("gavel-load"));
    }
}
