//! Summaries over cases and the CSV table.

use super::surface::percentile_of_sorted;
use super::CaseMetrics;
use crate::error::{Error, Result};
use serde::Serialize;

/// Summary of one metric over cases. Undefined values (an HD95 with an
/// empty mask, a burden without myocardium, …) are left out and counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSummary {
    /// Column name, as in [`CaseMetrics::values`].
    pub name: String,
    /// Cases where the metric is defined.
    pub defined: usize,
    /// Cases where it is undefined (or the case lacks the column).
    pub undefined: usize,
    /// Mean of the defined values; `None` when there are none.
    pub mean: Option<f64>,
    /// Population standard deviation (divides by the count, as
    /// `numpy.std`) of the defined values.
    pub std: Option<f64>,
    /// Median of the defined values (mean of the middle two for an even
    /// count).
    pub median: Option<f64>,
}

/// Every metric summarised over a set of cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    /// Number of cases.
    pub cases: usize,
    /// One summary per column of [`columns`], in that order.
    pub metrics: Vec<MetricSummary>,
}

impl Aggregate {
    /// The summary of the metric named `name`.
    pub fn metric(&self, name: &str) -> Option<&MetricSummary> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("aggregate to JSON: {e}")))
    }
}

/// Metric column names over `cases`, in the order of
/// [`CaseMetrics::values`]; a column only some cases have (the RV under a
/// scheme with one) comes where it first appears.
pub fn columns(cases: &[CaseMetrics]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for case in cases {
        let names: Vec<String> = case.values().into_iter().map(|(n, _)| n).collect();
        // Insert each new name after its predecessor in this case, so one
        // case's order is kept when another lacks some of its columns.
        let mut at = 0;
        for name in names {
            match out.iter().position(|n| *n == name) {
                Some(p) => at = p + 1,
                None => {
                    out.insert(at, name);
                    at += 1;
                }
            }
        }
    }
    out
}

/// Mean, standard deviation and median of every metric over `cases`,
/// ignoring undefined values (counted in [`MetricSummary::undefined`]).
pub fn aggregate(cases: &[CaseMetrics]) -> Aggregate {
    let names = columns(cases);
    let per_case: Vec<Vec<(String, Option<f64>)>> = cases.iter().map(|c| c.values()).collect();
    let metrics = names
        .into_iter()
        .map(|name| {
            let mut values: Vec<f64> = per_case
                .iter()
                .filter_map(|vals| vals.iter().find(|(n, _)| *n == name).and_then(|(_, v)| *v))
                .filter(|v| v.is_finite())
                .collect();
            values.sort_by(f64::total_cmp);
            summarise(name, values, cases.len())
        })
        .collect();
    Aggregate {
        cases: cases.len(),
        metrics,
    }
}

/// Summary of sorted, finite `values` out of `cases` cases.
fn summarise(name: String, values: Vec<f64>, cases: usize) -> MetricSummary {
    let n = values.len();
    let mean = (n > 0).then(|| values.iter().sum::<f64>() / n as f64);
    let std = mean.map(|m| (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64).sqrt());
    MetricSummary {
        name,
        defined: n,
        undefined: cases.saturating_sub(n),
        mean,
        std,
        median: percentile_of_sorted(&values, 50.0),
    }
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A number for the CSV: shortest round-trip decimal; empty when undefined.
fn csv_number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => String::new(),
    }
}

/// The cases as CSV: a header `kind,case,<columns>` ([`columns`]), one row
/// per case (`kind` = `case`), then four rows summarising every column
/// over the cases ([`aggregate`]): `mean`, `std`, `median` and `defined`
/// (how many cases define the value), with an empty `case` field. An
/// undefined value is an empty field. Lines end in `\n`.
pub fn to_csv(cases: &[CaseMetrics]) -> String {
    let names = columns(cases);
    let mut out = String::from("kind,case");
    for name in &names {
        out.push(',');
        out.push_str(&csv_field(name));
    }
    out.push('\n');
    for case in cases {
        let values = case.values();
        out.push_str("case,");
        out.push_str(&csv_field(&case.case));
        for name in &names {
            let value = values.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v);
            out.push(',');
            out.push_str(&csv_number(value));
        }
        out.push('\n');
    }
    let summary = aggregate(cases);
    type Pick = fn(&MetricSummary) -> Option<f64>;
    let rows: [(&str, Pick); 4] = [
        ("mean", |m| m.mean),
        ("std", |m| m.std),
        ("median", |m| m.median),
        ("defined", |m| Some(m.defined as f64)),
    ];
    for (kind, pick) in rows {
        out.push_str(kind);
        out.push(',');
        for metric in &summary.metrics {
            out.push(',');
            out.push_str(&csv_number(pick(metric)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_skip_undefined_values() {
        let s = summarise("x".into(), vec![1.0, 2.0, 3.0, 10.0], 6);
        assert_eq!((s.defined, s.undefined), (4, 2));
        assert_eq!(s.mean, Some(4.0));
        assert_eq!(s.median, Some(2.5));
        // population variance: (9 + 4 + 1 + 36) / 4 = 12.5
        assert!((s.std.unwrap() - 12.5f64.sqrt()).abs() < 1e-12);
        let empty = summarise("y".into(), vec![], 3);
        assert_eq!((empty.mean, empty.std, empty.median), (None, None, None));
        assert_eq!(empty.undefined, 3);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("Case_N001"), "Case_N001");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_number(None), "");
        assert_eq!(csv_number(Some(f64::NAN)), "");
        assert_eq!(csv_number(Some(0.25)), "0.25");
    }
}
