//! The training log: a CSV of (step, loss, lr, seconds) and an SVG loss
//! curve, written next to the checkpoint and rewritten atomically at each
//! [`flush`](TrainingLog::flush), so both are readable while a run goes on
//! and neither is ever half-written.

use crate::io::atomic::write_atomically;
use crate::{Error, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One logged update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogRow {
    /// The step (0-based).
    pub step: u64,
    /// Its loss.
    pub loss: f32,
    /// Its learning rate.
    pub lr: f32,
    /// Seconds of training since the run began (across resumes).
    pub seconds: f64,
}

/// The rows of a run and where they go.
#[derive(Clone, Debug)]
pub struct TrainingLog {
    csv: PathBuf,
    svg: PathBuf,
    title: String,
    rows: Vec<LogRow>,
}

const HEADER: &str = "step,loss,lr,seconds";

impl TrainingLog {
    /// A log writing `csv` and `svg`. With `resume_at = Some(s)`, the rows
    /// of an earlier run's CSV before step `s` are kept (a resumed run's
    /// log reads as one run); otherwise any old log is replaced.
    pub fn open(
        csv: &Path,
        svg: &Path,
        title: &str,
        resume_at: Option<u64>,
    ) -> Result<TrainingLog> {
        let mut rows = Vec::new();
        if let (Some(at), true) = (resume_at, csv.is_file()) {
            let text = std::fs::read_to_string(csv)
                .map_err(|e| Error::Io(format!("{}: {e}", csv.display())))?;
            for (n, line) in text.lines().enumerate().skip(1) {
                let row = parse_row(line).ok_or_else(|| {
                    Error::format(format!(
                        "{}: line {} is not step,loss,lr,seconds",
                        csv.display(),
                        n + 1
                    ))
                })?;
                if row.step < at {
                    rows.push(row);
                }
            }
        }
        Ok(TrainingLog {
            csv: csv.to_path_buf(),
            svg: svg.to_path_buf(),
            title: title.to_string(),
            rows,
        })
    }

    /// Adds a row.
    pub fn record(&mut self, row: LogRow) {
        self.rows.push(row);
    }

    /// The rows so far.
    pub fn rows(&self) -> &[LogRow] {
        &self.rows
    }

    /// Seconds logged by the last row (where a resumed run's clock starts).
    pub fn elapsed(&self) -> f64 {
        self.rows.last().map_or(0.0, |r| r.seconds)
    }

    /// Rewrites the CSV and the SVG.
    pub fn flush(&self) -> Result<()> {
        write_atomically(&self.csv, |file| {
            let mut text = String::with_capacity(32 * (self.rows.len() + 1));
            text.push_str(HEADER);
            text.push('\n');
            for r in &self.rows {
                let _ = writeln!(text, "{},{},{},{:.3}", r.step, r.loss, r.lr, r.seconds);
            }
            file.write_all(text.as_bytes())
        })?;
        let svg = loss_curve_svg(&self.rows, &self.title);
        write_atomically(&self.svg, |file| file.write_all(svg.as_bytes()))
    }
}

fn parse_row(line: &str) -> Option<LogRow> {
    let mut parts = line.split(',');
    let row = LogRow {
        step: parts.next()?.trim().parse().ok()?,
        loss: parts.next()?.trim().parse().ok()?,
        lr: parts.next()?.trim().parse().ok()?,
        seconds: parts.next()?.trim().parse().ok()?,
    };
    parts.next().is_none().then_some(row)
}

/// An SVG plot of the loss against the step: every row as a faint line,
/// a moving average (window 2 % of the run, at least 1) on top, a
/// logarithmic loss axis when the loss spans more than a decade.
pub fn loss_curve_svg(rows: &[LogRow], title: &str) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 64.0, 16.0, 32.0, 40.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
"#,
        w / 2.0,
        escape(title)
    );
    let finite: Vec<&LogRow> = rows
        .iter()
        .filter(|r| r.loss.is_finite() && r.loss > 0.0)
        .collect();
    if finite.is_empty() {
        svg.push_str(
            "<text x=\"320\" y=\"200\" text-anchor=\"middle\">no steps yet</text>\n</svg>\n",
        );
        return svg;
    }
    let (lo, hi) = finite.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
        (lo.min(f64::from(r.loss)), hi.max(f64::from(r.loss)))
    });
    let log_axis = hi / lo > 10.0;
    let map_loss = |v: f64| if log_axis { v.ln() } else { v };
    let (y0, y1) = (map_loss(lo), map_loss(hi));
    let span_y = if y1 > y0 { y1 - y0 } else { 1.0 };
    let (s0, s1) = (finite[0].step as f64, finite[finite.len() - 1].step as f64);
    let span_x = if s1 > s0 { s1 - s0 } else { 1.0 };
    let px = |step: f64| left + (step - s0) / span_x * (w - left - right);
    let py = |loss: f64| top + (1.0 - (map_loss(loss) - y0) / span_y) * (h - top - bottom);
    let polyline = |points: &mut dyn Iterator<Item = (f64, f64)>, style: &str| -> String {
        let mut s = format!("<polyline fill=\"none\" {style} points=\"");
        for (x, y) in points {
            let _ = write!(s, "{:.1},{:.1} ", px(x), py(y));
        }
        s.push_str("\"/>\n");
        s
    };
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        w - left - right,
        h - top - bottom
    );
    svg.push_str(&polyline(
        &mut finite.iter().map(|r| (r.step as f64, f64::from(r.loss))),
        "stroke=\"#9ecae1\" stroke-width=\"1\"",
    ));
    let window = (finite.len() / 50).max(1);
    let mut sum = 0.0;
    let mut smooth = Vec::with_capacity(finite.len());
    for (i, r) in finite.iter().enumerate() {
        sum += f64::from(r.loss);
        if i >= window {
            sum -= f64::from(finite[i - window].loss);
        }
        smooth.push((r.step as f64, sum / (i + 1).min(window) as f64));
    }
    svg.push_str(&polyline(
        &mut smooth.into_iter(),
        "stroke=\"#08519c\" stroke-width=\"2\"",
    ));
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{}\">step {s0}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">step {s1}</text>\n\
<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{hi:.4}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{lo:.4}</text>\n\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">loss{}, moving average of {window}</text>\n</svg>\n",
        h - bottom + 16.0,
        w - right,
        h - bottom + 16.0,
        left - 4.0,
        top + 10.0,
        left - 4.0,
        h - bottom,
        w / 2.0,
        h - 6.0,
        if log_axis { " (log scale)" } else { "" },
    );
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64) -> LogRow {
        LogRow {
            step,
            loss: 1.0 / (1.0 + step as f32),
            lr: 1e-4,
            seconds: step as f64 * 0.5,
        }
    }

    #[test]
    fn a_resumed_log_keeps_the_earlier_rows_before_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (csv, svg) = (dir.path().join("m.log.csv"), dir.path().join("m.loss.svg"));
        let mut log = TrainingLog::open(&csv, &svg, "run <1>", None).unwrap();
        (0..10).for_each(|s| log.record(row(s)));
        log.flush().unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(
            text.starts_with("step,loss,lr,seconds\n0,1,0.0001,0.000\n"),
            "{text}"
        );
        let picture = std::fs::read_to_string(&svg).unwrap();
        assert!(picture.contains("<polyline") && picture.contains("run &lt;1&gt;"));
        let resumed = TrainingLog::open(&csv, &svg, "run", Some(6)).unwrap();
        assert_eq!(resumed.rows(), &(0..6).map(row).collect::<Vec<_>>()[..]);
        assert_eq!(resumed.elapsed(), 2.5);
        std::fs::write(&csv, "step,loss,lr,seconds\n1,x,2,3\n").unwrap();
        assert!(TrainingLog::open(&csv, &svg, "run", Some(6)).is_err());
        assert!(TrainingLog::open(&csv, &svg, "run", None)
            .unwrap()
            .rows()
            .is_empty());
    }

    #[test]
    fn an_empty_log_still_draws() {
        assert!(loss_curve_svg(&[], "t").contains("no steps yet"));
        let flat: Vec<LogRow> = (0..3)
            .map(|s| LogRow {
                loss: 0.5,
                ..row(s)
            })
            .collect();
        assert!(!loss_curve_svg(&flat, "t").contains("NaN"));
    }
}
