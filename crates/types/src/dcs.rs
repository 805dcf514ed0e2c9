//! A location as `GET /api/v1/locations/{name}` shows it: the location and the health of
//! its DCS (the etcd cluster Patroni keeps its leader locks in), as the control plane
//! observed it when it answered.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::resources::Location;

/// The DCS as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DcsState {
    /// The location has no DCS yet: its first cluster creates it.
    None,
    /// Every member answers healthy.
    Healthy,
    /// Some members do not answer healthy, but a majority does: Patroni works on, one
    /// more lost member stops failovers.
    Degraded,
    /// No majority of healthy members: Patroni cannot renew or take a leader lock. With
    /// `failsafe_mode`, a primary that still reaches every other member stays primary;
    /// no failover can happen.
    Unavailable,
}

impl DcsState {
    pub fn as_str(self) -> &'static str {
        match self {
            DcsState::None => "none",
            DcsState::Healthy => "healthy",
            DcsState::Degraded => "degraded",
            DcsState::Unavailable => "unavailable",
        }
    }

    /// The state of a DCS of `members` of which `healthy` answer healthy.
    pub fn of(members: usize, healthy: usize) -> DcsState {
        if members == 0 {
            DcsState::None
        } else if healthy == members {
            DcsState::Healthy
        } else if healthy > members / 2 {
            DcsState::Degraded
        } else {
            DcsState::Unavailable
        }
    }
}

/// One etcd member of a location's DCS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DcsMemberStatus {
    /// `etcd-1`, `etcd-2`, ...
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its client endpoint, `address:port` (mutual TLS).
    pub endpoint: String,
    /// Whether it answered `/health` with `true` (it has a leader and serves reads).
    pub healthy: bool,
    /// Why it is not healthy: no answer, or what it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The health of a location's DCS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DcsStatus {
    pub status: DcsState,
    pub members: Vec<DcsMemberStatus>,
}

/// Answer of `GET /api/v1/locations/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LocationDetail {
    #[serde(flatten)]
    pub location: Location,
    pub dcs: DcsStatus,
    /// Where the location's hosts forward their clusters' PostgreSQL and Patroni logs
    /// (`tcp://HOST:PORT` or `tls://HOST:PORT`, RFC 5424); absent: nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<String>,
    /// The CA certificates (PEM) a `tls://` syslog server's certificate must chain to;
    /// absent: each host's system bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_ca: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_keeps_the_dcs_working() {
        assert_eq!(DcsState::of(0, 0), DcsState::None);
        assert_eq!(DcsState::of(1, 1), DcsState::Healthy);
        assert_eq!(DcsState::of(1, 0), DcsState::Unavailable);
        assert_eq!(DcsState::of(3, 3), DcsState::Healthy);
        assert_eq!(DcsState::of(3, 2), DcsState::Degraded);
        assert_eq!(DcsState::of(3, 1), DcsState::Unavailable);
        assert_eq!(DcsState::of(3, 0), DcsState::Unavailable);
        assert_eq!(DcsState::of(5, 3), DcsState::Degraded);
        assert_eq!(DcsState::of(4, 2), DcsState::Unavailable, "two of four is no majority");
    }
}
