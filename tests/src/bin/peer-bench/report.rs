//! The results: samples per workload and column, the table printed at the end,
//! `results.json`, and the verdict on each of the issue's targets.

use keel_tests::Stats;
use std::fmt::Write as _;

/// The samples of one workload: its unit and, per column (a manager, a floor),
/// every sample taken.
pub struct Workload {
    pub name: String,
    pub unit: &'static str,
    pub columns: Vec<(String, Vec<f64>)>,
}

#[derive(Default)]
pub struct Results {
    pub workloads: Vec<Workload>,
    /// Notes printed under the table (settings, warnings).
    pub notes: Vec<String>,
}

impl Results {
    pub fn add(&mut self, workload: &str, unit: &'static str, column: &str, sample: f64) {
        let w = match self.workloads.iter().position(|w| w.name == workload) {
            Some(i) => &mut self.workloads[i],
            None => {
                self.workloads.push(Workload {
                    name: workload.to_string(),
                    unit,
                    columns: Vec::new(),
                });
                self.workloads.last_mut().expect("just pushed")
            }
        };
        match w.columns.iter().position(|(c, _)| c == column) {
            Some(i) => w.columns[i].1.push(sample),
            None => w.columns.push((column.to_string(), vec![sample])),
        }
    }

    pub fn samples(&self, workload: &str, column: &str) -> Option<&[f64]> {
        let w = self.workloads.iter().find(|w| w.name == workload)?;
        let (_, s) = w.columns.iter().find(|(c, _)| c == column)?;
        Some(s)
    }

    pub fn median(&self, workload: &str, column: &str) -> Option<f64> {
        self.samples(workload, column).map(|s| Stats::of(s).median)
    }

    /// `{ "WORKLOAD": { "unit": "...", "COLUMN": MEDIAN, ... }, ... }`
    pub fn json(&self) -> String {
        let mut out = String::from("{\n");
        for (wi, w) in self.workloads.iter().enumerate() {
            let _ = write!(out, "  {:?}: {{ \"unit\": {:?}", w.name, w.unit);
            for (c, s) in &w.columns {
                let _ = write!(out, ", {:?}: {}", c, round(Stats::of(s).median));
            }
            out.push_str(if wi + 1 < self.workloads.len() {
                " },\n"
            } else {
                " }\n"
            });
        }
        out.push_str("}\n");
        out
    }

