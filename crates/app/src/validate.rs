//! Input checks shared by the resource modules. Each returns the message the user sees.

use sovdb_types::names::check_dns_label;
use sovdb_types::Labels;

use crate::{AppError, Result};

/// `what` is a DNS label (names, regions, zones).
pub(crate) fn dns_label(what: &str, value: &str) -> Result<()> {
    check_dns_label(value).map_err(|e| AppError::Invalid(format!("{what} {value:?} {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

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
