//! Topic metadata changes as pure functions: the rules (names, partition
//! counts, replication, settings) and the transitions (create, delete,
//! alter) over [`Topics`] values.
//!
//! Nothing here does I/O: no files, no executor, no other shard. Shard 0
//! (`shard/admin.rs`) calls these with the topics it holds, gets the
//! response and the next value, persists that value, and hands it to every
//! shard. Keeping the rules apart from the I/O lets each be tested as a
//! plain function, and makes one rule easy to check: a refused change
//! leaves the topics exactly as they were.

use borges_net::protocol::{
    AlterConfigsRequest, AlterConfigsResponse, AlterConfigsTopic, CreatableTopic, CreateTopicResult,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, ErrorCode,
    Response, TopicResult,
};
use borges_net::types::TopicId;

use crate::topics::{validate_config, TopicMeta, Topics, MAX_PARTITIONS, TOPIC_CONFIG_KEYS};

/// Why a topic change was refused. Each maps to the code the client gets
/// ([`Refusal::code`]); the message is what it reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a name a partition directory can have.
    #[error("{0}")]
    InvalidName(String),
    #[error("names starting with __ are reserved")]
    ReservedName,
    #[error("topic {0} already exists")]
    AlreadyExists(String),
    #[error("at most {MAX_PARTITIONS} partitions")]
    TooManyPartitions(u32),
    #[error("replication factor {0} is above the most replicas a partition may have")]
    ReplicationFactor(u16),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("no topic {0}")]
    UnknownTopic(String),
    #[error("{0} is an internal topic")]
    InternalTopic(String),
}

impl Refusal {
    /// The error code the client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::InvalidName(_) | Refusal::ReservedName => ErrorCode::InvalidTopicException,
            Refusal::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            Refusal::TooManyPartitions(_) => ErrorCode::InvalidPartitions,
            Refusal::ReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            Refusal::InvalidConfig(_) => ErrorCode::InvalidConfig,
            Refusal::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            Refusal::InternalTopic(_) => ErrorCode::PolicyViolation,
        }
    }
}

/// What the broker's configuration adds to the rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Partitions of a topic created without a count (0).
    pub default_partitions: u32,
}

/// A request's answer, and the topics after it: `None` when nothing
/// changed (a refusal, or a request that only validates).
#[derive(Debug)]
pub struct Outcome<R> {
    pub response: R,
    pub next: Option<Topics>,
}

/// Names a client may give a topic: a valid partition directory name that
/// does not start with `__` (kept for internal topics).
pub fn validate_name(name: &str) -> Result<(), Refusal> {
    borges_storage::validate_topic_name(name).map_err(|e| Refusal::InvalidName(e.to_string()))?;
    if name.starts_with("__") {
        return Err(Refusal::ReservedName);
    }
    Ok(())
}

/// Checks that `t` may be created in `topics`; its partition count if so.
pub fn validate_new_topic(topics: &Topics, t: &CreatableTopic, rules: &Rules) -> Result<u32, Refusal> {
    validate_name(&t.name)?;
    if topics.topics.contains_key(&t.name) {
        return Err(Refusal::AlreadyExists(t.name.clone()));
    }
    let partitions = if t.partitions == 0 {
        rules.default_partitions
    } else {
        t.partitions
    };
    if partitions > MAX_PARTITIONS {
        return Err(Refusal::TooManyPartitions(partitions));
    }
    // 0 is the cluster's default; whether enough brokers live to place
    // the replicas is the controller's decision.
    if t.replication_factor as usize > borges_meta::record::MAX_REPLICAS {
        return Err(Refusal::ReplicationFactor(t.replication_factor));
    }
    if let Some(msg) = t.configs.iter().find_map(|(k, v)| validate_config(k, v).err()) {
        return Err(Refusal::InvalidConfig(msg));
    }
    Ok(partitions)
}

/// The id the next topic gets (ids start at 1 and are never reused).
fn next_topic_id(topics: &Topics) -> u64 {
    topics.next_id.max(1)
}