    /// The table: one line per workload, each column's median [min–max] (and the
    /// number of samples), then keel's ratio to every other column.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:<5} median [min–max] (samples) per column; keel/column ratios",
            "workload", "unit"
        );
        for w in &self.workloads {
            let mut cells = Vec::new();
            for (c, s) in &w.columns {
                let st = Stats::of(s);
                let extra = if w.name.starts_with("status_latency") && s.len() > 1 {
                    format!(" p99 {}", fmt(st.p99))
                } else {
                    String::new()
                };
                cells.push(format!(
                    "{c} {} [{}–{}] ({}){extra}",
                    fmt(st.median),
                    fmt(st.min),
                    fmt(st.max),
                    s.len()
                ));
            }
            let _ = writeln!(out, "{:<22} {:<5} {}", w.name, w.unit, cells.join(" | "));
            if let Some(keel) = w.columns.iter().find(|(c, _)| c == "keel") {
                let k = Stats::of(&keel.1).median;
                let ratios: Vec<String> = w
                    .columns
                    .iter()
                    .filter(|(c, _)| !c.starts_with("keel"))
                    .map(|(c, s)| format!("keel/{c} {:.3}", k / Stats::of(s).median))
                    .collect();
                if !ratios.is_empty() {
                    let _ = writeln!(out, "{:<22} {:<5} {}", "", "", ratios.join(" | "));
                }
            }
        }
        out
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// One line per target of the issue: met / missed / not measured, with figures.
pub fn targets(r: &Results, keel_init_static: Option<bool>) -> Vec<String> {
    let mut out = Vec::new();
    let m = |w: &str, c: &str| r.median(w, c);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut line = |name: &str, text: Option<String>| {
        out.push(match text {
            Some(t) => format!("{name}: {t}"),
            None => format!("{name}: not measured in this run"),
        })
    };

    line(
        "bringup_1000 ≤ 0.4 × min(s6, runit) and ≤ 1.3 × spawn_floor_1000",
        (|| {
            let k = m("bringup_1000", "keel")?;
            let peer = m("bringup_1000", "s6")?.min(m("bringup_1000", "runit")?);
            let floor = m("bringup_1000", "spawn_floor")?;
            Some(format!(
                "{} — keel {k:.0} ms = {:.3} × the faster peer ({peer:.0} ms), {:.3} × the floor ({floor:.0} ms)",
                verdict(k <= 0.4 * peer && k <= 1.3 * floor),
                k / peer,
                k / floor
            ))
        })(),
    );
    line(
        "rss_1000 ≤ 8 MiB PSS (keel-init + keel-supervisor)",
        (|| {
            let k = m("rss_1000", "keel")?;
            let s6 = m("rss_1000", "s6")?;
            Some(format!(
                "{} — keel {:.2} MiB = {:.3} × s6 ({:.1} MiB)",
                verdict(k <= 8.0 * 1024.0),
                k / 1024.0,
                k / s6,
                s6 / 1024.0
            ))
        })(),
    );
    line(
        "pid1: keel-init binary ≤ 64 KiB static, resident ≤ 100 KiB",
        (|| {
            let size = m("pid1_binary", "keel")?;
            let rss = m("pid1", "keel")?;
            let tini = m("pid1", "tini-static")?;
            let is_static = keel_init_static?;
            Some(format!(
                "{} — binary {size:.1} KiB ({}), resident {rss:.0} KiB = {:.3} × tini-static ({tini:.0} KiB)",
                verdict(size <= 64.0 && is_static && rss <= 100.0),
                if is_static { "static" } else { "NOT static" },
                rss / tini
            ))
        })(),
    );
    line(
        "status_latency median ≤ 1.1 × exec_floor and below sv's",
        (|| {
            let k = m("status_latency", "keel")?;
            let floor = m("status_latency", "exec_floor")?;
            let sv = m("status_latency", "runit")?;
            Some(format!(
                "{} — initctl {k:.3} ms = {:.3} × /bin/true ({floor:.3} ms); sv {sv:.3} ms",
                verdict(k <= 1.1 * floor && k < sv),
                k / floor
            ))
        })(),
    );
    for w in ["restart_latency", "respawn_latency"] {
        line(
            &format!("{w} ≤ 0.5 × the faster peer's"),
            (|| {
                let k = m(w, "keel")?;
                let peer = m(w, "s6")?.min(m(w, "runit")?);
                Some(format!(
                    "{} — keel {k:.3} ms = {:.3} × {peer:.3} ms",
                    verdict(k <= 0.5 * peer),
                    k / peer
                ))
            })(),
        );
    }
    for w in ["reexec_1000", "crash_recovery_1000"] {
        line(
            &format!("{w} ≤ 30 ms"),
            m(w, "keel").map(|k| format!("{} — {k:.1} ms", verdict(k <= 30.0))),
        );
    }
    line(
        "bringup_1000_first ≤ the faster peer's (issue 17)",
        (|| {
            let k = m("bringup_1000_first", "keel")?;
            let peer = m("bringup_1000_first", "s6")?.min(m("bringup_1000_first", "runit")?);
            Some(format!(
                "{} — keel {k:.1} ms, faster peer {peer:.1} ms",
                verdict(k <= peer)
            ))
        })(),
    );
    // N = 10,000 (`--large`): shown only when measured.
    if m("bringup_10000", "keel").is_some() {
        line(
            "bringup: 1,000 → 10,000 grows ≤ 11× (linear)",
            (|| {
                let ratio = m("bringup_10000", "keel")? / m("bringup_1000", "keel")?;
                Some(format!("{} — keel ×{ratio:.2}", verdict(ratio <= 11.0)))
            })(),
        );
        line(
            "rss_10000 ≤ 40 MiB PSS",
            m("rss_10000", "keel").map(|k| {
                format!(
                    "{} — keel {:.2} MiB",
                    verdict(k <= 40.0 * 1024.0),
                    k / 1024.0
                )
            }),
        );
    }
    if m("reexec_10000", "keel").is_some() {
        let mut against = |w: &str, base: &str, factor: f64| {
            line(
                &format!("{w} ≤ {factor} × {base}"),
                (|| {
                    let k = m(w, "keel")?;
                    let b = m(base, "keel")?;
                    Some(format!(
                        "{} — {k:.3} ms = {:.2} × {b:.3} ms",
                        verdict(k <= factor * b),
                        k / b
                    ))
                })(),
            )
        };
        against("status_latency_10000", "status_latency", 1.2);
        against("restart_latency_10000", "restart_latency", 1.5);
        for w in ["reexec_10000", "crash_recovery_10000"] {
            line(
                &format!("{w} ≤ 50 ms"),
                m(w, "keel").map(|k| format!("{} — {k:.1} ms", verdict(k <= 50.0))),
            );
        }
    }
    line(
        "sandbox_start: the full sandbox adds ≤ 1 ms",
        (|| {
            let k = m("sandbox_start", "keel")?;
            let plain = m("sandbox_start", "no_sandbox")?;
            Some(format!(
                "{} — +{:.3} ms (keel {k:.3} ms, no sandbox {plain:.3} ms)",
                verdict(k - plain <= 1.0),
                k - plain
            ))
        })(),
    );
    for w in ["bringup", "rss"] {
        line(
            &format!("{w}: linear from N = 100 to 1,000 (ratio ≤ 12; 10 is linear, 100 quadratic)"),
            (|| {
                let small = m(&format!("{w}_100"), "keel")?;
                let big = m(&format!("{w}_1000"), "keel")?;
                let ratio = big / small;
                let mut peers = String::new();
                for c in ["s6", "runit", "spawn_floor"] {
                    if let (Some(a), Some(b)) =
                        (m(&format!("{w}_100"), c), m(&format!("{w}_1000"), c))
                    {
                        let _ = write!(peers, ", {c} {:.2}", b / a);
                    }
                }
                Some(format!(
                    "{} — keel ×{ratio:.2} (growth exponent {:.2}){peers}",
                    verdict(ratio <= 12.0),
                    ratio.log10()
                ))
            })(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut r = Results::default();
        for (w, unit, c, v) in [
            ("bringup_1000", "ms", "keel", 500.0),
            ("bringup_1000", "ms", "keel", 700.0),
            ("bringup_1000", "ms", "keel", 600.0),
            ("bringup_1000", "ms", "s6", 1600.0),
            ("bringup_1000", "ms", "runit", 1500.0),
            ("bringup_1000", "ms", "spawn_floor", 400.0),
            ("status_latency", "ms", "keel", 0.9),
            ("status_latency", "ms", "runit", 0.6),
            ("status_latency", "ms", "exec_floor", 0.5),
            ("sandbox_start", "ms", "keel", 2.6),
            ("sandbox_start", "ms", "no_sandbox", 1.8),
        ] {
            r.add(w, unit, c, v);
        }
        r
    }

    #[test]
    fn results_json_has_the_issues_schema_with_medians() {
        let json: serde_json::Value = serde_json::from_str(&sample().json()).expect("valid JSON");
        let b = &json["bringup_1000"];
        assert_eq!(b["unit"], "ms");
        assert_eq!(b["keel"], 600.0, "the median of 500, 700, 600");
        assert_eq!(b["s6"], 1600.0);
        assert_eq!(b["spawn_floor"], 400.0);
        assert_eq!(json["status_latency"]["exec_floor"], 0.5);
    }

    #[test]
    fn targets_say_met_or_missed_with_the_figures() {
        let lines = targets(&sample(), None);
        let find = |prefix: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line for {prefix}: {lines:?}"))
                .clone()
        };
        // 600 ≤ 0.4 × 1500 and 600 ≤ 1.3 × 400 fails: missed, with the ratios.
        let b = find("bringup_1000");
        assert!(
            b.contains("MISSED") && b.contains("0.400 × the faster peer"),
            "{b}"
        );
        let s = find("status_latency");
        assert!(
            s.contains("MISSED") && s.contains("1.800 × /bin/true"),
            "{s}"
        );
        assert!(find("reexec_1000").ends_with("not measured in this run"));
        let b = find("sandbox_start");
        assert!(b.contains("met — +0.800 ms"), "{b}");
    }
}
