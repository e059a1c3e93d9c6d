//! Exposition formats: OpenMetrics 1.0 text (with exemplars and optional
//! sample timestamps) and the Prometheus text format 0.0.4.
//!
//! Both are written directly from the same [`Family`] values
//! ([`write_openmetrics`], [`write_prometheus`]), so they always carry the
//! same samples; only the spelling differs (counter family names, `# UNIT`,
//! exemplars, timestamp units, `# EOF`).
//!
//! We write this ourselves rather than through prometheus-client's encoder
//! because the snapshot's counters and exemplars are restored from the
//! database (prometheus-client cannot construct an exemplar from stored
//! values), backfill files need sample timestamps, and prometheus-client only
//! speaks OpenMetrics.

use crate::catalog::Kind;
use std::fmt::Write;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// "" for gauges, "_total" for counters, "_bucket"/"_sum"/"_count" for histograms.
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name as OpenMetrics spells it (counters without `_total`).
    pub name: String,
    pub kind: Kind,
    pub unit: Option<&'static str>,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// Format a sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Format a bucket bound the way OpenMetrics canonicalises it (`300.0`, `0.5`, `+Inf`).
pub fn fmt_le(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}.0", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn write_labels(out: &mut String, labels: &[(String, String)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    out.push('}');
}

fn fmt_seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A sample timestamp in seconds, without a fraction when it is whole.
pub fn fmt_timestamp(ms: i64) -> String {
    if ms.rem_euclid(1000) == 0 {
        ms.div_euclid(1000).to_string()
    } else {
        fmt_seconds(ms)
    }
}

/// Write a family's `# HELP`, `# TYPE` and `# UNIT` lines.
pub fn write_header(out: &mut String, name: &str, kind: Kind, unit: Option<&str>, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(out, help);
    out.push('\n');
    let _ = writeln!(out, "# TYPE {name} {kind}");
    if let Some(unit) = unit {
        let _ = writeln!(out, "# UNIT {name} {unit}");
    }
}

/// Write a sample's series: name, suffix and label set (what precedes the value).
pub fn write_series(out: &mut String, name: &str, suffix: &str, labels: &[(String, String)]) {
    out.push_str(name);
    out.push_str(suffix);
    write_labels(out, labels);
}

/// Write families as OpenMetrics text (without the final `# EOF`).
pub fn write_openmetrics(out: &mut String, families: &[Family]) {
    for f in families {
        write_header(out, &f.name, f.kind, f.unit, &f.help);
        for s in &f.samples {
            write_series(out, &f.name, s.suffix, &s.labels);
            out.push(' ');
            out.push_str(&fmt_value(s.value));
            if let Some(ts) = s.timestamp_ms {
                out.push(' ');
                out.push_str(&fmt_seconds(ts));
            }
            if let Some(e) = &s.exemplar {
                out.push_str(" # ");
                out.push('{');
                for (i, (k, v)) in e.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label_value(out, v);
                    out.push('"');
                }
                out.push_str("} ");
                out.push_str(&fmt_value(e.value));
                if let Some(ts) = e.timestamp_ms {
                    out.push(' ');
                    out.push_str(&fmt_seconds(ts));
                }
            }
            out.push('\n');
        }
    }
}

/// Write families as the Prometheus text format 0.0.4: counter families
/// take their `_total` name, there is no `# UNIT`, no exemplar and no
/// `# EOF`, `# HELP` escapes only backslashes and newlines, and sample
/// timestamps are milliseconds.
pub fn write_prometheus(out: &mut String, families: &[Family]) {
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let name: std::borrow::Cow<'_, str> = if f.kind == Kind::Counter {
            format!("{}_total", f.name).into()
        } else {
            f.name.as_str().into()
        };
        out.push_str("# HELP ");
        out.push_str(&name);
        out.push(' ');
        for c in f.help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in &f.samples {
            write_series(out, &f.name, s.suffix, &s.labels);
            out.push(' ');
            out.push_str(&fmt_value(s.value));
            if let Some(ts) = s.timestamp_ms {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        }
    }
}

