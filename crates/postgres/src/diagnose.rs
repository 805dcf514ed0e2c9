//! Reading why a member doesn't serve out of the end of its logs: the one line of
//! Patroni's log and of PostgreSQL's that says it best, for a wait's progress and its
//! failure (`waiting for a primary (up to 5m): db1-1: patroni: ERROR: Failed to get list
//! of machines from https://…: ModuleNotFoundError("No module named 'idna'")`).
//!
//! Anyone who may read the operation reads these lines, and logs can quote SQL: only
//! severity lines are picked (never `STATEMENT:`/`DETAIL:` lines, which carry statement
//! text), and a quoted value after `password` is masked.

/// The longest line a diagnosis keeps, in characters.
const MAX_LINE: usize = 300;

/// The line of Patroni's log (or its stderr) that says most: the last error (an
/// `ERROR`/`CRITICAL`/`FATAL` record or the exception line that ends a traceback), else
/// the last warning, else the last line (`waiting for leader to bootstrap`).
pub fn patroni_line(lines: &[String]) -> Option<String> {
    let error = |l: &str| [" ERROR: ", " CRITICAL: ", " FATAL: "].iter().any(|s| l.contains(s)) || is_exception_line(l);
    pick(lines, error, |l| l.contains(" WARNING: "))
}

/// The line of PostgreSQL's log that says most: the last `FATAL`/`PANIC`/`ERROR`
/// message, else the last `WARNING`/`LOG` message.
pub fn postgres_line(lines: &[String]) -> Option<String> {
    let severity = |l: &str, levels: &[&str]| levels.iter().any(|s| l.contains(&format!("{s}:  ")));
    pick(lines, |l| severity(l, &["FATAL", "PANIC", "ERROR"]), |l| severity(l, &["WARNING", "LOG"]))
}

fn pick(lines: &[String], error: impl Fn(&str) -> bool, warning: impl Fn(&str) -> bool) -> Option<String> {
    let usable: Vec<&str> = lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !carries_sql(l)).collect();
    let found =
        usable.iter().rev().find(|l| error(l)).or_else(|| usable.iter().rev().find(|l| warning(l))).or(usable.last())?;
    Some(shorten(&mask_passwords(found)))
}

/// `ModuleNotFoundError: No module named 'idna'`, `psycopg2.OperationalError: …`.
fn is_exception_line(l: &str) -> bool {
    let Some((head, _)) = l.split_once(": ") else { return false };
    !head.contains(' ')
        && (head.ends_with("Error") || head.ends_with("Exception") || head.ends_with("Exit"))
        && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
}

/// PostgreSQL's lines that quote a statement (and Patroni's that echo one).
fn carries_sql(l: &str) -> bool {
    ["STATEMENT:  ", "DETAIL:  ", "QUERY:  ", "CONTEXT:  "].iter().any(|s| l.contains(s))
}

/// `PASSWORD 'x'` → `PASSWORD '…'`, whatever the case, for `'`- and `"`-quoted values.
fn mask_passwords(l: &str) -> String {
    let lower = l.to_ascii_lowercase();
    let mut out = String::with_capacity(l.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("password") {
        let after_word = at + found + "password".len();
        out.push_str(&l[at..after_word]);
        let rest = &l[after_word..];
        let skipped = rest.len() - rest.trim_start_matches([' ', '=', ':']).len();
        let value = &rest[skipped..];
        match value.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let end = value[1..].find(q).map(|i| i + 2).unwrap_or(value.len());
                out.push_str(&rest[..skipped]);
                out.push(q);
                out.push('…');
                out.push(q);
                at = after_word + skipped + end;
            }
            _ => at = after_word,
        }
    }
    out.push_str(&l[at..]);
    out
}

fn shorten(l: &str) -> String {
    match l.char_indices().nth(MAX_LINE) {
        Some((i, _)) => format!("{}…", &l[..i]),
        None => l.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn patroni_the_last_error_wins_over_later_info() {
        let log = lines(
            "2026-12-07 10:00:00,001 INFO: No PostgreSQL configuration items changed, nothing to reload.\n\
             2026-12-07 10:00:01,002 ERROR: Failed to get list of machines from https://127.0.0.1:2379/v2: ModuleNotFoundError(\"No module named 'idna'\")\n\
             2026-12-07 10:00:01,003 INFO: waiting for leader to bootstrap",
        );
        assert_eq!(
            patroni_line(&log).unwrap(),
            "2026-12-07 10:00:01,002 ERROR: Failed to get list of machines from https://127.0.0.1:2379/v2: ModuleNotFoundError(\"No module named 'idna'\")"
        );
    }

    #[test]
    fn patroni_a_traceback_gives_its_exception_line() {
        let log = lines(
            "Traceback (most recent call last):\n  File \"/usr/bin/patroni\", line 33, in <module>\n    import idna\n\
             ModuleNotFoundError: No module named 'idna'",
        );
        assert_eq!(patroni_line(&log).unwrap(), "ModuleNotFoundError: No module named 'idna'");
    }

    #[test]
    fn patroni_without_errors_says_what_it_does() {
        let log = lines("2026-12-07 10:00:00,001 INFO: waiting for leader to bootstrap\n");
        assert_eq!(patroni_line(&log).unwrap(), "2026-12-07 10:00:00,001 INFO: waiting for leader to bootstrap");
        assert_eq!(patroni_line(&[]), None);
    }

    #[test]
    fn postgres_picks_the_fatal_and_never_a_statement() {
        let log = lines(
            "2026-12-07 10:00:00.001 UTC [12] LOG:  database system is ready to accept connections\n\
             2026-12-07 10:00:01.001 UTC [13] FATAL:  could not map anonymous shared memory: Cannot allocate memory\n\
             2026-12-07 10:00:02.001 UTC [14] ERROR:  syntax error at or near \"PASSWORD\"\n\
             2026-12-07 10:00:02.001 UTC [14] STATEMENT:  ALTER ROLE app PASSWORD 'hunter2' x\n\
             2026-12-07 10:00:03.001 UTC [12] LOG:  shutting down",
        );
        let line = postgres_line(&log).unwrap();
        assert!(line.contains("ERROR:  syntax error"), "{line}");
        assert!(!line.contains("hunter2"));
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_passwords("FATAL:  bad PASSWORD 'hunter2' for user"), "FATAL:  bad PASSWORD '…' for user");
        assert_eq!(mask_passwords("password=\"s3cret\" ok"), "password=\"…\" ok");
        assert_eq!(mask_passwords("password authentication failed"), "password authentication failed");
        assert_eq!(mask_passwords("password '"), "password '…'");
    }

    #[test]
    fn long_lines_are_cut() {
        let long = "x".repeat(1000);
        assert_eq!(shorten(&long).chars().count(), MAX_LINE + 1);
    }
}
