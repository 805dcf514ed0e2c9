//! Where a cluster's members go: pure, so every rule is unit-tested.
//!
//! A member reserves [`MEMBER_MEMORY_MB`] of its host's memory; a host offers 80 % of its
//! memory. Only `ready` hosts with every required label are candidates. Members are spread
//! greedily: each goes to the candidate whose zone, then host, holds the fewest members
//! of this cluster so far (then the least loaded host, then by name). `--spread zone` and
//! `--spread host` make that spread a hard rule: every member in its own zone, or on its
//! own host. Without one, members share a zone or a host only when there are too few.

use std::collections::BTreeMap;

use sovdb_types::{HostId, HostStatus, Labels, Spread};

/// The memory one member reserves on its host.
pub const MEMBER_MEMORY_MB: u64 = 512;
/// The share of a host's memory members may reserve.
const USABLE_PERCENT: u64 = 80;

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: HostId,
    pub name: String,
    pub zone: Option<String>,
    pub labels: Labels,
    pub status: HostStatus,
    pub memory_bytes: u64,
    /// Members of any cluster already on the host.
    pub members: u64,
}

impl Candidate {
    fn capacity(&self) -> u64 {
        (self.memory_bytes / 1024 / 1024 * USABLE_PERCENT / 100 / MEMBER_MEMORY_MB).saturating_sub(self.members)
    }
    /// Hosts without a zone count as a zone of their own.
    fn zone_key(&self) -> String {
        self.zone.clone().unwrap_or_else(|| format!("host:{}", self.name))
    }
}

/// Chooses a host for each of `n` members, or says why it can't.
pub fn place(
    location: &str,
    hosts: &[Candidate],
    n: u32,
    spread: Option<Spread>,
    required: &Labels,
) -> Result<Vec<HostId>, String> {
    place_more(location, hosts, &[], n, spread, required)
}

