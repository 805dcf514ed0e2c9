//! How read commands print: an aligned table for people, JSON or YAML for programs.
//! Lists print as a JSON/YAML list of every item (all pages), single objects as one object.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// A resource that prints as a table row.
pub trait Tabular {
    const HEADERS: &'static [&'static str];
    fn row(&self) -> Vec<String>;
}

pub fn print_list<T: Serialize + Tabular>(items: &[T], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(Tabular::row).collect();
            print!("{}", render_table(T::HEADERS, &rows));
        }
        _ => print_structured(&items, format)?,
    }
    Ok(())
}

pub fn print_one<T: Serialize + Tabular>(item: &T, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            // One object reads best as FIELD value lines.
            let rows: Vec<Vec<String>> =
                T::HEADERS.iter().zip(item.row()).map(|(h, v)| vec![format!("{h}:"), v]).collect();
            print!("{}", render_rows(&rows));
        }
        _ => print_structured(item, format)?,
    }
    Ok(())
}

pub fn print_structured<T: Serialize + ?Sized>(value: &T, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(value)?),
        OutputFormat::Table => unreachable!("tables are rendered by the caller"),
    }
    Ok(())
}

pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = vec![headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows.iter().cloned());
    render_rows(&all)
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
fn render_rows(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `k=v,k=v`, or `-` when empty.
pub fn labels(labels: &sovdb_types::Labels) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = render_table(
            &["NAME", "REGION"],
            &[vec!["local".into(), "local".into()], vec!["eu-central-dc1".into(), "eu".into()]],
        );
        assert_eq!(out, "NAME            REGION\nlocal           local\neu-central-dc1  eu\n");
    }
}
