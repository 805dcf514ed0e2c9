//! PostgreSQL parameters a user may set, checked against PostgreSQL 15's own list before
//! anything is created (`data/pg15_settings.tsv`, from `pg_settings`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// One parameter as `pg_settings` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// `postmaster` parameters need a restart; `internal` ones can't be set.
    pub context: &'static str,
    /// `bool`, `integer`, `real`, `enum` or `string`.
    pub vartype: &'static str,
    /// The base unit of numbers (`8kB`, `kB`, `B`, `MB`, `ms`, `s`, `min`), or empty.
    pub unit: &'static str,
    pub min: &'static str,
    pub max: &'static str,
    pub enumvals: Vec<&'static str>,
}

static SETTINGS: LazyLock<BTreeMap<&'static str, Setting>> = LazyLock::new(|| {
    include_str!("../data/pg15_settings.tsv")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut f = line.split('\t');
            let mut next = || f.next().unwrap_or("");
            let s = Setting {
                name: next(),
                context: next(),
                vartype: next(),
                unit: next(),
                min: next(),
                max: next(),
                enumvals: next().split(',').filter(|v| !v.is_empty()).collect(),
            };
            (s.name, s)
        })
        .collect()
});

/// Parameters sovdb sets itself (ports, paths, TLS, replication, logging): a user's value
/// would break the cluster or sovdb's view of it.
pub const MANAGED: &[&str] = &[
    "archive_command",
    "archive_mode",
    "cluster_name",
    "config_file",
    "data_directory",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "log_directory",
    "logging_collector",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "synchronous_standby_names",
    "unix_socket_directories",
    "wal_level",
];

pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.get(name)
}

/// Whether a change of `name` takes effect only after a restart.
pub fn needs_restart(name: &str) -> bool {
    setting(name).is_some_and(|s| s.context == "postmaster")
}

/// Checks every parameter; the error lists every problem, one per line.
pub fn validate(params: &BTreeMap<String, String>) -> Result<(), String> {
    let problems: Vec<String> = params.iter().filter_map(|(k, v)| check(k, v).err()).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Checks that a user may set (or reset) `name` at all: PostgreSQL 15 has it, it is not
/// fixed at build time, and sovdb does not manage it.
pub fn check_name(name: &str) -> Result<&'static Setting, String> {
    let Some(s) = setting(name) else {
        return Err(match close_names(name).as_slice() {
            [] => format!("{name}: PostgreSQL 15 has no such parameter"),
            close => format!("{name}: PostgreSQL 15 has no such parameter (did you mean {}?)", close.join(" or ")),
        });
    };
    if MANAGED.contains(&name) || name.starts_with("recovery_target") {
        return Err(format!("{name}: sovdb manages this parameter itself"));
    }
    if s.context == "internal" {
        return Err(format!("{name}: read-only, fixed when PostgreSQL was built or initialised"));
    }
    Ok(s)
}

/// Checks one `name=value` as PostgreSQL 15 would.
pub fn check(name: &str, value: &str) -> Result<(), String> {
    let s = check_name(name)?;
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!("{name}: the value holds a line break or NUL"));
    }
    match s.vartype {
        "bool" => {
            let v = value.to_ascii_lowercase();
            if ["on", "off", "true", "false", "yes", "no", "1", "0"].contains(&v.as_str()) {
                Ok(())
            } else {
                Err(format!("{name}: {value:?} is not a boolean (on or off)"))
            }
        }
        "enum" => {
            if s.enumvals.iter().any(|e| e.eq_ignore_ascii_case(value)) {
                Ok(())
            } else {
                Err(format!("{name}: {value:?} is not one of {}", s.enumvals.join(", ")))
            }
        }
        "integer" | "real" => check_number(s, value),
        _ => Ok(()),
    }
}

