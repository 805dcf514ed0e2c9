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

/// What is wrong at the first bad record of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditProblemKind {
    /// A record's fields no longer match its hash, or it was rewritten with a hash made
    /// to match (then the next record no longer follows it).
    Edited,
    /// Records are missing: a gap in `seq`, or fewer records than the recorded head.
    Removed,
    /// A record that the chain did not have: records renumbered to make room, or records
    /// beyond the recorded head.
    Inserted,
    /// A record's hash is right for another position.
    Reordered,
}

/// The first bad record: its position and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditProblem {
    pub seq: i64,
    pub kind: AuditProblemKind,
    pub message: String,
}

/// Answer of `audit verify`: whether the whole chain is intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// Records checked.
    pub records: i64,
    /// The last record of the chain as read (keep it outside the installation to detect
    /// later rewrites: `audit verify --anchor SEQ:HASH`).
    #[serde(default)]
    pub head: Option<AuditHead>,
    /// The head recorded apart from the chain with the last append.
    #[serde(default)]
    pub recorded_head: Option<AuditHead>,
    /// The first bad record, when not `ok`.
    #[serde(default)]
    pub problem: Option<AuditProblem>,
}

/// Walks a chain in `seq` order, one record at a time (so a chain of any length is checked
/// in constant memory), and names the first bad record.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
    /// The hash before `prev_hash`: a record that links to it skipped its predecessor.
    prev_prev_hash: Option<String>,
    count: i64,
    last: Option<AuditHead>,
    anchor: Option<AuditHead>,
    /// A record whose hash is right for a later position `(seq, position)`: decided by the
    /// record after it.
    pending: Option<(i64, i64)>,
}

/// How far from its place a record's hash is looked for, to tell reordering and
/// renumbering from editing.
const PLACE_WINDOW: i64 = 64;

impl ChainVerifier {
    /// `anchor`: a head kept from an earlier verify; the chain must still hold it.
    pub fn new(anchor: Option<AuditHead>) -> ChainVerifier {
        ChainVerifier {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            prev_prev_hash: None,
            count: 0,
            last: None,
            anchor,
            pending: None,
        }
    }

    /// Records checked so far.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The `seq` the next record must have.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// The last record checked.
    pub fn last(&self) -> Option<&AuditHead> {
        self.last.as_ref()
    }

