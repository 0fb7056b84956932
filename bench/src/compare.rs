//! `duet-bench compare`: reads the `RESULT {json}` lines of runs against several servers
//! and writes markdown: a headline table of the key figures, then every metric per case,
//! each with the ratio other/baseline. Repeated runs of a case are summarised by their
//! median.
//!
//! `duet-bench summary`: the same lines as one table per scenario, a row per case and
//! label (e.g. single node, cluster same-node pairs, cluster cross-node pairs), each cell
//! the median and the range over repeated runs.

use crate::cli::{CompareArgs, SummaryArgs};
use crate::report::human;
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One parsed RESULT line.
struct Run {
    case: String,
    scenario: String,
    label: String,
    ok: bool,
    metrics: Vec<(String, f64)>,
}

/// The figures the headline table shows, per scenario.
const KEY_METRICS: &[(&str, &[&str])] = &[
    (
        "idle",
        &[
            "login_all_s",
            "rss_per_conn_bytes",
            "server_cpu_us_per_login",
        ],
    ),
    (
        "throughput",
        &[
            "msgs_per_s",
            "server_cpu_us_per_msg",
            "server_cpu_pct",
            "client_cpu_us_per_msg",
            "client_cpu_pct",
        ],
    ),
    (
        "latency",
        &[
            "latency_p50",
            "latency_p99",
            "latency_p999",
            "latency_max",
            "lost",
            "server_cpu_us_per_msg",
            "server_cpu_pct",
        ],
    ),
    (
        "calls",
        &[
            "setups_per_s",
            "setup_p50",
            "setup_p99",
            "server_cpu_ms_per_setup",
            "client_cpu_pct",
        ],
    ),
];

/// Whether a bigger value of a metric is better (`Some(true)`), worse, or neither.
pub fn higher_is_better(key: &str) -> Option<bool> {
    if key.ends_with("_per_s") || key.ends_with("_rate") || key == "logged_in" || key == "setups" {
        Some(true)
    } else if key.starts_with("latency_")
        || key.starts_with("setup_")
        || key.starts_with("cycle_")
        || key.starts_with("connect_login_")
        || (key.starts_with("server_cpu_") && key != "server_cpu_pct" && key != "server_cpu_s")
        || key.starts_with("send_lag_")
        || key == "rss_per_conn_bytes"
        || key == "login_all_s"
        || key == "lost"
        || key == "errors"
        || key == "failed"
    {
        Some(false)
    } else {
        None
    }
}

pub fn run(args: &CompareArgs) -> Result<String> {
    Ok(render(&read_runs(&args.files)?, &args.baseline))
}

pub fn summary(args: &SummaryArgs) -> Result<String> {
    Ok(render_summary(&read_runs(&args.files)?, &args.metrics))
}

/// The figures `summary` shows beyond a scenario's key figures, when present.
const SUMMARY_EXTRA: &[(&str, &[&str])] = &[
    ("throughput", &["client_cpu_us_per_msg", "other_cpu_pct"]),
    (
        "latency",
        &["send_lag_p99", "achieved_rate", "other_cpu_pct"],
    ),
];

