//! `sovdb metrics CLUSTER`: a cluster's metrics. By default a table of every series with
//! its newest value and a small chart (a sparkline) of the range; with `--name` one metric,
//! each series as a sparkline with its minimum, mean and maximum; `-o json` the API's answer.

use clap::Args;
use sovdb_types::metrics::parse_duration_secs;
use sovdb_types::{MetricSeries, MetricsQueryResult};

use crate::client::Client;
use crate::output::{render_table, OutputFormat};

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The cluster
    pub cluster: String,
    /// Only this metric (e.g. pg_commits_per_second; see docs/monitoring.md)
    #[arg(long)]
    pub name: Option<String>,
    /// How far back: 90s, 15m, 2h, 7d
    #[arg(long, default_value = "15m", value_parser = check_duration)]
    pub since: String,
    /// Seconds between points (or 10s, 1m, 1h); default: the range in about 120 points
    #[arg(long)]
    pub step: Option<String>,
}

fn check_duration(s: &str) -> Result<String, String> {
    parse_duration_secs(s)
        .filter(|d| *d > 0)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a duration such as 15m or 2h"))
}

pub async fn run(args: MetricsArgs, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    let mut query = vec![("from", args.since.clone())];
    if let Some(n) = &args.name {
        query.push(("name", n.clone()));
    }
    if let Some(s) = &args.step {
        query.push(("step", s.clone()));
    }
    let result: MetricsQueryResult = client.get(&format!("/clusters/{}/metrics", args.cluster), &query).await?;
    match out {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(&result)?),
        OutputFormat::Table => print!("{}", render(&result)),
    }
    Ok(())
}

fn render(r: &MetricsQueryResult) -> String {
    if r.series.is_empty() {
        return format!(
            "no samples of cluster {} between {} and {} yet (agents are sampled every 10 s)\n",
            r.cluster, r.from, r.to
        );
    }
    let rows: Vec<Vec<String>> = r
        .series
        .iter()
        .map(|s| {
            let values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
            let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
            vec![
                s.name.clone(),
                who(s),
                values.last().map_or_else(|| "-".into(), |v| number(*v, &s.unit)),
                format!("{}..{}", number(min, &s.unit), number(max, &s.unit)),
                sparkline(&values, 40),
            ]
        })
        .collect();
    let mut text = format!("cluster {}: every {} s ({} samples)\n", r.cluster, r.step, r.resolution);
    text.push_str(&render_table(&["METRIC", "SERIES", "LAST", "RANGE", "CHART"], &rows));
    text
}

fn who(s: &MetricSeries) -> String {
    let base = if s.member.is_empty() { s.host.clone() } else { s.member.clone() };
    match (&s.dim_label, s.dim.is_empty()) {
        (Some(label), false) => format!("{base} {label}={}", s.dim),
        _ => base,
    }
}

/// A value with its unit, shortened: 1.5G bytes, 12.3/s.
fn number(v: f64, unit: &str) -> String {
    let short = |v: f64| {
        let a = v.abs();
        if a >= 1e9 {
            format!("{:.1}G", v / 1e9)
        } else if a >= 1e6 {
            format!("{:.1}M", v / 1e6)
        } else if a >= 1e4 {
            format!("{:.1}k", v / 1e3)
        } else if a == a.trunc() {
            format!("{v}")
        } else {
            format!("{v:.3}")
        }
    };
    match unit {
        "" | "ratio" => short(v),
        "bytes" => format!("{}B", short(v)),
        "bytes/s" => format!("{}B/s", short(v)),
        "1/s" => format!("{}/s", short(v)),
        u => format!("{}{u}", short(v)),
    }
}

/// The values as block characters, the newest right; at most `width` (averaging).
fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() {
        return String::new();
    }
    let per = values.len().div_ceil(width);
    let cols: Vec<f64> = values.chunks(per).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
    let (min, max) = cols.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    cols.iter()
        .map(|v| if max > min { BARS[(((v - min) / (max - min)) * 7.0).round() as usize] } else { BARS[0] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_and_numbers() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 7.0], 40), "▁▂▃█");
        assert_eq!(sparkline(&[5.0, 5.0], 40), "▁▁");
        assert_eq!(sparkline(&[0.0, 0.0, 7.0, 7.0], 2), "▁█");
        assert_eq!(number(1_500_000_000.0, "bytes"), "1.5GB");
        assert_eq!(number(12.5, "1/s"), "12.500/s");
        assert_eq!(number(3.0, ""), "3");
    }
}