/// Hosts for `n` more members of a cluster whose members already run on `existing`
/// (one entry per member): the spread counts them, so new members go where the cluster
/// is not yet, and a hard spread rule holds for the whole cluster.
pub fn place_more(
    location: &str,
    hosts: &[Candidate],
    existing: &[HostId],
    n: u32,
    spread: Option<Spread>,
    required: &Labels,
) -> Result<Vec<HostId>, String> {
    if hosts.is_empty() {
        return Err(format!("location {location:?} has no hosts: add one with `sovdb host add`"));
    }
    let ready: Vec<&Candidate> = hosts.iter().filter(|h| h.status == HostStatus::Ready).collect();
    if ready.is_empty() {
        let states: Vec<String> = hosts.iter().map(|h| format!("{} is {}", h.name, h.status.as_str())).collect();
        return Err(format!("no host of location {location:?} is ready ({})", states.join(", ")));
    }
    let matching: Vec<&Candidate> =
        ready.into_iter().filter(|h| required.iter().all(|(k, v)| h.labels.get(k) == Some(v))).collect();
    if matching.is_empty() {
        let want: Vec<String> = required.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(format!("no ready host of location {location:?} has the labels {}", want.join(", ")));
    }
    let mut free: BTreeMap<&str, u64> = matching.iter().map(|h| (h.name.as_str(), h.capacity())).collect();
    let total: u64 = free.values().sum();
    if total < u64::from(n) {
        return Err(format!(
            "not enough capacity in location {location:?}: {n} members need {n} × {MEMBER_MEMORY_MB} MB but the matching \
             hosts have room for {total}; add hosts or remove clusters"
        ));
    }
    let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_host: BTreeMap<&str, u32> = BTreeMap::new();
    for id in existing {
        if let Some(h) = hosts.iter().find(|h| h.id == *id) {
            *per_zone.entry(h.zone_key()).or_default() += 1;
            *per_host.entry(h.name.as_str()).or_default() += 1;
        }
    }
    let total = n + existing.len() as u32;
    let mut chosen = Vec::new();
    for _ in 0..n {
        let best = matching
            .iter()
            .filter(|h| free[h.name.as_str()] > 0)
            .filter(|h| match spread {
                Some(Spread::Zone) => !per_zone.contains_key(&h.zone_key()),
                Some(Spread::Host) => !per_host.contains_key(h.name.as_str()),
                None => true,
            })
            .min_by_key(|h| {
                (
                    per_zone.get(&h.zone_key()).copied().unwrap_or(0),
                    per_host.get(h.name.as_str()).copied().unwrap_or(0),
                    h.members,
                    h.name.clone(),
                )
            });
        let Some(h) = best else {
            let (what, count) = match spread {
                Some(Spread::Zone) => ("zones", per_zone.len()),
                _ => ("hosts", per_host.len()),
            };
            return Err(format!(
                "--spread {} needs {total} {what} with room in location {location:?} (with the required labels), \
                 but only {count} can take a member; add hosts or lower --replicas",
                spread.map(Spread::as_str).unwrap_or("")
            ));
        };
        *free.get_mut(h.name.as_str()).expect("a candidate") -= 1;
        *per_zone.entry(h.zone_key()).or_default() += 1;
        *per_host.entry(h.name.as_str()).or_default() += 1;
        chosen.push(h.id);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1024 * 1024 * 1024;

    fn host(name: &str, zone: Option<&str>, memory_gb: u64) -> Candidate {
        Candidate {
            id: HostId::new(),
            name: name.into(),
            zone: zone.map(String::from),
            labels: Labels::new(),
            status: HostStatus::Ready,
            memory_bytes: memory_gb * GB,
            members: 0,
        }
    }

    fn names(hosts: &[Candidate], ids: &[HostId]) -> Vec<String> {
        ids.iter().map(|id| hosts.iter().find(|h| h.id == *id).unwrap().name.clone()).collect()
    }

    #[test]
    fn spreads_over_zones_then_hosts() {
        let hosts = [host("a1", Some("a"), 8), host("a2", Some("a"), 8), host("b1", Some("b"), 8)];
        let got = place("l", &hosts, 3, None, &Labels::new()).unwrap();
        assert_eq!(names(&hosts, &got), ["a1", "b1", "a2"]);
    }

    #[test]
    fn one_host_takes_every_member_without_a_spread_rule() {
        let hosts = [host("local", None, 24)];
        assert_eq!(place("local", &hosts, 3, None, &Labels::new()).unwrap().len(), 3);
        let err = place("local", &hosts, 3, Some(Spread::Host), &Labels::new()).unwrap_err();
        assert!(err.contains("--spread host needs 3 hosts"), "{err}");
    }

    #[test]
    fn zone_spread_is_a_hard_rule() {
        let hosts = [host("a1", Some("a"), 8), host("a2", Some("a"), 8), host("b1", Some("b"), 8)];
        let err = place("l", &hosts, 3, Some(Spread::Zone), &Labels::new()).unwrap_err();
        assert!(err.contains("--spread zone needs 3 zones") && err.contains("only 2"), "{err}");
        let ok = place("l", &hosts, 2, Some(Spread::Zone), &Labels::new()).unwrap();
        assert_eq!(names(&hosts, &ok), ["a1", "b1"]);
    }

    #[test]
    fn more_members_go_where_the_cluster_is_not() {
        let hosts = [host("a1", Some("a"), 8), host("b1", Some("b"), 8), host("c1", Some("c"), 8)];
        let got = place_more("l", &hosts, &[hosts[0].id, hosts[2].id], 1, None, &Labels::new()).unwrap();
        assert_eq!(names(&hosts, &got), ["b1"]);
        let err =
            place_more("l", &hosts, &[hosts[0].id, hosts[1].id, hosts[2].id], 1, Some(Spread::Zone), &Labels::new())
                .unwrap_err();
        assert!(err.contains("--spread zone needs 4 zones"), "{err}");
    }

    #[test]
    fn labels_status_and_capacity_filter() {
        let mut hosts = [host("a", None, 8), host("b", None, 8), host("c", None, 1)];
        hosts[0].labels.insert("tier".into(), "nvme".into());
        hosts[1].status = HostStatus::Unreachable;
        let nvme: Labels = [("tier".to_string(), "nvme".to_string())].into();
        assert_eq!(names(&hosts, &place("l", &hosts, 1, None, &nvme).unwrap()), ["a"]);
        let gpu: Labels = [("gpu".to_string(), "yes".to_string())].into();
        assert!(place("l", &hosts, 1, None, &gpu).unwrap_err().contains("has the labels gpu=yes"));
        // 1 GB offers one member (80 % of 1024 MB / 512 MB); 8 GB offers 12.
        assert_eq!(hosts[2].capacity(), 1);
        hosts[0].members = 12;
        let err = place("l", &hosts, 2, None, &Labels::new()).unwrap_err();
        assert!(err.contains("not enough capacity") && err.contains("room for 1"), "{err}");
        assert!(place("l", &[], 1, None, &Labels::new()).unwrap_err().contains("has no hosts"));
        hosts.iter_mut().for_each(|h| h.status = HostStatus::Draining);
        assert!(place("l", &hosts, 1, None, &Labels::new()).unwrap_err().contains("a is draining"));
    }
}
