//! Api keys, their versions, and the decoder's limits.

/// Default cap on a frame's payload: 100 MiB.
pub const MAX_FRAME_BYTES_DEFAULT: usize = 100 << 20;
/// Default cap on any string: Kafka's `int16` string limit.
pub const MAX_STRING_BYTES_DEFAULT: usize = 32767;
/// Default cap on the element count of any array.
pub const MAX_ARRAY_LEN_DEFAULT: usize = 100_000;

/// Bounds the decoder enforces on untrusted input, so that a corrupt or
/// hostile peer cannot make it wait for, or allocate, more than these allow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame payload (the bytes after the 4-byte length prefix).
    pub max_frame_bytes: usize,
    /// Longest string, in bytes.
    pub max_string_bytes: usize,
    /// Most elements in any one array.
    pub max_array_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
            max_string_bytes: MAX_STRING_BYTES_DEFAULT,
            max_array_len: MAX_ARRAY_LEN_DEFAULT,
        }
    }
}

/// Which api a request calls. The numbers are Borges's own (they are not
/// Kafka's api keys: the message layouts differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    ApiVersions = 0,
    Metadata = 1,
    CreateTopics = 2,
    DeleteTopics = 3,
    Produce = 4,
    Fetch = 5,
    ListOffsets = 6,
    DescribeConfigs = 7,
    AlterConfigs = 8,
    FindCoordinator = 9,
    JoinGroup = 10,
    SyncGroup = 11,
    Heartbeat = 12,
    LeaveGroup = 13,
    OffsetCommit = 14,
    OffsetFetch = 15,
    ListGroups = 16,
    DescribeGroups = 17,
    DeleteGroups = 18,
    DescribeCluster = 19,
    ElectLeaders = 20,
    /// Controller listener only.
    RaftMessages = 21,
    /// Controller listener only.
    BrokerRegistration = 22,
    /// Controller listener only.
    BrokerHeartbeat = 23,
    /// Between brokers only.
    MetadataFetch = 24,
    /// Between brokers only: a follower's fetch from its leader.
    ReplicaFetch = 25,
    /// Between brokers only: the end offset of a leader epoch.
    OffsetForLeaderEpoch = 26,
    /// Between brokers only: a leader's ISR change, to the controller.
    AlterPartition = 27,
}

impl ApiKey {
    /// Every api, in key order.
    pub const ALL: [ApiKey; 28] = [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::DescribeConfigs,
        ApiKey::AlterConfigs,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
        ApiKey::DescribeCluster,
        ApiKey::ElectLeaders,
        ApiKey::RaftMessages,
        ApiKey::BrokerRegistration,
        ApiKey::BrokerHeartbeat,
        ApiKey::MetadataFetch,
        ApiKey::ReplicaFetch,
        ApiKey::OffsetForLeaderEpoch,
        ApiKey::AlterPartition,
    ];

    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.get(usize::from(v)).copied()
    }

    /// The number written on the wire.
    pub fn key(self) -> u16 {
        self as u16
    }

    /// The oldest version this build decodes.
    pub fn min_version(self) -> u16 {
        0
    }

    /// The newest version this build decodes (0 for every api so far).
    pub fn max_version(self) -> u16 {
        0
    }

    /// Whether brokers speak this api only to each other, on the
    /// controller listener (a client listener refuses it).
    pub fn is_controller_only(self) -> bool {
        matches!(
            self,
            ApiKey::RaftMessages
                | ApiKey::BrokerRegistration
                | ApiKey::BrokerHeartbeat
                | ApiKey::MetadataFetch
                | ApiKey::ReplicaFetch
                | ApiKey::OffsetForLeaderEpoch
                | ApiKey::AlterPartition
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ApiKey::ApiVersions => "ApiVersions",
            ApiKey::Metadata => "Metadata",
            ApiKey::CreateTopics => "CreateTopics",
            ApiKey::DeleteTopics => "DeleteTopics",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::DescribeConfigs => "DescribeConfigs",
            ApiKey::AlterConfigs => "AlterConfigs",
            ApiKey::FindCoordinator => "FindCoordinator",
            ApiKey::JoinGroup => "JoinGroup",
            ApiKey::SyncGroup => "SyncGroup",
            ApiKey::Heartbeat => "Heartbeat",
            ApiKey::LeaveGroup => "LeaveGroup",
            ApiKey::OffsetCommit => "OffsetCommit",
            ApiKey::OffsetFetch => "OffsetFetch",
            ApiKey::ListGroups => "ListGroups",
            ApiKey::DescribeGroups => "DescribeGroups",
            ApiKey::DeleteGroups => "DeleteGroups",
            ApiKey::DescribeCluster => "DescribeCluster",
            ApiKey::ElectLeaders => "ElectLeaders",
            ApiKey::RaftMessages => "RaftMessages",
            ApiKey::BrokerRegistration => "BrokerRegistration",
            ApiKey::BrokerHeartbeat => "BrokerHeartbeat",
            ApiKey::MetadataFetch => "MetadataFetch",
            ApiKey::ReplicaFetch => "ReplicaFetch",
            ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
            ApiKey::AlterPartition => "AlterPartition",
        }
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_positions() {
        for (i, k) in ApiKey::ALL.iter().enumerate() {
            assert_eq!(k.key() as usize, i);
            assert_eq!(ApiKey::from_u16(k.key()), Some(*k));
        }
        assert_eq!(ApiKey::from_u16(ApiKey::ALL.len() as u16), None);
        assert_eq!(ApiKey::from_u16(u16::MAX), None);
    }
}
