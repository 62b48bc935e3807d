//! Admin operations: topics, their configs, and offset lookups.

use std::time::Duration;

use borges_net::protocol::{
    AlterConfigsRequest, AlterConfigsTopic, CreatableTopic, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, ErrorCode, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, Request,
    Response, TopicResult, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use borges_net::types::TopicId;

use crate::client::{topic_from_wire, unexpected};

use crate::{Client, ClientError, TopicMetadata};
/// What `Admin::describe_cluster` returns (the broker's answer as is).
pub use borges_net::protocol::{BrokerState, ClusterBroker, DescribeClusterResponse as ClusterDescription};

/// Which offset `list_offsets` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset: the first offset still kept.
    Earliest,
    /// The log end offset: the offset the next record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this time (ms).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
            OffsetSpec::Latest => LATEST_TIMESTAMP,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// The answer of `list_offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found; -1 when no record is at or after the timestamp.
    pub offset: i64,
    /// The timestamp of the record found; -1 for `Earliest` and `Latest`.
    pub timestamp: i64,
}

/// One config of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The key, e.g. `retention.ms`.
    pub key: String,
    /// The value in force; `None` for a config with no value.
    pub value: Option<String>,
    /// Whether the value is the broker default rather than a topic override.
    pub is_default: bool,
}

/// A topic's partitions and its configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Partitions, leaders, topic id.
    pub metadata: TopicMetadata,
    /// Every config, defaults included.
    pub configs: Vec<TopicConfig>,
}

impl TopicDescription {
    /// The value of config `key`, if the topic has it.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.configs
            .iter()
            .find(|c| c.key == key)
            .and_then(|c| c.value.as_deref())
    }
}

/// Admin operations on a cluster. Cheap to clone; get one with `Client::admin`.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub(crate) fn new(client: Client) -> Admin {
        Admin { client }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn timeout_ms(&self) -> u32 {
        duration_ms(self.client.config().request_timeout)
    }

    /// Creates a topic with `partitions` partitions, replicated
    /// `replication_factor` times, with config overrides `configs`; returns
    /// its id. `Broker { code: TopicAlreadyExists, .. }` if the name is taken.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(&str, &str)],
    ) -> Result<TopicId, ClientError> {
        let req = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
            timeout_ms: self.timeout_ms(),
            validate_only: false,
        });
        let resp = match self.client.send_any(&req).await? {
            Response::CreateTopics(r) => r,
            other => return Err(unexpected(&other)),
        };
        let r = resp
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| missing(name))?;
        if r.error != ErrorCode::None {
            return Err(ClientError::broker(r.error, r.message));
        }
        self.client.invalidate_topic(name);
        Ok(r.id)
    }

    /// Deletes a topic. `UnknownTopic` if there is none of that name.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
            timeout_ms: self.timeout_ms(),
        });
        let resp = match self.client.send_any(&req).await? {
            Response::DeleteTopics(r) => r,
            other => return Err(unexpected(&other)),
        };
        self.client.invalidate_topic(name);
        topic_result(name, resp.topics)
    }

    /// Every topic the cluster has, sorted by name, except the internal ones
    /// (names starting with `__`, such as `__consumer_offsets`), as Kafka's
    /// admin lists them by default.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, ClientError> {
        let resp = self.client.fetch_metadata(None).await?;
        let mut topics: Vec<TopicMetadata> = resp
            .topics
            .iter()
            .filter(|t| t.error == ErrorCode::None && !t.name.starts_with("__"))
            .map(topic_from_wire)
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// The cluster as its committed metadata describes it: the controller,
    /// its voters, every registered broker with its state, and counts of
    /// offline and under-replicated partitions.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let req = Request::DescribeCluster(borges_net::protocol::DescribeClusterRequest {});
        match self.client.send_any(&req).await? {
            Response::DescribeCluster(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Preferred-leader election for `partitions` (topic, index), or for
    /// every partition not led by its preferred replica when `None`. One
    /// result per partition: `ErrorCode::None` when the preferred replica
    /// now leads, `ElectionNotNeeded` when it already did.
    pub async fn elect_preferred_leaders(
        &self,
        partitions: Option<&[(String, u32)]>,
    ) -> Result<Vec<borges_net::protocol::ElectionResult>, ClientError> {
        use borges_net::protocol::{ElectLeadersRequest, TopicPartitions};
        let topics = partitions.map(|ps| {
            let mut by_topic: Vec<TopicPartitions> = Vec::new();
            for (topic, p) in ps {
                match by_topic.iter_mut().find(|t| &t.topic == topic) {
                    Some(t) => t.partitions.push(*p),
                    None => by_topic.push(TopicPartitions {
                        topic: topic.clone(),
                        partitions: vec![*p],
                    }),
                }
            }
            by_topic
        });
        let req = Request::ElectLeaders(ElectLeadersRequest { topics });
        match self.client.send_any(&req).await? {
            Response::ElectLeaders(r) if r.error == ErrorCode::None => Ok(r.results),
            Response::ElectLeaders(r) => Err(ClientError::broker(r.error, None)),
            other => Err(unexpected(&other)),
        }
    }

    /// A topic's partitions (fresh from the broker) and configs.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let metadata = (*self.client.refresh_topic(name).await?).clone();
        let req = Request::DescribeConfigs(DescribeConfigsRequest {
            topics: vec![name.to_string()],
        });
        let resp = match self.client.send_any(&req).await? {
            Response::DescribeConfigs(r) => r,
            other => return Err(unexpected(&other)),
        };
        let r = resp
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| missing(name))?;
        match r.error {
            ErrorCode::None => {}
            ErrorCode::UnknownTopicOrPartition => return Err(ClientError::UnknownTopic(name.to_string())),
            code => return Err(ClientError::broker(code, r.message)),
        }
        let configs = r
            .configs
            .into_iter()
            .map(|c| TopicConfig {
                key: c.key,
                value: c.value,
                is_default: c.is_default,
            })
            .collect();
        Ok(TopicDescription { metadata, configs })
    }

    /// Changes a topic's configs: `Some(value)` sets a key, `None` returns it
    /// to the broker default. Keys not named keep their values.
    pub async fn alter_configs(
        &self,
        name: &str,
        changes: &[(&str, Option<&str>)],
    ) -> Result<(), ClientError> {
        let req = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: name.to_string(),
                configs: changes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect(),
            }],
            validate_only: false,
        });
        let resp = match self.client.send_any(&req).await? {
            Response::AlterConfigs(r) => r,
            other => return Err(unexpected(&other)),
        };
        topic_result(name, resp.topics)
    }

    /// Looks up an offset of one partition on its leader.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, ClientError> {
        list_offsets(
            &self.client,
            topic,
            partition,
            spec,
            self.client.config().request_timeout,
        )
        .await
    }
}