/// Adds a topic, with the next id, to `topics`.
fn insert_topic(topics: &mut Topics, name: &str, partitions: u32, configs: &[(String, String)]) -> TopicId {
    let id = next_topic_id(topics);
    topics.next_id = id + 1;
    topics.topics.insert(
        name.to_string(),
        TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            configs: configs.iter().cloned().collect(),
        },
    );
    TopicId(id)
}

/// Creates `t` in `topics` if the rules allow it; `topics` is unchanged otherwise.
pub fn create_topic(topics: &mut Topics, t: &CreatableTopic, rules: &Rules) -> Result<TopicId, Refusal> {
    let partitions = validate_new_topic(topics, t, rules)?;
    Ok(insert_topic(topics, &t.name, partitions, &t.configs))
}

/// Deletes topic `name`; internal topics cannot be deleted.
pub fn delete_topic(topics: &mut Topics, name: &str) -> Result<(), Refusal> {
    if !topics.topics.contains_key(name) {
        return Err(Refusal::UnknownTopic(name.to_string()));
    }
    if name.starts_with("__") {
        return Err(Refusal::InternalTopic(name.to_string()));
    }
    topics.topics.remove(name);
    Ok(())
}

/// Checks setting changes: a value must be valid for its key, and a key
/// returned to its default must be one Borges knows.
pub fn validate_config_changes(configs: &[(String, Option<String>)]) -> Result<(), Refusal> {
    let bad = configs.iter().find_map(|(k, v)| match v {
        Some(v) => validate_config(k, v).err(),
        None if TOPIC_CONFIG_KEYS.contains(&k.as_str()) => None,
        None => Some(format!("unknown topic setting {k:?}")),
    });
    match bad {
        Some(msg) => Err(Refusal::InvalidConfig(msg)),
        None => Ok(()),
    }
}

/// Changes the settings of one topic (a `None` value returns the key to
/// the broker's default); with `apply` false, only checks them.
pub fn alter_topic(topics: &mut Topics, t: &AlterConfigsTopic, apply: bool) -> Result<(), Refusal> {
    let meta = topics
        .topics
        .get_mut(&t.name)
        .ok_or_else(|| Refusal::UnknownTopic(t.name.clone()))?;
    validate_config_changes(&t.configs)?;
    if apply {
        for (k, v) in &t.configs {
            match v {
                Some(v) => meta.configs.insert(k.clone(), v.clone()),
                None => meta.configs.remove(k),
            };
        }
    }
    Ok(())
}