    /// Checks the next record; the first problem ends the walk.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), AuditProblem> {
        let problem = |seq, kind, message: String| Err(AuditProblem { seq, kind, message });
        if let Some((seq, place)) = self.pending {
            let entry = r.entry();
            let swapped = (r.seq - PLACE_WINDOW..r.seq)
                .filter(|s| *s >= 1)
                .any(|s| AuditRecord::compute_hash(s, r.id, &entry, &r.prev_hash) == r.hash);
            return Err(Self::shifted_down(seq, place, swapped));
        }
        let expected = self.next_seq;
        if r.seq > expected {
            let missing = if r.seq == expected + 1 {
                format!("record {expected} is missing")
            } else {
                format!("records {expected} to {} are missing", r.seq - 1)
            };
            return problem(expected, AuditProblemKind::Removed, format!("{missing}: removed from the chain"));
        }
        if r.seq < expected {
            return problem(r.seq, AuditProblemKind::Inserted, format!("record {} appears twice", r.seq));
        }
        if !r.hash_is_valid() {
            let entry = r.entry();
            let place = (r.seq - PLACE_WINDOW..=r.seq + PLACE_WINDOW)
                .filter(|s| *s >= 1 && *s != r.seq)
                .find(|s| AuditRecord::compute_hash(*s, r.id, &entry, &r.prev_hash) == r.hash);
            return match place {
                // Shifted up: records were put in before it.
                Some(s) if s < r.seq => problem(
                    s,
                    AuditProblemKind::Inserted,
                    if s + 1 == r.seq {
                        format!(
                            "record {s} is not part of the chain: it was inserted, and the records after it renumbered"
                        )
                    } else {
                        format!(
                            "records {s} to {} are not part of the chain: they were inserted, and the records after \
                             them renumbered",
                            r.seq - 1
                        )
                    },
                ),
                // Shifted down: records before it were taken out, or it swapped places
                // with a later one. The next record tells which.
                Some(s) => {
                    self.pending = Some((r.seq, s));
                    Ok(())
                }
                None => problem(
                    r.seq,
                    AuditProblemKind::Edited,
                    format!("record {}'s fields do not match its hash: it was edited", r.seq),
                ),
            };
        }
        if r.prev_hash != self.prev_hash {
            if self.prev_prev_hash.as_deref() == Some(r.prev_hash.as_str()) {
                return problem(
                    r.seq - 1,
                    AuditProblemKind::Inserted,
                    format!(
                        "record {} is not part of the chain: record {} follows the one before it",
                        r.seq - 1,
                        r.seq
                    ),
                );
            }
            let before = r.seq - 1;
            return problem(
                before.max(1),
                AuditProblemKind::Edited,
                format!(
                    "record {} does not follow record {before}: record {before} was rewritten (its hash recomputed) or replaced",
                    r.seq
                ),
            );
        }
        if let Some(a) = &self.anchor {
            if a.seq == r.seq && a.hash != r.hash {
                return problem(
                    r.seq,
                    AuditProblemKind::Edited,
                    format!("record {} is not the anchored one: the chain up to it was rewritten", r.seq),
                );
            }
        }
        self.prev_prev_hash = Some(std::mem::replace(&mut self.prev_hash, r.hash.clone()));
        self.next_seq = r.seq + 1;
        self.count += 1;
        self.last = Some(AuditHead { seq: r.seq, hash: r.hash.clone() });
        Ok(())
    }

    fn shifted_down(seq: i64, place: i64, swapped: bool) -> AuditProblem {
        if swapped {
            AuditProblem {
                seq,
                kind: AuditProblemKind::Reordered,
                message: format!("record {seq} belongs at position {place}: records were reordered"),
            }
        } else {
            AuditProblem {
                seq,
                kind: AuditProblemKind::Removed,
                message: format!(
                    "record {seq} was at position {place}: the records before it were removed and the rest renumbered"
                ),
            }
        }
    }

    /// After the last record: checks the end of the chain against the head recorded apart
    /// from it and against the anchor.
    pub fn finish(self, recorded: Option<AuditHead>) -> AuditVerification {
        if let Some((seq, place)) = self.pending {
            let problem = Self::shifted_down(seq, place, false);
            return AuditVerification {
                ok: false,
                records: self.count,
                head: self.last,
                recorded_head: recorded,
                problem: Some(problem),
            };
        }
        let last_seq = self.last.as_ref().map_or(0, |h| h.seq);
        let problem = match (&recorded, &self.last) {
            (None, None) => None,
            (None, Some(l)) => Some(AuditProblem {
                seq: l.seq,
                kind: AuditProblemKind::Removed,
                message: "the chain's head is not recorded apart from it (meta `audit.head` was removed): the end of \
                          the chain cannot be checked"
                    .into(),
            }),
            (Some(h), _) if h.seq > last_seq => Some(AuditProblem {
                seq: last_seq + 1,
                kind: AuditProblemKind::Removed,
                message: if h.seq == last_seq + 1 {
                    format!("record {} is missing: removed from the end of the chain", h.seq)
                } else {
                    format!("records {} to {} are missing: removed from the end of the chain", last_seq + 1, h.seq)
                },
            }),
            (Some(h), _) if h.seq < last_seq => Some(AuditProblem {
                seq: h.seq + 1,
                kind: AuditProblemKind::Inserted,
                message: format!(
                    "records {} to {last_seq} are beyond the recorded head ({}): added outside sovdb",
                    h.seq + 1,
                    h.seq
                ),
            }),
            (Some(h), Some(l)) if h.hash != l.hash => Some(AuditProblem {
                seq: l.seq,
                kind: AuditProblemKind::Edited,
                message: format!("record {}'s hash differs from the recorded head's: it was rewritten", l.seq),
            }),
            _ => None,
        };
        let problem = problem.or_else(|| {
            self.anchor.as_ref().filter(|a| a.seq > last_seq).map(|a| AuditProblem {
                seq: last_seq + 1,
                kind: AuditProblemKind::Removed,
                message: format!(
                    "the chain ends at {last_seq}, before the anchored record {}: records were removed",
                    a.seq
                ),
            })
        });
        AuditVerification {
            ok: problem.is_none(),
            records: self.count,
            head: self.last,
            recorded_head: recorded,
            problem,
        }
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

    /// A valid chain of `n` records.
    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let mut e = entry();
                e.target = format!("location/l{seq}");
                let r = record(seq, &e, &prev);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn record(seq: i64, e: &AuditEntry, prev: &str) -> AuditRecord {
        let id = AuditId::new();
        let hash = AuditRecord::compute_hash(seq, id, e, prev);
        AuditRecord {
            seq,
            id,
            at: e.at,
            actor: e.actor.clone(),
            project: e.project.clone(),
            source: e.source.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            params: e.params.clone(),
            outcome: e.outcome,
            request_id: e.request_id.clone(),
            prev_hash: prev.to_string(),
            hash,
        }
    }

    fn head(r: &AuditRecord) -> Option<AuditHead> {
        Some(AuditHead { seq: r.seq, hash: r.hash.clone() })
    }

    fn verify(records: &[AuditRecord], recorded: Option<AuditHead>) -> AuditVerification {
        let mut v = ChainVerifier::new(None);
        for r in records {
            if let Err(problem) = v.push(r) {
                return AuditVerification {
                    ok: false,
                    records: v.count(),
                    head: None,
                    recorded_head: None,
                    problem: Some(problem),
                };
            }
        }
        v.finish(recorded)
    }

    fn problem(v: AuditVerification) -> (i64, AuditProblemKind) {
        let p = v.problem.expect("a problem");
        (p.seq, p.kind)
    }

    #[test]
    fn an_intact_chain_verifies_with_its_head() {
        let c = chain(5);
        let v = verify(&c, head(&c[4]));
        assert!(v.ok, "{v:?}");
        assert_eq!((v.records, v.head), (5, head(&c[4])));
        assert!(verify(&[], None).ok);
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_record() {
        let c = chain(6);
        let h = head(&c[5]);
        // One field edited.
        let mut edited = c.clone();
        edited[2].actor = "mallory".into();
        assert_eq!(problem(verify(&edited, h.clone())), (3, AuditProblemKind::Edited));
        // Edited with its hash recomputed: the next record no longer follows it.
        let mut rehashed = c.clone();
        rehashed[2].actor = "mallory".into();
        rehashed[2].hash = AuditRecord::compute_hash(3, rehashed[2].id, &rehashed[2].entry(), &rehashed[2].prev_hash);
        assert_eq!(problem(verify(&rehashed, h.clone())), (3, AuditProblemKind::Edited));
        // One removed from the middle.
        let removed: Vec<_> = c.iter().filter(|r| r.seq != 3).cloned().collect();
        assert_eq!(problem(verify(&removed, h.clone())), (3, AuditProblemKind::Removed));
        // Removed, and the rest renumbered.
        let mut renumbered = removed.clone();
        for r in renumbered.iter_mut().skip(2) {
            r.seq -= 1;
        }
        assert_eq!(problem(verify(&renumbered, h.clone())), (3, AuditProblemKind::Removed));
        // The last removed: only the recorded head shows it (the chain itself is whole).
        assert!(verify(&c[..5], head(&c[4])).ok);
        assert_eq!(problem(verify(&c[..5], h.clone())), (6, AuditProblemKind::Removed));
        // A forged record put in at 3 (with a right hash), the rest renumbered.
        let mut inserted = c[..2].to_vec();
        let mut e = entry();
        e.actor = "mallory".into();
        inserted.push(record(3, &e, &c[1].hash));
        inserted.extend(c[2..].iter().cloned().map(|mut r| {
            r.seq += 1;
            r
        }));
        assert_eq!(problem(verify(&inserted, h.clone())), (3, AuditProblemKind::Inserted));
        // A forged record appended with a right hash: beyond the recorded head.
        let mut appended = c.clone();
        appended.push(record(7, &e, &c[5].hash));
        assert_eq!(problem(verify(&appended, h.clone())), (7, AuditProblemKind::Inserted));
        // Two records swapped.
        let mut swapped = c.clone();
        swapped.swap(2, 3);
        swapped[2].seq = 3;
        swapped[3].seq = 4;
        assert_eq!(problem(verify(&swapped, h.clone())), (3, AuditProblemKind::Reordered));
        // The recorded head removed.
        assert_eq!(problem(verify(&c, None)), (6, AuditProblemKind::Removed));
    }

    #[test]
    fn an_anchor_catches_a_chain_rewritten_up_to_it() {
        let c = chain(3);
        let mut v = ChainVerifier::new(head(&c[1]));
        // A whole new chain, consistent in itself.
        let forged = chain(3);
        assert_eq!(v.push(&forged[0]), Ok(()));
        assert_eq!(v.push(&forged[1]).unwrap_err().kind, AuditProblemKind::Edited);
        let mut v = ChainVerifier::new(head(&c[2]));
        v.push(&c[0]).unwrap();
        v.push(&c[1]).unwrap();
        assert_eq!(problem(v.finish(head(&c[1]))), (3, AuditProblemKind::Removed));
        assert_eq!(AuditHead::parse(&head(&c[2]).unwrap().to_text()), head(&c[2]));
        assert_eq!(AuditHead::parse("0:abc"), None);
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
