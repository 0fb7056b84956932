//! What a run prints: a human table, then exactly one line `RESULT {json}` for scripts.
//!
//! The JSON has `scenario`, `label` (the server under test), `case` (scenario plus the
//! parameters that define it, so runs against different servers line up), `params`,
//! `metrics` (name -> number), `notes` and `ok`.

use crate::Ctx;
use crate::procstat::Usage;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub unit: &'static str,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    pub label: String,
    pub url: String,
    /// Parameters that define the case (the same for every server compared).
    case_params: Vec<(String, String)>,
    /// Every parameter, for the JSON.
    params: Map<String, Value>,
    pub metrics: Vec<Metric>,
    /// Caveats and failures, in words.
    pub notes: Vec<String>,
    /// False when the run failed (errors, nothing measured): the exit code is then non-zero.
    pub ok: bool,
}

impl Report {
    pub fn new(scenario: &'static str, ctx: &Ctx) -> Self {
        Self {
            scenario,
            label: ctx.label.clone(),
            url: ctx.dialer.target().url.clone(),
            case_params: Vec::new(),
            params: Map::new(),
            metrics: Vec::new(),
            notes: Vec::new(),
            ok: true,
        }
    }

    /// A parameter that defines the case (e.g. `rate=20000`).
    pub fn case_param(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        let text = match &value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        self.case_params.push((key.to_owned(), text));
        self.params.insert(key.to_owned(), value);
    }

    /// A parameter recorded for information only.
    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.to_owned(), value.into());
    }

    pub fn metric(&mut self, key: &str, value: f64, unit: &'static str) {
        self.metrics.push(Metric {
            key: key.to_owned(),
            value,
            unit,
        });
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Marks the run failed, with the reason.
    pub fn fail(&mut self, text: impl Into<String>) {
        self.ok = false;
        self.notes.push(format!("FAILED: {}", text.into()));
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    /// CPU figures over a measured window in which `work` units (messages, setups) were
    /// done: client and server CPU time and share of one core, and server CPU per unit.
    /// `per_unit` names the per-unit metric and `scale` converts seconds to its unit.
    pub fn usage(
        &mut self,
        usage: &Usage,
        work: f64,
        per_unit: &str,
        scale: f64,
        unit: &'static str,
    ) {
        let wall = usage.wall.as_secs_f64().max(1e-9);
        self.metric("window_s", wall, "s");
        self.metric("client_cpu_s", usage.client_cpu, "s");
        self.metric(
            "client_cpu_pct",
            100.0 * usage.client_cpu / wall,
            "% of a core",
        );
        if let Some(server) = usage.server_cpu {
            self.metric("server_cpu_s", server, "s");
            self.metric("server_cpu_pct", 100.0 * server / wall, "% of a core");
            if work > 0.0 {
                self.metric(per_unit, scale * server / work, unit);
            }
            if usage.per_server.len() > 1 {
                for (i, cpu) in usage.per_server.iter().enumerate() {
                    self.metric(
                        &format!("server{}_cpu_pct", i + 1),
                        100.0 * cpu / wall,
                        "% of a core",
                    );
                }
            }
        } else {
            self.note("no --server-pid: server CPU not measured");
        }
        if let Some(other) = usage.other_cpu() {
            let pct = 100.0 * other / wall;
            self.metric("other_cpu_pct", pct, "% of a core");
            if pct > 10.0 {
                self.note(format!(
                    "{pct:.0}% of a core went to neither client nor server (other processes, and kernel interrupt work including this run's own loopback traffic): check for foreign load"
                ));
            }
        }
    }

    /// `scenario k=v k=v`: what must match for two runs to be compared.
    pub fn case(&self) -> String {
        let mut s = self.scenario.to_owned();
        for (k, v) in &self.case_params {
            let _ = write!(s, " {k}={v}");
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let metrics: Map<String, Value> = self
            .metrics
            .iter()
            .map(|m| (m.key.clone(), json_number(m.value)))
            .collect();
        json!({
            "scenario": self.scenario,
            "case": self.case(),
            "label": self.label,
            "url": self.url,
            "ok": self.ok,
            "params": self.params,
            "metrics": metrics,
            "notes": self.notes,
        })
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== duet-bench {} against {} ({}) ==",
            self.scenario, self.label, self.url
        );
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "params: {}", params.join(" "));
        let width = self
            .metrics
            .iter()
            .map(|m| m.key.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(s, "{:width$}  {:>16}  unit", "metric", "value");
        for m in &self.metrics {
            let _ = writeln!(s, "{:width$}  {:>16}  {}", m.key, human(m.value), m.unit);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let _ = writeln!(s, "status: {}", if self.ok { "ok" } else { "FAILED" });
        s
    }

    pub fn print(&self) {
        print!("{}", self.table());
        println!("RESULT {}", self.to_json());
    }
}

/// Integers stay integers in the JSON; other values keep 4 significant decimals.
fn json_number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        json!(v as i64)
    } else if v.is_finite() {
        let digits = (4 - v.abs().log10().ceil() as i32).clamp(0, 9) as usize;
        let rounded: f64 = format!("{v:.digits$}").parse().unwrap_or(v);
        json!(rounded)
    } else {
        Value::Null
    }
}

/// Thousands separators, and a few decimals for small values.
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let abs = v.abs();
    let decimals = if abs >= 1000.0 || v.fract() == 0.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 0.1 {
        2
    } else {
        4
    };
    let text = format!("{abs:.decimals$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(human(1234567.0), "1,234,567");
        assert_eq!(human(84123.7), "84,124");
        assert_eq!(human(12.345), "12.3");
        assert_eq!(human(0.5), "0.50");
        assert_eq!(human(0.01234), "0.0123");
        assert_eq!(human(-1500.0), "-1,500");
        assert_eq!(json_number(3.0), json!(3));
        assert_eq!(json_number(0.123456), json!(0.1235));
        assert_eq!(json_number(12345.678), json!(12346.0));
    }

    #[test]
    fn case_names_hold_plain_text() {
        let mut r = Report {
            scenario: "latency",
            label: "cluster".into(),
            url: "ws://127.0.0.1:1/".into(),
            case_params: Vec::new(),
            params: Map::new(),
            metrics: Vec::new(),
            notes: Vec::new(),
            ok: true,
        };
        r.case_param("rate", 20000);
        r.case_param("placement", "cross");
        assert_eq!(r.case(), "latency rate=20000 placement=cross");
        assert_eq!(r.to_json()["params"]["placement"], json!("cross"));
    }
}