fn render_summary(runs: &[Run], metrics: &[String]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in runs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each cell: median of the runs, and in brackets the lowest and highest run.\n"
    );
    for sc in scenarios {
        let runs: Vec<&Run> = runs.iter().filter(|r| r.scenario == sc).collect();
        // Rows in order of first appearance.
        let mut rows: Vec<(&str, &str)> = Vec::new();
        for r in &runs {
            if !rows.contains(&(r.case.as_str(), r.label.as_str())) {
                rows.push((&r.case, &r.label));
            }
        }
        let has = |k: &str| runs.iter().any(|r| r.metrics.iter().any(|(m, _)| m == k));
        let keys: Vec<String> = if metrics.is_empty() {
            let key = KEY_METRICS.iter().find(|(s, _)| *s == sc).map(|(_, k)| *k);
            let extra = SUMMARY_EXTRA
                .iter()
                .find(|(s, _)| *s == sc)
                .map(|(_, k)| *k);
            let mut keys: Vec<String> = key
                .unwrap_or(&[])
                .iter()
                .chain(extra.unwrap_or(&[]))
                .map(|k| k.to_string())
                .collect();
            // Per-process CPU of multi-process servers (cluster nodes, Redis).
            for i in 1..=9 {
                keys.push(format!("server{i}_cpu_pct"));
            }
            keys
        } else {
            metrics.to_vec()
        };
        let keys: Vec<&String> = keys.iter().filter(|k| has(k)).collect();
        let _ = writeln!(out, "### {sc}\n");
        let mut header = String::from("| case | server | runs |");
        let mut rule = String::from("|---|---|---:|");
        for k in &keys {
            let _ = write!(header, " {k} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for (case, label) in rows {
            let rs: Vec<&&Run> = runs
                .iter()
                .filter(|r| r.case == case && r.label == label)
                .collect();
            let failed = rs.iter().filter(|r| !r.ok).count();
            let mut count = rs.len().to_string();
            if failed > 0 {
                let _ = write!(count, " (**{failed} FAILED**)");
            }
            let _ = write!(out, "| {case} | {label} | {count} |");
            for k in &keys {
                let xs: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.metrics.iter().find(|(m, _)| m == *k).map(|(_, v)| *v))
                    .collect();
                let _ = write!(out, " {} |", spread_cell(xs));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }
    out
}

/// `median [min–max]`, or just the value for one run.
fn spread_cell(xs: Vec<f64>) -> String {
    if xs.is_empty() {
        return "–".into();
    }
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = xs.len();
    let m = median(xs);
    if n == 1 || lo == hi {
        human(m)
    } else {
        format!("{} [{}–{}]", human(m), human(lo), human(hi))
    }
}

fn read_runs(files: &[std::path::PathBuf]) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines() {
            if let Some(json) = line.strip_prefix("RESULT ") {
                runs.push(
                    parse_run(json).with_context(|| format!("a RESULT line in {}", f.display()))?,
                );
            }
        }
    }
    if runs.is_empty() {
        bail!("no RESULT lines found");
    }
    Ok(runs)
}

fn parse_run(json: &str) -> Result<Run> {
    let v: Value = serde_json::from_str(json)?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("missing `{k}`"))
    };
    let metrics = v["metrics"]
        .as_object()
        .context("missing `metrics`")?
        .iter()
        .filter_map(|(k, m)| m.as_f64().map(|x| (k.clone(), x)))
        .collect();
    Ok(Run {
        case: s("case")?,
        scenario: s("scenario")?,
        label: s("label")?,
        ok: v["ok"].as_bool().unwrap_or(false),
        metrics,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Per case: labels in order (baseline first), per label the runs.
struct Case<'a> {
    scenario: &'a str,
    labels: Vec<&'a str>,
    runs: BTreeMap<&'a str, Vec<&'a Run>>,
    metric_order: Vec<&'a str>,
}

impl Case<'_> {
    fn value(&self, label: &str, key: &str) -> Option<f64> {
        let runs = self.runs.get(label)?;
        let xs: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
            .collect();
        (!xs.is_empty()).then(|| median(xs))
    }
}