/// `Admin::list_offsets`, shared with the consumer; retries once after a
/// metadata refresh when the broker says the metadata was stale.
pub(crate) async fn list_offsets(
    client: &Client,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
    timeout: Duration,
) -> Result<ListedOffset, ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = list_offsets_once(client, topic, partition, spec, timeout).await;
        match result {
            Err(ClientError::Broker { code, .. }) if attempt < 3 && crate::error::code_is_retriable(code) => {
                client.on_error_code(topic, code);
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            other => return other,
        }
    }
}

async fn list_offsets_once(
    client: &Client,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
    timeout: Duration,
) -> Result<ListedOffset, ClientError> {
    let meta = client.topic_metadata(topic).await?;
    let leader = meta.leader(partition)?;
    let req = Request::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            topic_id: meta.id,
            partitions: vec![ListOffsetsPartition {
                partition,
                timestamp: spec.wire(),
            }],
        }],
    });
    let resp = match client.send_to(leader, &req, timeout).await? {
        Response::ListOffsets(r) => r,
        other => return Err(unexpected(&other)),
    };
    let p = resp
        .topics
        .iter()
        .filter(|t| t.topic_id == meta.id)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition == partition)
        .ok_or_else(|| missing(topic))?;
    if p.error != ErrorCode::None {
        return Err(ClientError::broker(p.error, None));
    }
    Ok(ListedOffset {
        offset: p.offset,
        timestamp: p.timestamp,
    })
}

fn topic_result(name: &str, results: Vec<TopicResult>) -> Result<(), ClientError> {
    let r = results
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| missing(name))?;
    match r.error {
        ErrorCode::None => Ok(()),
        ErrorCode::UnknownTopicOrPartition => Err(ClientError::UnknownTopic(name.to_string())),
        code => Err(ClientError::broker(code, r.message)),
    }
}

fn missing(name: &str) -> ClientError {
    ClientError::broker(
        ErrorCode::UnknownServerError,
        Some(format!("the response has no result for {name:?}")),
    )
}

/// A duration in whole milliseconds, saturating at `u32::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