/// The settings of `__consumer_offsets`.
pub fn offsets_topic_configs() -> Vec<(String, String)> {
    [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "16777216"),
        ("compression.type", "producer"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// Adds `__consumer_offsets` if it is missing; true if it was added.
pub fn ensure_offsets_topic(topics: &mut Topics, partitions: u32) -> bool {
    let name = crate::group::OFFSETS_TOPIC;
    if topics.topics.contains_key(name) {
        return false;
    }
    insert_topic(topics, name, partitions, &offsets_topic_configs());
    true
}

fn topic_result(name: String, result: Result<(), Refusal>) -> TopicResult {
    match result {
        Ok(()) => TopicResult {
            name,
            error: ErrorCode::None,
            message: None,
        },
        Err(e) => TopicResult {
            name,
            error: e.code(),
            message: Some(e.to_string()),
        },
    }
}

/// CreateTopics: each topic is created (or refused) in order, so a name
/// given twice is created once.
pub fn create_topics(
    topics: &Topics,
    r: &CreateTopicsRequest,
    rules: &Rules,
) -> Outcome<CreateTopicsResponse> {
    let mut next = topics.clone();
    let mut changed = false;
    let results = r
        .topics
        .iter()
        .map(|t| {
            let created = if r.validate_only {
                // Reports the id the topic would get.
                validate_new_topic(&next, t, rules).map(|_| TopicId(next_topic_id(&next)))
            } else {
                create_topic(&mut next, t, rules)
            };
            match created {
                Ok(id) => {
                    changed |= !r.validate_only;
                    CreateTopicResult {
                        name: t.name.clone(),
                        id,
                        error: ErrorCode::None,
                        message: None,
                    }
                }
                Err(e) => CreateTopicResult {
                    name: t.name.clone(),
                    id: TopicId(0),
                    error: e.code(),
                    message: Some(e.to_string()),
                },
            }
        })
        .collect();
    Outcome {
        response: CreateTopicsResponse { topics: results },
        next: changed.then_some(next),
    }
}

/// DeleteTopics.
pub fn delete_topics(topics: &Topics, r: &DeleteTopicsRequest) -> Outcome<DeleteTopicsResponse> {
    let mut next = topics.clone();
    let mut changed = false;
    let results = r
        .names
        .iter()
        .map(|name| {
            let deleted = delete_topic(&mut next, name);
            changed |= deleted.is_ok();
            topic_result(name.clone(), deleted)
        })
        .collect();
    Outcome {
        response: DeleteTopicsResponse { topics: results },
        next: changed.then_some(next),
    }
}

/// AlterConfigs: each topic's changes are applied whole or refused whole.
pub fn alter_configs(topics: &Topics, r: &AlterConfigsRequest) -> Outcome<AlterConfigsResponse> {
    let mut next = topics.clone();
    let mut changed = false;
    let results = r
        .topics
        .iter()
        .map(|t| {
            let altered = alter_topic(&mut next, t, !r.validate_only);
            changed |= altered.is_ok() && !r.validate_only;
            topic_result(t.name.clone(), altered)
        })
        .collect();
    Outcome {
        response: AlterConfigsResponse { topics: results },
        next: changed.then_some(next),
    }
}

/// Marks the results of a change that could not be persisted failed: the
/// topics created, deleted or changed; what the rules refused keeps its
/// own error.
pub fn not_persisted(resp: Response, code: ErrorCode, message: &str) -> Response {
    let fail = |error: &mut ErrorCode, msg: &mut Option<String>| {
        *error = code;
        *msg = Some(message.to_string());
    };
    match resp {
        Response::CreateTopics(mut r) => {
            for t in r.topics.iter_mut().filter(|t| t.error == ErrorCode::None) {
                fail(&mut t.error, &mut t.message);
            }
            Response::CreateTopics(r)
        }
        Response::DeleteTopics(mut r) => {
            for t in r.topics.iter_mut().filter(|t| t.error == ErrorCode::None) {
                fail(&mut t.error, &mut t.message);
            }
            Response::DeleteTopics(r)
        }
        Response::AlterConfigs(mut r) => {
            for t in r.topics.iter_mut().filter(|t| t.error == ErrorCode::None) {
                fail(&mut t.error, &mut t.message);
            }
            Response::AlterConfigs(r)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        default_partitions: 3,
    };

    fn topic(name: &str, partitions: u32) -> CreatableTopic {
        CreatableTopic {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            configs: Vec::new(),
        }
    }

    fn with(names: &[&str]) -> Topics {
        let mut topics = Topics {
            next_id: 1,
            ..Topics::default()
        };
        for n in names {
            create_topic(&mut topics, &topic(n, 1), &RULES).unwrap();
        }
        topics
    }

    /// Creating `t` in `topics` is refused with `code`, and changes nothing.
    fn refused(topics: &Topics, t: CreatableTopic, code: ErrorCode) {
        let mut after = topics.clone();
        let e = create_topic(&mut after, &t, &RULES).unwrap_err();
        assert_eq!(e.code(), code, "{}: {e}", t.name);
        assert_eq!(&after, topics, "a refused create changed the topics");
        let r = CreateTopicsRequest {
            topics: vec![t],
            timeout_ms: 0,
            validate_only: false,
        };
        let out = create_topics(topics, &r, &RULES);
        assert!(out.next.is_none());
        assert_eq!(out.response.topics[0].error, code);
        assert_eq!(out.response.topics[0].id, TopicId(0));
    }

    #[test]
    fn bad_names_are_refused() {
        let topics = with(&[]);
        for name in ["", ".", "..", "a/b", "spa ce", "é", &"x".repeat(250)] {
            refused(&topics, topic(name, 1), ErrorCode::InvalidTopicException);
        }
        refused(&topics, topic("__mine", 1), ErrorCode::InvalidTopicException);
        validate_name("orders.v2_eu-1").unwrap();
    }

    #[test]
    fn a_topic_exists_once() {
        let topics = with(&["orders"]);
        refused(&topics, topic("orders", 1), ErrorCode::TopicAlreadyExists);
        // Named twice in one request: created once.
        let r = CreateTopicsRequest {
            topics: vec![topic("a", 1), topic("a", 1)],
            timeout_ms: 0,
            validate_only: false,
        };
        let out = create_topics(&topics, &r, &RULES);
        let errors: Vec<ErrorCode> = out.response.topics.iter().map(|t| t.error).collect();
        assert_eq!(errors, [ErrorCode::None, ErrorCode::TopicAlreadyExists]);
        assert_eq!(out.next.unwrap().topics.len(), 2);
    }

    #[test]
    fn partition_counts_and_replication() {
        let topics = with(&[]);
        refused(
            &topics,
            topic("t", MAX_PARTITIONS + 1),
            ErrorCode::InvalidPartitions,
        );
        for bad in [(borges_meta::record::MAX_REPLICAS + 1) as u16, u16::MAX] {
            let mut rf = topic("t", 1);
            rf.replication_factor = bad;
            refused(&topics, rf, ErrorCode::InvalidReplicationFactor);
        }
        // 0 partitions: the broker's default.
        let mut next = topics.clone();
        create_topic(&mut next, &topic("t", 0), &RULES).unwrap();
        assert_eq!(next.topics["t"].partitions, 3);
        create_topic(&mut next, &topic("max", MAX_PARTITIONS), &RULES).unwrap();
    }

    #[test]
    fn bad_settings_are_refused() {
        let topics = with(&[]);
        for (k, v) in [
            ("retention.ms", "soon"),
            ("segment.bytes", "10"),
            ("no.such", "1"),
        ] {
            let mut t = topic("t", 1);
            t.configs = vec![("retention.ms".into(), "1000".into()), (k.into(), v.into())];
            refused(&topics, t, ErrorCode::InvalidConfig);
        }
    }

    #[test]
    fn ids_are_never_reused() {
        let mut topics = with(&["a", "b"]);
        assert_eq!(topics.topics["b"].id, 2);
        delete_topic(&mut topics, "b").unwrap();
        let id = create_topic(&mut topics, &topic("b", 1), &RULES).unwrap();
        assert_eq!(id, TopicId(3));
        // Validating reports the id a topic would get, and takes nothing.
        let r = CreateTopicsRequest {
            topics: vec![topic("c", 1)],
            timeout_ms: 0,
            validate_only: true,
        };
        let out = create_topics(&topics, &r, &RULES);
        assert!(out.next.is_none());
        assert_eq!(out.response.topics[0].id, TopicId(4));
        assert_eq!(out.response.topics[0].error, ErrorCode::None);
    }

    #[test]
    fn deletes() {
        let mut topics = with(&["orders"]);
        assert!(ensure_offsets_topic(&mut topics, 2));
        assert!(!ensure_offsets_topic(&mut topics, 2));
        let r = DeleteTopicsRequest {
            names: vec!["nope".into(), crate::group::OFFSETS_TOPIC.into(), "orders".into()],
            timeout_ms: 0,
        };
        let out = delete_topics(&topics, &r);
        let errors: Vec<ErrorCode> = out.response.topics.iter().map(|t| t.error).collect();
        assert_eq!(
            errors,
            [
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::PolicyViolation,
                ErrorCode::None
            ]
        );
        let next = out.next.unwrap();
        assert!(!next.topics.contains_key("orders"));
        assert!(next.topics.contains_key(crate::group::OFFSETS_TOPIC));
        // Nothing to delete: nothing changes.
        let r = DeleteTopicsRequest {
            names: vec!["nope".into()],
            timeout_ms: 0,
        };
        assert!(delete_topics(&topics, &r).next.is_none());
    }

    #[test]
    fn settings_change_whole_or_not_at_all() {
        let topics = with(&["t"]);
        let alter = |configs: Vec<(&str, Option<&str>)>, validate_only| AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: "t".into(),
                configs: configs
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect(),
            }],
            validate_only,
        };
        // One bad value refuses the topic's good ones too.
        let r = alter(
            vec![("retention.ms", Some("5")), ("cleanup.policy", Some("burn"))],
            false,
        );
        let out = alter_configs(&topics, &r);
        assert_eq!(out.response.topics[0].error, ErrorCode::InvalidConfig);
        assert!(out.next.is_none());
        // An unknown key cannot be reset either.
        let out = alter_configs(&topics, &alter(vec![("no.such", None)], false));
        assert_eq!(out.response.topics[0].error, ErrorCode::InvalidConfig);
        // Validation only: accepted, nothing changes.
        let out = alter_configs(&topics, &alter(vec![("retention.ms", Some("5"))], true));
        assert_eq!(out.response.topics[0].error, ErrorCode::None);
        assert!(out.next.is_none());
        let next = alter_configs(&topics, &alter(vec![("retention.ms", Some("5"))], false))
            .next
            .unwrap();
        assert_eq!(next.topics["t"].configs["retention.ms"], "5");
        let reset = alter_configs(&next, &alter(vec![("retention.ms", None)], false))
            .next
            .unwrap();
        assert!(reset.topics["t"].configs.is_empty());
        let r = AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: "nope".into(),
                configs: Vec::new(),
            }],
            validate_only: false,
        };
        let out = alter_configs(&topics, &r);
        assert_eq!(out.response.topics[0].error, ErrorCode::UnknownTopicOrPartition);
        assert!(out.next.is_none());
    }

    #[test]
    fn an_unpersisted_change_fails_what_it_changed() {
        let topics = with(&["orders"]);
        let r = CreateTopicsRequest {
            topics: vec![topic("orders", 1), topic("new", 1)],
            timeout_ms: 0,
            validate_only: false,
        };
        let out = create_topics(&topics, &r, &RULES);
        let resp = not_persisted(
            Response::CreateTopics(out.response),
            ErrorCode::KafkaStorageError,
            "disk",
        );
        let Response::CreateTopics(c) = resp else {
            panic!("not a CreateTopics response")
        };
        assert_eq!(c.topics[0].error, ErrorCode::TopicAlreadyExists);
        assert_eq!(c.topics[1].error, ErrorCode::KafkaStorageError);
        assert_eq!(c.topics[1].message.as_deref(), Some("disk"));
    }

    #[test]
    fn an_unpersisted_deletion_keeps_the_rules_own_refusals() {
        let topics = with(&["orders"]);
        let r = DeleteTopicsRequest {
            names: vec!["nope".into(), "orders".into()],
            timeout_ms: 0,
        };
        let out = delete_topics(&topics, &r);
        let resp = not_persisted(
            Response::DeleteTopics(out.response),
            ErrorCode::RequestTimedOut,
            "no quorum",
        );
        let Response::DeleteTopics(d) = resp else {
            panic!("not a DeleteTopics response")
        };
        assert_eq!(d.topics[0].error, ErrorCode::UnknownTopicOrPartition);
        assert_ne!(d.topics[0].message.as_deref(), Some("no quorum"));
        assert_eq!(d.topics[1].error, ErrorCode::RequestTimedOut);
    }
}