/// Which format a scraper asked for.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !params.any(|p| p.replace(' ', "") == "q=0")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> Family {
        Family {
            name: "ci_runs".into(),
            kind: Kind::Counter,
            unit: None,
            help: "Runs \"done\".".into(),
            samples: vec![Sample {
                suffix: "_total",
                labels: vec![("test".into(), "a \"q\" \\ b\nc # {x}".into())],
                value: 3.0,
                exemplar: None,
                timestamp_ms: None,
            }],
        }
    }

    fn histogram() -> Family {
        Family {
            name: "ci_run_duration_seconds".into(),
            kind: Kind::Histogram,
            unit: Some("seconds"),
            help: "Run time.".into(),
            samples: vec![
                Sample {
                    suffix: "_bucket",
                    labels: vec![("le".into(), fmt_le(300.0))],
                    value: 1.0,
                    exemplar: Some(Exemplar {
                        labels: vec![("run_id".into(), "42".into())],
                        value: 198.0,
                        timestamp_ms: Some(1_700_000_000_500),
                    }),
                    timestamp_ms: None,
                },
                Sample {
                    suffix: "_bucket",
                    labels: vec![("le".into(), fmt_le(f64::INFINITY))],
                    value: 1.0,
                    exemplar: None,
                    timestamp_ms: None,
                },
                Sample {
                    suffix: "_sum",
                    labels: vec![],
                    value: 198.0,
                    exemplar: None,
                    timestamp_ms: None,
                },
                Sample {
                    suffix: "_count",
                    labels: vec![],
                    value: 1.0,
                    exemplar: None,
                    timestamp_ms: None,
                },
            ],
        }
    }

    #[test]
    fn openmetrics_output_escapes_labels_and_carries_exemplars() {
        let mut out = String::new();
        write_openmetrics(&mut out, &[counter(), histogram()]);
        let want = "# HELP ci_runs Runs \\\"done\\\".\n\
# TYPE ci_runs counter\n\
ci_runs_total{test=\"a \\\"q\\\" \\\\ b\\nc # {x}\"} 3\n\
# HELP ci_run_duration_seconds Run time.\n\
# TYPE ci_run_duration_seconds histogram\n\
# UNIT ci_run_duration_seconds seconds\n\
ci_run_duration_seconds_bucket{le=\"300.0\"} 1 # {run_id=\"42\"} 198 1700000000.500\n\
ci_run_duration_seconds_bucket{le=\"+Inf\"} 1\n\
ci_run_duration_seconds_sum 198\n\
ci_run_duration_seconds_count 1\n";
        assert_eq!(out, want);
    }

    #[test]
    fn prometheus_text_renames_counters_and_drops_exemplars_units_and_eof() {
        let mut text = String::new();
        write_prometheus(&mut text, &[counter(), histogram()]);
        let want = "# HELP ci_runs_total Runs \"done\".\n\
# TYPE ci_runs_total counter\n\
ci_runs_total{test=\"a \\\"q\\\" \\\\ b\\nc # {x}\"} 3\n\
# HELP ci_run_duration_seconds Run time.\n\
# TYPE ci_run_duration_seconds histogram\n\
ci_run_duration_seconds_bucket{le=\"300.0\"} 1\n\
ci_run_duration_seconds_bucket{le=\"+Inf\"} 1\n\
ci_run_duration_seconds_sum 198\n\
ci_run_duration_seconds_count 1\n";
        assert_eq!(text, want);
    }

    #[test]
    fn timestamps_are_seconds_in_openmetrics_and_milliseconds_in_text() {
        let mut f = counter();
        f.samples[0].labels.clear();
        f.samples[0].timestamp_ms = Some(1_700_000_000_250);
        let mut om = String::new();
        write_openmetrics(&mut om, std::slice::from_ref(&f));
        assert!(om.contains("ci_runs_total 3 1700000000.250\n"), "{om}");
        let mut text = String::new();
        write_prometheus(&mut text, &[f]);
        assert!(text.contains("ci_runs_total 3 1700000000250\n"), "{text}");
    }

    #[test]
    fn values_and_bounds_are_formatted_canonically() {
        let cases = [
            (3.0, "3", "3.0"),
            (0.5, "0.5", "0.5"),
            (f64::INFINITY, "+Inf", "+Inf"),
            (-2.0, "-2", "-2.0"),
        ];
        for (v, value, le) in cases {
            assert_eq!(fmt_value(v), value);
            assert_eq!(fmt_le(v), le);
        }
        assert_eq!(fmt_value(f64::NAN), "NaN");
    }

    #[test]
    fn accept_headers_pick_the_format() {
        let cases = [
            (None, false),
            (Some("text/plain"), false),
            (Some("*/*"), false),
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                true,
            ),
            (Some("application/openmetrics-text; version=1.0.0"), true),
            (Some("application/openmetrics-text;q=0, text/plain"), false),
        ];
        for (accept, want) in cases {
            assert_eq!(wants_openmetrics(accept), want, "{accept:?}");
        }
    }
}