fn render(runs: &[Run], baseline: &str) -> String {
    let mut cases: Vec<(&str, Case)> = Vec::new();
    for r in runs {
        let idx = match cases.iter().position(|(c, _)| *c == r.case) {
            Some(i) => i,
            None => {
                cases.push((
                    &r.case,
                    Case {
                        scenario: &r.scenario,
                        labels: Vec::new(),
                        runs: BTreeMap::new(),
                        metric_order: Vec::new(),
                    },
                ));
                cases.len() - 1
            }
        };
        let case = &mut cases[idx].1;
        if !case.labels.contains(&r.label.as_str()) {
            case.labels.push(&r.label);
        }
        case.runs.entry(&r.label).or_default().push(r);
        for (k, _) in &r.metrics {
            if !case.metric_order.contains(&k.as_str()) {
                case.metric_order.push(k);
            }
        }
    }
    for (_, case) in &mut cases {
        case.labels.sort_by_key(|l| *l != baseline);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Key figures (median of runs; ratio = other / {baseline})\n"
    );
    let others: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for (_, c) in &cases {
            for l in &c.labels {
                if *l != baseline && !v.contains(l) {
                    v.push(l);
                }
            }
        }
        v
    };
    let mut header = format!("| case | metric | {baseline} |");
    let mut rule = String::from("|---|---|---:|");
    for o in &others {
        let _ = write!(header, " {o} | {o}/{baseline} |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(out, "{header} better |\n{rule}---|");
    for (name, case) in &cases {
        let keys = KEY_METRICS
            .iter()
            .find(|(s, _)| *s == case.scenario)
            .map(|(_, k)| *k)
            .unwrap_or(&[]);
        for key in keys.iter().filter(|k| case.metric_order.contains(k)) {
            let _ = writeln!(out, "{}", row(case, name, key, baseline, &others));
        }
    }

    for (name, case) in &cases {
        let _ = writeln!(out, "\n#### `{name}`\n");
        let counts: Vec<String> = case
            .labels
            .iter()
            .map(|l| {
                let rs = &case.runs[l];
                let failed = rs.iter().filter(|r| !r.ok).count();
                let mut s = format!("{l}: {} run(s)", rs.len());
                if failed > 0 {
                    let _ = write!(s, ", **{failed} FAILED**");
                }
                s
            })
            .collect();
        let _ = writeln!(out, "{}\n", counts.join("; "));
        let _ = writeln!(out, "{header} better |\n{rule}---|");
        for key in &case.metric_order {
            let _ = writeln!(out, "{}", row(case, "", key, baseline, &others));
        }
    }
    out
}

fn row(case: &Case, name: &str, key: &str, baseline: &str, others: &[&str]) -> String {
    let base = case.value(baseline, key);
    let cell = |v: Option<f64>| v.map(human).unwrap_or_else(|| "–".into());
    let mut s = format!("| {name} | {key} | {} |", cell(base));
    for o in others {
        let v = case.value(o, key);
        let ratio = match (v, base) {
            (Some(v), Some(b)) if b != 0.0 => format!("{:.2}", v / b),
            _ => "–".into(),
        };
        let _ = write!(s, " {} | {ratio} |", cell(v));
    }
    let better = match higher_is_better(key) {
        Some(true) => "higher",
        Some(false) => "lower",
        None => "",
    };
    let _ = write!(s, " {better} |");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_medians_with_ratios() {
        let line = |label: &str, v: f64| {
            format!(
                r#"{{"scenario":"throughput","case":"throughput pairs=2 window=4","label":"{label}","ok":true,"metrics":{{"msgs_per_s":{v},"server_cpu_us_per_msg":1.5}}}}"#
            )
        };
        let runs: Vec<Run> = [
            line("seed", 100.0),
            line("duet", 300.0),
            line("duet", 500.0),
            line("seed", 80.0),
            line("seed", 120.0),
        ]
        .iter()
        .map(|l| parse_run(l).unwrap())
        .collect();
        let md = render(&runs, "seed");
        assert!(
            md.contains("| throughput pairs=2 window=4 | msgs_per_s | 100 | 400 | 4.00 | higher |"),
            "{md}"
        );
        assert!(md.contains("seed: 3 run(s); duet: 2 run(s)"), "{md}");
    }

    #[test]
    fn summarises_with_spread() {
        let line = |label: &str, case: &str, v: f64| {
            format!(
                r#"{{"scenario":"latency","case":"latency rate=20000 pairs=50 placement={case}","label":"{label}","ok":true,"metrics":{{"latency_p99":{v},"lost":0,"server2_cpu_pct":12.5}}}}"#
            )
        };
        let runs: Vec<Run> = [
            line("cluster", "cross", 300.0),
            line("cluster", "same", 100.0),
            line("cluster", "cross", 500.0),
            line("cluster", "cross", 200.0),
            line("single", "same", 90.0),
        ]
        .iter()
        .map(|l| parse_run(l).unwrap())
        .collect();
        let md = render_summary(&runs, &[]);
        assert!(
            md.contains("| case | server | runs | latency_p99 | lost | server2_cpu_pct |"),
            "{md}"
        );
        assert!(
            md.contains("| latency rate=20000 pairs=50 placement=cross | cluster | 3 | 300 [200–500] | 0 | 12.5 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| latency rate=20000 pairs=50 placement=same | single | 1 | 90 | 0 | 12.5 |"
            ),
            "{md}"
        );
        let md = render_summary(&runs, &["lost".into()]);
        assert!(md.contains("| case | server | runs | lost |"), "{md}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
