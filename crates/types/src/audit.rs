//! The audit record: who did what, to what, from where, with which outcome.
//!
//! Records form a hash chain: each record's `hash` covers its own fields and the previous
//! record's hash, so editing, removing or inserting a record breaks every hash after it.
//! [`AuditRecord::compute_hash`] is the one definition of that hash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::ids::AuditId;

/// The hash that stands before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// An audit record before the store gives it its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// User name, or `system` for the control plane's own actions.
    pub actor: String,
    #[serde(default)]
    pub project: Option<String>,
    /// The client's address, when the action came over the network.
    #[serde(default)]
    pub source: Option<String>,
    /// `resource.verb`, e.g. `location.create`.
    pub action: String,
    /// `kind/name` of the object acted on.
    pub target: String,
    /// The request's parameters, secrets already redacted.
    pub params: serde_json::Value,
    pub outcome: Outcome,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// A record of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    pub id: AuditId,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub outcome: Outcome,
    #[serde(default)]
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Where the chain ends: the last record's position and hash. Kept apart from the chain
/// (the store's `meta`), and printed by `audit verify` so it can be kept outside too:
/// removing records from the end of the chain is only visible against a head recorded
/// before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

impl AuditHead {
    /// `SEQ:HASH`, as kept in the store and given to `audit verify --anchor`.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.seq, self.hash)
    }

    pub fn parse(s: &str) -> Option<AuditHead> {
        let (seq, hash) = s.trim().split_once(':')?;
        let seq: i64 = seq.parse().ok().filter(|s| *s >= 1)?;
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| AuditHead { seq, hash: hash.to_ascii_lowercase() })
    }
}

impl AuditRecord {
    /// The chain hash of a record with these fields after `prev_hash`. Times count in
    /// milliseconds, the precision the store keeps, so a stored record re-hashes exactly.
    #[allow(clippy::too_many_arguments)]
    pub fn compute_hash(seq: i64, id: AuditId, entry: &AuditEntry, prev_hash: &str) -> String {
        let canonical = serde_json::json!([
            seq,
            id.to_string(),
            entry.at.timestamp_millis(),
            entry.actor,
            entry.project,
            entry.source,
            entry.action,
            entry.target,
            canonical_json(&entry.params),
            entry.outcome.as_str(),
            entry.request_id,
            prev_hash,
        ]);
        hex_lower(&Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// The entry this record was made from.
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            at: self.at,
            actor: self.actor.clone(),
            project: self.project.clone(),
            source: self.source.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            params: self.params.clone(),
            outcome: self.outcome,
            request_id: self.request_id.clone(),
        }
    }

    /// Whether this record's hash matches its fields and `prev_hash`.
    pub fn hash_is_valid(&self) -> bool {
        Self::compute_hash(self.seq, self.id, &self.entry(), &self.prev_hash) == self.hash
    }
}

/// `value` with every object's keys in sorted order, whatever order serde_json keeps maps
/// in (its `preserve_order` feature may be switched on by any crate in the build).
fn canonical_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(keys.into_iter().map(|k| (k.clone(), canonical_json(&m[k]))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            actor: "admin".into(),
            project: Some("default".into()),
            source: Some("127.0.0.1".into()),
            action: "location.create".into(),
            target: "location/eu".into(),
            params: serde_json::json!({"region": "eu", "a": 1}),
            outcome: Outcome::Success,
            request_id: None,
        }
    }

    #[test]
    fn hash_covers_every_field_and_the_previous_hash() {
        let id = AuditId::new();
        let base = AuditRecord::compute_hash(1, id, &entry(), GENESIS_HASH);
        assert_eq!(base.len(), 64);
        assert_eq!(base, AuditRecord::compute_hash(1, id, &entry(), GENESIS_HASH));
        assert_ne!(base, AuditRecord::compute_hash(2, id, &entry(), GENESIS_HASH));
        assert_ne!(base, AuditRecord::compute_hash(1, id, &entry(), &"1".repeat(64)));
        let mut e = entry();
        e.target = "location/us".into();
        assert_ne!(base, AuditRecord::compute_hash(1, id, &e, GENESIS_HASH));
        let mut e = entry();
        e.params = serde_json::json!({"region": "eu", "a": 2});
        assert_ne!(base, AuditRecord::compute_hash(1, id, &e, GENESIS_HASH));
    }
}