/// The number in the setting's base unit, or why not.
fn check_number(s: &Setting, value: &str) -> Result<(), String> {
    let name = s.name;
    let v = value.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))).unwrap_or(v.len());
    // `1e3` parses as a number, but a unit starting with 'e' doesn't exist, so this is safe.
    let (num, unit) = (v[..split].trim(), v[split..].trim());
    let number: f64 = num.parse().map_err(|_| format!("{name}: {value:?} is not a number"))?;
    if s.vartype == "integer" && unit.is_empty() && number.fract() != 0.0 {
        return Err(format!("{name}: {value:?} is not a whole number"));
    }
    let factor = if unit.is_empty() {
        1.0
    } else {
        unit_factor(s.unit, unit).ok_or_else(|| match unit_kind(s.unit) {
            Some(UnitKind::Memory) => format!("{name}: unit {unit:?} is not one of B, kB, MB, GB, TB"),
            Some(UnitKind::Time) => format!("{name}: unit {unit:?} is not one of us, ms, s, min, h, d"),
            None => format!("{name}: takes a plain number, without a unit"),
        })?
    };
    let base = number * factor;
    let (min, max): (f64, f64) = (s.min.parse().unwrap_or(f64::MIN), s.max.parse().unwrap_or(f64::MAX));
    // PostgreSQL rounds to the base unit; compare with a little slack for that rounding.
    if base < min - 0.5 || base > max + 0.5 {
        let unit = if s.unit.is_empty() { String::new() } else { format!(" (in {})", s.unit) };
        return Err(format!("{name}: {value:?} is outside {}..{}{unit}", s.min, s.max));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum UnitKind {
    Memory,
    Time,
}

fn unit_kind(base: &str) -> Option<UnitKind> {
    match base {
        "B" | "kB" | "8kB" | "MB" => Some(UnitKind::Memory),
        "us" | "ms" | "s" | "min" => Some(UnitKind::Time),
        _ => None,
    }
}

/// How many base units one `unit` is (PostgreSQL's units are case-sensitive).
fn unit_factor(base: &str, unit: &str) -> Option<f64> {
    let bytes = |u: &str| -> Option<f64> {
        Some(match u {
            "B" => 1.0,
            "kB" => 1024.0,
            "8kB" => 8192.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        })
    };
    let micros = |u: &str| -> Option<f64> {
        Some(match u {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "min" => 60e6,
            "h" => 3600e6,
            "d" => 86400e6,
            _ => return None,
        })
    };
    match unit_kind(base)? {
        UnitKind::Memory if unit != "8kB" => Some(bytes(unit)? / bytes(base)?),
        UnitKind::Time => Some(micros(unit)? / micros(base)?),
        _ => None,
    }
}

/// Known names within two edits of `name`, for "did you mean".
fn close_names(name: &str) -> Vec<&'static str> {
    let mut close: Vec<(usize, &'static str)> =
        SETTINGS.keys().map(|k| (distance(name, k), *k)).filter(|(d, _)| *d <= 2).collect();
    close.sort();
    close.into_iter().take(3).map(|(_, k)| k).collect()
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_postgresql_15s_parameters() {
        assert!(SETTINGS.len() > 300);
        let sb = setting("shared_buffers").unwrap();
        assert_eq!((sb.context, sb.vartype, sb.unit), ("postmaster", "integer", "8kB"));
        assert!(needs_restart("max_connections"));
        assert!(!needs_restart("work_mem"));
    }

    #[test]
    fn good_values_pass() {
        for (k, v) in [
            ("shared_buffers", "128MB"),
            ("shared_buffers", "16384"),
            ("work_mem", "4MB"),
            ("work_mem", "64kB"),
            ("log_min_duration_statement", "250ms"),
            ("log_min_duration_statement", "-1"),
            ("statement_timeout", "30s"),
            ("checkpoint_timeout", "5min"),
            ("max_connections", "200"),
            ("synchronous_commit", "remote_apply"),
            ("synchronous_commit", "ON"),
            ("jit", "off"),
            ("random_page_cost", "1.1"),
            ("application_name", "x y"),
            ("vacuum_cost_delay", "2ms"),
        ] {
            assert_eq!(check(k, v), Ok(()), "{k}={v}");
        }
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |k: &str, v: &str| check(k, v).unwrap_err();
        assert!(err("shared_bufers", "1GB").contains("did you mean shared_buffers"), "{}", err("shared_bufers", "1GB"));
        assert!(err("nonsense_param_xyz", "1").contains("no such parameter"));
        assert!(err("max_connections", "0").contains("outside 1..262143"));
        assert!(err("max_connections", "lots").contains("not a number"));
        assert!(err("max_connections", "1.5").contains("whole number"));
        assert!(err("work_mem", "4XB").contains("not one of B, kB"));
        assert!(err("statement_timeout", "4MB").contains("not one of us, ms"));
        assert!(err("max_connections", "10ms").contains("plain number"));
        assert!(err("shared_buffers", "1B").contains("outside"));
        assert!(err("synchronous_commit", "maybe").contains("not one of"));
        assert!(err("jit", "perhaps").contains("not a boolean"));
        assert!(err("port", "5433").contains("manages"));
        assert!(err("recovery_target_time", "x").contains("manages"));
        assert!(err("block_size", "16384").contains("read-only"));
        assert!(err("application_name", "a\nb").contains("line break"));
        let many: BTreeMap<String, String> =
            [("port".into(), "1".into()), ("jit".into(), "x".into())].into_iter().collect();
        assert_eq!(validate(&many).unwrap_err().matches("; ").count(), 1);
    }
}
