//! The bench's results table: rows of figure, value, target and verdict,
//! printed aligned and turned into JSON; and the small statistics it needs.
//! Owns formatting only; measures nothing.

use serde_json::{json, Value};

/// Median of the finite values; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    /// A figure without a target.
    Info,
    /// The figure could not be measured.
    Error,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
            Verdict::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub section: String,
    pub figure: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

/// Collects rows section by section.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
    section: String,
}

impl Table {
    pub fn section(&mut self, name: &str) {
        self.section = name.to_owned();
    }

    /// A figure without a target.
    pub fn info(&mut self, figure: &str, value: String) {
        self.push(figure, value, String::new(), Verdict::Info);
    }

    /// A figure with a target; `pass` decides the verdict.
    pub fn target(&mut self, figure: &str, value: String, target: &str, pass: bool) {
        self.push(figure, value, target.to_owned(), if pass { Verdict::Pass } else { Verdict::Miss });
    }

    pub fn error(&mut self, figure: &str, why: String) {
        self.push(figure, why, String::new(), Verdict::Error);
    }

    fn push(&mut self, figure: &str, value: String, target: String, verdict: Verdict) {
        self.rows.push(Row { section: self.section.clone(), figure: figure.to_owned(), value, target, verdict });
    }

    pub fn has_errors(&self) -> bool {
        self.rows.iter().any(|r| r.verdict == Verdict::Error)
    }

    /// The aligned table, one section heading per group. Values longer than
    /// `SHORT` (breakdowns) are printed left-aligned after the figure.
    pub fn render(&self) -> String {
        const SHORT: usize = 24;
        let short = |r: &&Row| r.value.chars().count() <= SHORT;
        let w_fig = self.rows.iter().map(|r| r.figure.chars().count()).max().unwrap_or(0);
        let w_val = self.rows.iter().filter(short).map(|r| r.value.chars().count()).max().unwrap_or(0);
        let w_tgt = self.rows.iter().map(|r| r.target.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        let mut current = None;
        for r in &self.rows {
            if current != Some(&r.section) {
                out.push_str(&format!("\n{}\n", r.section));
                current = Some(&r.section);
            }
            let line = if short(&r) {
                format!("  {:<w_fig$}  {:>w_val$}  {:<w_tgt$}  {}", r.figure, r.value, r.target, r.verdict.word())
            } else {
                format!("  {:<w_fig$}  {}  {}  {}", r.figure, r.value, r.target, r.verdict.word())
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    json!({"section": r.section, "figure": r.figure, "value": r.value, "target": r.target,
                           "verdict": match r.verdict { Verdict::Info => "info", v => v.word() }})
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn table_marks_targets_and_errors() {
        let mut t = Table::default();
        t.section("s");
        t.target("ratio", "0.97".into(), ">= 0.95", true);
        t.target("rss", "250 MB".into(), "<= 200 MB", false);
        t.info("ttft", "40 ms".into());
        assert!(!t.has_errors());
        t.error("ready", "daemon did not start".into());
        assert!(t.has_errors());
        let text = t.render();
        assert!(text.contains("PASS") && text.contains("MISS") && text.contains("ERROR"), "{text}");
        assert_eq!(t.to_json().as_array().map(Vec::len), Some(4));
    }
}
