//! What a valid resource name is. Names end up in DNS names, file paths, systemd units and
//! PostgreSQL identifiers, so they are DNS labels: the strictest of those.

/// Why a name was refused, phrased so it can follow "name \"x\" ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 63 characters")]
    TooLong,
    #[error("must start with a lowercase letter")]
    BadStart,
    #[error("must end with a lowercase letter or a digit")]
    BadEnd,
    #[error("may contain only lowercase letters, digits and '-' (found {0:?})")]
    BadChar(char),
}

/// Checks that `name` is a DNS label (RFC 1123) that starts with a letter: 1–63 of
/// `a-z0-9-`, starting with a letter, not ending with `-`.
pub fn check_dns_label(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > 63 {
        return Err(NameError::TooLong);
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(NameError::BadChar(c));
    }
    if !first.is_ascii_lowercase() {
        return Err(NameError::BadStart);
    }
    if name.ends_with('-') {
        return Err(NameError::BadEnd);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "pg-main", "eu-west-1", &"a".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(check_dns_label(""), Err(NameError::Empty));
        assert_eq!(check_dns_label(&"a".repeat(64)), Err(NameError::TooLong));
        assert_eq!(check_dns_label("1db"), Err(NameError::BadStart));
        assert_eq!(check_dns_label("-db"), Err(NameError::BadStart));
        assert_eq!(check_dns_label("db-"), Err(NameError::BadEnd));
        assert_eq!(check_dns_label("Db"), Err(NameError::BadChar('D')));
        assert_eq!(check_dns_label("a_b"), Err(NameError::BadChar('_')));
        assert_eq!(check_dns_label("a.b"), Err(NameError::BadChar('.')));
    }
}
