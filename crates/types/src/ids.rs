//! One newtype per resource ID, so a `HostId` can never be passed where a `ClusterId` is
//! wanted. IDs are UUIDv7: unique without coordination and ordered by creation time, which
//! keeps ID-ordered pagination stable.

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new, never-used ID.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A project (tenant): owns clusters, repositories, alerts and operations.
    ProjectId
);
id_type!(
    /// A user of the installation.
    UserId
);
id_type!(
    /// An API token.
    TokenId
);
id_type!(
    /// A location: a region/zone of one provider.
    LocationId
);
id_type!(
    /// A host in a location.
    HostId
);
id_type!(
    /// A database cluster.
    ClusterId
);
id_type!(
    /// An audit record.
    AuditId
);
id_type!(
    /// An operation: one durable workflow run.
    OperationId
);
id_type!(
    /// An event of a cluster's or the installation's timeline.
    EventId
);
id_type!(
    /// A backup repository.
    RepoId
);
id_type!(
    /// An alert: one episode of a rule's condition on one subject (pending, firing, resolved).
    AlertId
);
id_type!(
    /// A notification channel of a project (webhook, Slack, email).
    ChannelId
);
id_type!(
    /// A silence (or maintenance window) of a project's notifications.
    SilenceId
);
id_type!(
    /// One notification of one alert transition to one channel.
    DeliveryId
);
