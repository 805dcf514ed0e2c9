//! Input checks shared by the resource modules. Each returns the message the user sees.

use sovdb_types::names::check_dns_label;
use sovdb_types::Labels;

use crate::{AppError, Result};

/// `what` is a DNS label (names, regions, zones).
pub(crate) fn dns_label(what: &str, value: &str) -> Result<()> {
    check_dns_label(value).map_err(|e| AppError::Invalid(format!("{what} {value:?} {e}")))
}

/// A token's name: 1-64 printable characters, so lists stay readable.
pub(crate) fn token_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AppError::Invalid(format!("token name {name:?} must be 1-64 printable characters")));
    }
    Ok(())
}

/// Label keys look like Kubernetes label keys; values are short printable text.
pub(crate) fn labels(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.starts_with(|c: char| c.is_ascii_alphanumeric())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
        if !key_ok {
            return Err(AppError::Invalid(format!(
                "label key {k:?} must be 1-63 letters, digits, '.', '_', '/' or '-', starting with a letter or digit"
            )));
        }
        if v.len() > 255 || v.chars().any(char::is_control) {
            return Err(AppError::Invalid(format!("label {k:?}: value must be at most 255 printable characters")));
        }
    }
    Ok(())
}

/// A plain absolute path: `/`-separated names of letters, digits, `.`, `_`, `-` and `+`,
/// no `.` or `..` component, no empty one (`//`, a trailing `/`), at most 200 characters,
/// and not `/` itself. Such a path means the same to every program it is given to
/// (shells, configuration files, pgBackRest).
pub(crate) fn plain_path(what: &str, value: &str) -> Result<()> {
    let names: Vec<&str> = value.strip_prefix('/').map(|rest| rest.split('/').collect()).unwrap_or_default();
    let ok = !names.is_empty()
        && value.len() <= 200
        && names.iter().all(|n| {
            !n.is_empty()
                && *n != "."
                && *n != ".."
                && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(format!(
            "{what} {value:?} is not a plain absolute path: give one like /srv/backups/db, made of letters, digits, \
             '.', '_', '-' and '+', without '..', '//' or a trailing '/' (at most 200 characters)"
        )))
    }
}

/// An IP address or a DNS name.
pub(crate) fn is_host_name(value: &str) -> bool {
    value.parse::<std::net::IpAddr>().is_ok()
        || (!value.is_empty()
            && value.len() <= 253
            && value.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths() {
        for ok in ["/srv/backups", "/var/lib/sovdb-repo/db_1", "/a", "/x/y.z+1"] {
            assert!(plain_path("--path", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/",
            "relative/dir",
            "/srv/../etc",
            "/srv/./x",
            "/srv//x",
            "/srv/x/",
            "/srv/a b",
            "/srv/x\n",
            "/srv/$HOME",
            "/srv/x;rm",
            &format!("/{}", "a".repeat(200)),
        ] {
            let err = plain_path("--path", bad).unwrap_err().to_string();
            assert!(err.contains("not a plain absolute path"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn host_names() {
        for ok in ["s3.example.com", "minio", "10.0.0.1", "::1", "a-b.c1"] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in ["", "-a.com", "a..b", "a_b.com", "https://x", "a b", "x:9000"] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn label_rules() {
        let ok: Labels = [("jurisdiction".into(), "EU".into()), ("topology.sovdb.io/zone".into(), "a-1".into())].into();
        assert!(labels(&ok).is_ok());
        for bad_key in ["", "-x", "a b", "k=v", &"k".repeat(64)] {
            let l: Labels = [(bad_key.to_string(), "v".to_string())].into();
            assert!(labels(&l).is_err(), "{bad_key:?}");
        }
        let l: Labels = [("k".to_string(), "a\nb".to_string())].into();
        assert!(labels(&l).is_err());
    }
}
