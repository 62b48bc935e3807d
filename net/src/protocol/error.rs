//! Error codes carried on the wire, and the decoder's own errors.

/// A result code, as carried in responses. The numbers are Apache Kafka's, so
/// that operators and tools recognise them; Borges uses only this subset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    #[default]
    None = 0,
    UnknownServerError = -1,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    NotEnoughReplicas = 19,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidTimestamp = 32,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidConfig = 40,
    InvalidRequest = 42,
    PolicyViolation = 44,
    KafkaStorageError = 56,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    InvalidRecord = 87,
    ThrottlingQuotaExceeded = 89,
    UnknownTopicId = 100,
    NotController = 41,
    FencedLeaderEpoch = 74,
    StaleBrokerEpoch = 77,
    PreferredLeaderNotAvailable = 80,
    EligibleLeadersNotAvailable = 83,
    ElectionNotNeeded = 84,
    InvalidUpdateVersion = 95,
    DuplicateBrokerRegistration = 101,
    BrokerIdNotRegistered = 102,
    IneligibleReplica = 107,
    NewLeaderElected = 106,
    ReplicaNotAvailable = 9,
    NotEnoughReplicasAfterAppend = 20,
    UnknownLeaderEpoch = 75,
    OffsetNotAvailable = 78,
}

impl ErrorCode {
    /// Every code, in numeric order of their Kafka numbers (`UnknownServerError` first).
    pub const ALL: [ErrorCode; 55] = [
        ErrorCode::UnknownServerError,
        ErrorCode::None,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::InvalidFetchSize,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::MessageTooLarge,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::InvalidTopicException,
        ErrorCode::RecordListTooLarge,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::IllegalGeneration,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::InvalidTimestamp,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidRequest,
        ErrorCode::PolicyViolation,
        ErrorCode::KafkaStorageError,
        ErrorCode::NonEmptyGroup,
        ErrorCode::GroupIdNotFound,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::InvalidRecord,
        ErrorCode::ThrottlingQuotaExceeded,
        ErrorCode::UnknownTopicId,
        ErrorCode::NotController,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::StaleBrokerEpoch,
        ErrorCode::PreferredLeaderNotAvailable,
        ErrorCode::EligibleLeadersNotAvailable,
        ErrorCode::ElectionNotNeeded,
        ErrorCode::InvalidUpdateVersion,
        ErrorCode::DuplicateBrokerRegistration,
        ErrorCode::BrokerIdNotRegistered,
        ErrorCode::IneligibleReplica,
        ErrorCode::NewLeaderElected,
        ErrorCode::ReplicaNotAvailable,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::OffsetNotAvailable,
    ];

    /// The code for a number read off the wire. A number this build does not
    /// know (a newer broker's) becomes `UnknownServerError`, as Kafka clients
    /// treat it, rather than failing the whole response.
    pub fn from_i16(v: i16) -> ErrorCode {
        match v {
            0 => ErrorCode::None,
            1 => ErrorCode::OffsetOutOfRange,
            2 => ErrorCode::CorruptMessage,
            3 => ErrorCode::UnknownTopicOrPartition,
            4 => ErrorCode::InvalidFetchSize,
            5 => ErrorCode::LeaderNotAvailable,
            6 => ErrorCode::NotLeaderOrFollower,
            7 => ErrorCode::RequestTimedOut,
            10 => ErrorCode::MessageTooLarge,
            17 => ErrorCode::InvalidTopicException,
            18 => ErrorCode::RecordListTooLarge,
            19 => ErrorCode::NotEnoughReplicas,
            21 => ErrorCode::InvalidRequiredAcks,
            32 => ErrorCode::InvalidTimestamp,
            35 => ErrorCode::UnsupportedVersion,
            36 => ErrorCode::TopicAlreadyExists,
            37 => ErrorCode::InvalidPartitions,
            38 => ErrorCode::InvalidReplicationFactor,
            40 => ErrorCode::InvalidConfig,
            42 => ErrorCode::InvalidRequest,
            44 => ErrorCode::PolicyViolation,
            56 => ErrorCode::KafkaStorageError,
            87 => ErrorCode::InvalidRecord,
            89 => ErrorCode::ThrottlingQuotaExceeded,
            100 => ErrorCode::UnknownTopicId,
            41 => ErrorCode::NotController,
            74 => ErrorCode::FencedLeaderEpoch,
            77 => ErrorCode::StaleBrokerEpoch,
            80 => ErrorCode::PreferredLeaderNotAvailable,
            83 => ErrorCode::EligibleLeadersNotAvailable,
            84 => ErrorCode::ElectionNotNeeded,
            95 => ErrorCode::InvalidUpdateVersion,
            101 => ErrorCode::DuplicateBrokerRegistration,
            102 => ErrorCode::BrokerIdNotRegistered,
            107 => ErrorCode::IneligibleReplica,
            106 => ErrorCode::NewLeaderElected,
            9 => ErrorCode::ReplicaNotAvailable,
            20 => ErrorCode::NotEnoughReplicasAfterAppend,
            75 => ErrorCode::UnknownLeaderEpoch,
            78 => ErrorCode::OffsetNotAvailable,
            12 => ErrorCode::OffsetMetadataTooLarge,
            14 => ErrorCode::CoordinatorLoadInProgress,
            15 => ErrorCode::CoordinatorNotAvailable,
            16 => ErrorCode::NotCoordinator,
            22 => ErrorCode::IllegalGeneration,
            23 => ErrorCode::InconsistentGroupProtocol,
            24 => ErrorCode::InvalidGroupId,
            25 => ErrorCode::UnknownMemberId,
            26 => ErrorCode::InvalidSessionTimeout,
            27 => ErrorCode::RebalanceInProgress,
            68 => ErrorCode::NonEmptyGroup,
            69 => ErrorCode::GroupIdNotFound,
            81 => ErrorCode::GroupMaxSizeReached,
            82 => ErrorCode::FencedInstanceId,
            _ => ErrorCode::UnknownServerError,
        }
    }

    /// The number written on the wire.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// Whether the same request may succeed if retried, typically after the
    /// client refreshes its metadata. `UnknownTopicOrPartition` counts, as in
    /// Kafka: a topic just created may not have reached every broker yet.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::LeaderNotAvailable
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::OffsetNotAvailable
                | ErrorCode::ReplicaNotAvailable
                | ErrorCode::KafkaStorageError
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::ThrottlingQuotaExceeded
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::NotController
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::PreferredLeaderNotAvailable
                | ErrorCode::EligibleLeadersNotAvailable
        )
    }

    /// A one-line explanation, for logs and client error messages.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::None => "no error",
            ErrorCode::UnknownServerError => "the server hit an unexpected error",
            ErrorCode::OffsetOutOfRange => "the requested offset is outside the range kept by the log",
            ErrorCode::CorruptMessage => "a record batch failed its CRC or is malformed",
            ErrorCode::UnknownTopicOrPartition => "this server does not host this topic or partition",
            ErrorCode::InvalidFetchSize => "the requested fetch size is invalid",
            ErrorCode::LeaderNotAvailable => "the partition has no leader right now (election in progress)",
            ErrorCode::NotLeaderOrFollower => "this server is not the leader or a follower of the partition",
            ErrorCode::RequestTimedOut => "the request timed out",
            ErrorCode::MessageTooLarge => "a record batch is larger than the server accepts",
            ErrorCode::InvalidTopicException => "the topic name is invalid",
            ErrorCode::RecordListTooLarge => {
                "the records of a produce request are larger than the server accepts"
            }
            ErrorCode::NotEnoughReplicas => "too few in-sync replicas to accept the write",
            ErrorCode::InvalidRequiredAcks => "acks must be -1, 0 or 1",
            ErrorCode::InvalidTimestamp => "a record timestamp is out of the accepted range",
            ErrorCode::UnsupportedVersion => "the server does not support this api version",
            ErrorCode::TopicAlreadyExists => "a topic with this name already exists",
            ErrorCode::InvalidPartitions => "the partition count is invalid",
            ErrorCode::InvalidReplicationFactor => "the replication factor is invalid",
            ErrorCode::InvalidConfig => "a configuration key or value is invalid",
            ErrorCode::InvalidRequest => "the request is malformed or names an unknown api",
            ErrorCode::PolicyViolation => "the request violates a server policy",
            ErrorCode::KafkaStorageError => "the server hit a disk error on this partition",
            ErrorCode::InvalidRecord => "a record failed validation",
            ErrorCode::ThrottlingQuotaExceeded => "a quota was exceeded; retry later",
            ErrorCode::UnknownTopicId => "no topic has this id",
            ErrorCode::FencedInstanceId => "another member with this group instance id has replaced this one",
            ErrorCode::GroupMaxSizeReached => "the group has reached its maximum size",
            ErrorCode::GroupIdNotFound => "no group has this id",
            ErrorCode::NonEmptyGroup => "the group still has members",
            ErrorCode::RebalanceInProgress => "the group is rebalancing; rejoin",
            ErrorCode::InvalidSessionTimeout => "the session timeout is outside the allowed range",
            ErrorCode::UnknownMemberId => "the group does not know this member id",
            ErrorCode::InvalidGroupId => "the group id is invalid",
            ErrorCode::InconsistentGroupProtocol => "the member's protocols do not match the group's",
            ErrorCode::IllegalGeneration => "the group generation in the request is not the current one",
            ErrorCode::NotCoordinator => "this server is not the coordinator of the group",
            ErrorCode::CoordinatorNotAvailable => "the group coordinator is not available",
            ErrorCode::CoordinatorLoadInProgress => "the group coordinator is still loading its state; retry",
            ErrorCode::OffsetMetadataTooLarge => "the offset commit's metadata string is too long",
            ErrorCode::NotController => "this broker is not the active controller",
            ErrorCode::FencedLeaderEpoch => "the leader epoch in the request is older than the broker's",
            ErrorCode::StaleBrokerEpoch => "the broker epoch in the request is not the broker's current one",
            ErrorCode::PreferredLeaderNotAvailable => "the preferred leader is not in the ISR or not alive",
            ErrorCode::EligibleLeadersNotAvailable => "no replica of the partition is eligible to lead",
            ErrorCode::ElectionNotNeeded => "the partition is already led by its preferred replica",
            ErrorCode::InvalidUpdateVersion => "the partition epoch in the request is not the current one",
            ErrorCode::DuplicateBrokerRegistration => "another live broker is registered with this node id",
            ErrorCode::BrokerIdNotRegistered => "no broker with this node id is registered",
            ErrorCode::IneligibleReplica => "a proposed in-sync replica is fenced or shutting down",
            ErrorCode::NewLeaderElected => "a new leader was elected while the request was in flight",
            ErrorCode::ReplicaNotAvailable => "the sender is not a replica of the partition",
            ErrorCode::NotEnoughReplicasAfterAppend => {
                "the records were appended but too few in-sync replicas remained to acknowledge them"
            }
            ErrorCode::UnknownLeaderEpoch => "the leader epoch in the request is newer than the broker's",
            ErrorCode::OffsetNotAvailable => {
                "the new leader's high watermark has not yet reached its epoch's start"
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({}): {}", self, self.code(), self.description())
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The input ends before a field does, or a declared length or count
    /// needs more bytes than remain.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    /// A varint runs past 5 bytes, carries bits beyond 32, or is not in its
    /// shortest form.
    #[error("varint too long or not minimal")]
    VarintOverlong,
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string is longer than `Limits::max_string_bytes`.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// An array holds more elements than `Limits::max_array_len`.
    #[error("{what} has {count} elements, at most {max} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// An enum-like field (acks, a boolean) holds a value outside its range.
    #[error("invalid {what}: {value}")]
    InvalidValue { what: &'static str, value: i64 },
    /// Bytes remain after the body was fully decoded.
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
    /// The request header names an api this build does not know.
    #[error("unknown api key {0}")]
    UnknownApiKey(u16),
    /// The api is known but not at this version.
    #[error("api key {api_key} does not support version {version}")]
    UnsupportedVersion { api_key: u16, version: u16 },
    /// A frame's length prefix exceeds `Limits::max_frame_bytes`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// A frame's length prefix is zero: no frame carries an empty payload.
    #[error("empty frame")]
    EmptyFrame,
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RequestError {
    /// The header itself is unreadable: nothing can be answered; the broker
    /// closes the connection.
    #[error("unreadable request header: {0}")]
    Header(DecodeError),
    /// The header was read: answer `correlation_id` with a request-level error
    /// `code` (`encode_error_response`) and keep serving the connection.
    #[error("request {correlation_id} (api key {api_key}) rejected with {code:?}: {error}")]
    Request {
        correlation_id: u32,
        api_key: u16,
        code: ErrorCode,
        error: DecodeError,
    },
}

impl RequestError {
    /// The correlation id to answer, or `None` when the connection must be closed.
    pub fn correlation_id(&self) -> Option<u32> {
        match self {
            RequestError::Header(_) => None,
            RequestError::Request { correlation_id, .. } => Some(*correlation_id),
        }
    }

    /// The underlying decode error.
    pub fn decode_error(&self) -> &DecodeError {
        match self {
            RequestError::Header(e) | RequestError::Request { error: e, .. } => e,
        }
    }
}
