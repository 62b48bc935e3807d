//! `Client`: connections to the brokers and the metadata cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use borges_net::protocol::{
    ErrorCode, Limits, MetadataRequest, MetadataResponse, Request, Response, MAX_FRAME_BYTES_DEFAULT,
};
use borges_net::types::TopicId;

use crate::admin::Admin;
use crate::conn::Connection;
use crate::error::code_invalidates_metadata;
use crate::ClientError;

/// Settings shared by everything built on one `Client`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in every request header, for the broker's logs.
    pub client_id: String,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// How long to wait for any one response (admin and metadata calls; the
    /// producer and consumer have their own).
    pub request_timeout: Duration,
    /// Requests in flight at once on one connection; further requests wait.
    pub max_in_flight_per_connection: usize,
    /// Largest response frame accepted; a larger one closes the connection.
    pub max_frame_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "borges-client".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_in_flight_per_connection: 64,
            max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
        }
    }
}

/// A broker, as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub node_id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

/// One partition of a topic, as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition's index.
    pub partition: u32,
    /// `ErrorCode::None`, or why the partition is unusable now (`LeaderNotAvailable`).
    pub error: ErrorCode,
    /// Node id of the leader; -1 when there is none.
    pub leader: i32,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Node ids of every replica, leader included.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
}

/// A topic, as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic's name.
    pub name: String,
    /// The id data-path requests use; changes if the topic is re-created.
    pub id: TopicId,
    /// Every partition, indexed by partition number.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The partition count.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The leader of `partition`: `Ok(node)`, or the error to retry on.
    pub(crate) fn leader(&self, partition: u32) -> Result<i32, ClientError> {
        let Some(p) = self.partitions.get(partition as usize) else {
            return Err(ClientError::UnknownPartition {
                topic: self.name.clone(),
                partition,
            });
        };
        if p.error != ErrorCode::None {
            return Err(ClientError::broker(p.error, None));
        }
        if p.leader < 0 {
            return Err(ClientError::broker(ErrorCode::LeaderNotAvailable, None));
        }
        Ok(p.leader)
    }
}

#[derive(Default)]
struct MetadataCache {
    brokers: HashMap<i32, BrokerInfo>,
    controller_id: i32,
    topics: ahash::AHashMap<String, Arc<TopicMetadata>>,
}

struct ClientInner {
    config: ClientConfig,
    limits: Limits,
    bootstrap: Vec<String>,
    /// Connections by address. Held across a connect, which is rare, so that
    /// two tasks never open two connections to one broker.
    conns: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
    metadata: RwLock<MetadataCache>,
    /// Bumped on every change of the metadata cache, so that holders of
    /// derived copies (the producer's topic cache) know to look again.
    generation: std::sync::atomic::AtomicU64,
}

/// A handle to a Borges cluster: one pipelined connection per broker and a
/// metadata cache (topic name -> id, partition count, leaders).
///
/// Cheap to clone (an `Arc` inside); the producer, consumer and admin
/// handles built from it share its connections. Must be used inside a tokio
/// runtime: each connection runs a reader and a writer task.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the first reachable broker of `bootstrap` (a
    /// comma-separated list of `host:port`) and loads the broker list.
    pub async fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if bootstrap.is_empty() {
            return Err(ClientError::Config("no bootstrap address".into()));
        }
        if config.max_frame_bytes < 1024 {
            return Err(ClientError::Config(
                "max_frame_bytes must be at least 1024".into(),
            ));
        }
        let limits = Limits {
            max_frame_bytes: config.max_frame_bytes,
            ..Limits::default()
        };
        let client = Client {
            inner: Arc::new(ClientInner {
                config,
                limits,
                bootstrap,
                conns: tokio::sync::Mutex::new(HashMap::new()),
                metadata: RwLock::new(MetadataCache {
                    controller_id: -1,
                    ..MetadataCache::default()
                }),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        client.fetch_metadata(Some(Vec::new())).await?;
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Admin operations: topics, configs, offsets.
    pub fn admin(&self) -> Admin {
        Admin::new(self.clone())
    }

    /// The brokers the last metadata response listed.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        let mut b: Vec<BrokerInfo> = self.read_cache().brokers.values().cloned().collect();
        b.sort_by_key(|b| b.node_id);
        b
    }

    /// A topic's metadata, from the cache or, on a miss, from the broker.
    /// `UnknownTopic` if the broker does not know the name.
    pub async fn topic_metadata(&self, topic: &str) -> Result<Arc<TopicMetadata>, ClientError> {
        if let Some(t) = self.read_cache().topics.get(topic) {
            return Ok(t.clone());
        }
        self.refresh_topic(topic).await
    }

    /// A topic's cached metadata, without asking the broker.
    pub(crate) fn cached_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        self.read_cache().topics.get(topic).cloned()
    }

    /// Fetches a topic's metadata from the broker, replacing the cached copy.
    pub async fn refresh_topic(&self, topic: &str) -> Result<Arc<TopicMetadata>, ClientError> {
        let resp = self.fetch_metadata(Some(vec![topic.to_string()])).await?;
        let t = resp
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::UnknownTopic(topic.to_string()))?;
        match t.error {
            ErrorCode::None => {}
            ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownTopicId => {
                return Err(ClientError::UnknownTopic(topic.to_string()))
            }
            code => return Err(ClientError::broker(code, None)),
        }
        self.read_cache()
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic(topic.to_string()))
    }

    /// Forgets a topic's cached metadata, so that the next use fetches it.
    /// The producer and consumer call this when the broker answers
    /// `NotLeaderOrFollower`, `UnknownTopicOrPartition`, `UnknownTopicId` or
    /// `LeaderNotAvailable`.
    pub fn invalidate_topic(&self, topic: &str) {
        self.write_cache().topics.remove(topic);
    }

    /// Invalidates `topic` if `code` says the cached metadata is stale.
    pub(crate) fn on_error_code(&self, topic: &str, code: ErrorCode) {
        if code_invalidates_metadata(code) {
            self.invalidate_topic(topic);
        }
    }

    /// Sends a Metadata request (`None`: every topic) to any broker and
    /// merges the answer into the cache.
    pub(crate) async fn fetch_metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        let all = topics.is_none();
        let req = Request::Metadata(MetadataRequest { topics });
        let resp = match self.send_any(&req).await? {
            Response::Metadata(m) => m,
            other => return Err(unexpected(&other)),
        };
        let mut cache = self.write_cache();
        if !resp.brokers.is_empty() {
            cache.brokers = resp
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.node_id,
                        BrokerInfo {
                            node_id: b.node_id,
                            host: b.host.clone(),
                            port: b.port,
                        },
                    )
                })
                .collect();
        }
        cache.controller_id = resp.controller_id;
        if all {
            cache.topics.clear();
        }
        for t in &resp.topics {
            if t.error == ErrorCode::None {
                cache.topics.insert(t.name.clone(), Arc::new(topic_from_wire(t)));
            } else {
                cache.topics.remove(&t.name);
            }
        }
        Ok(resp)
    }

    /// Adds a broker the cluster told about (a group coordinator) to the cache.
    pub(crate) fn learn_broker(&self, node_id: i32, host: &str, port: u16) {
        let known = self.read_cache().brokers.contains_key(&node_id);
        if !known {
            self.write_cache().brokers.insert(
                node_id,
                BrokerInfo {
                    node_id,
                    host: host.to_string(),
                    port,
                },
            );
        }
    }

    /// Sends `request` to broker `node_id` and waits for the response, at
    /// most `timeout`. Public for tools (the load generator) that build
    /// their own requests; applications use the producer, consumer and admin.
    pub async fn send_to(
        &self,
        node_id: i32,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let result = match self.node_connection(node_id).await {
            Ok(conn) => conn.request(request, timeout).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.on_request_error(node_id, e);
        }
        result
    }

    /// After a connection error or a timeout talking to `node_id`, forgets
    /// the cached topics it leads, as Kafka requests a metadata update on a
    /// disconnect: leadership may have moved while the node was away, and
    /// the next use of those topics asks the cluster again.
    fn on_request_error(&self, node_id: i32, e: &ClientError) {
        if !matches!(e, ClientError::Io(_) | ClientError::Timeout) {
            return;
        }
        let stale: Vec<String> = self
            .read_cache()
            .topics
            .iter()
            .filter(|(_, t)| t.partitions.iter().any(|p| p.leader == node_id))
            .map(|(name, _)| name.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        tracing::debug!(node_id, error = %e, topics = stale.len(), "request failed; metadata marked stale");
        let mut cache = self.write_cache();
        for name in stale {
            cache.topics.remove(&name);
        }
    }

    /// Sends a request that gets no response (acks=0 produce) to `node_id`;
    /// returns once it is written.
    pub(crate) async fn send_oneway_to(
        &self,
        node_id: i32,
        request: &Request,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let result = match self.node_connection(node_id).await {
            Ok(conn) => conn.send_oneway(request, timeout).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.on_request_error(node_id, e);
        }
        result
    }

    /// Sends `request` to the controller if known, else to any reachable
    /// broker (bootstrap addresses included), with the client's request timeout.
    pub(crate) async fn send_any(&self, request: &Request) -> Result<Response, ClientError> {
        let timeout = self.inner.config.request_timeout;
        // The cached address only: looking the node up again would send a
        // Metadata request through this very function.
        let controller = {
            let cache = self.read_cache();
            cache
                .brokers
                .get(&cache.controller_id)
                .map(|b| format!("{}:{}", b.host, b.port))
        };
        let mut addrs: Vec<String> = controller.into_iter().collect();
        addrs.extend(
            self.read_cache()
                .brokers
                .values()
                .map(|b| format!("{}:{}", b.host, b.port)),
        );
        addrs.extend(self.inner.bootstrap.iter().cloned());
        let mut last = ClientError::Config("no broker address".into());
        for addr in addrs {
            // A broker that dies as it is asked (a SIGKILLed process whose
            // port still took the connection, then reset it) is one of
            // several: the next is asked. A broker's own answer, error or
            // not, is the answer.
            let answer = match self.addr_connection(&addr).await {
                Ok(conn) => conn.request(request, timeout).await,
                Err(e) => Err(e),
            };
            match answer {
                Err(e @ (ClientError::Io(_) | ClientError::Timeout)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    async fn node_connection(&self, node_id: i32) -> Result<Arc<Connection>, ClientError> {
        let addr = self
            .read_cache()
            .brokers
            .get(&node_id)
            .map(|b| format!("{}:{}", b.host, b.port));
        let addr = match addr {
            Some(a) => a,
            None => {
                // A node the cache does not know: learn the broker list again.
                self.fetch_metadata(Some(Vec::new())).await?;
                self.read_cache()
                    .brokers
                    .get(&node_id)
                    .map(|b| format!("{}:{}", b.host, b.port))
                    .ok_or_else(|| {
                        ClientError::broker(
                            ErrorCode::LeaderNotAvailable,
                            Some(format!("no broker {node_id}")),
                        )
                    })?
            }
        };
        self.addr_connection(&addr).await
    }

    async fn addr_connection(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        let mut conns = self.inner.conns.lock().await;
        if let Some(c) = conns.get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::debug!(addr = c.addr(), "reconnecting");
        }
        let cfg = &self.inner.config;
        let conn = Arc::new(
            Connection::connect(
                addr,
                &cfg.client_id,
                cfg.connect_timeout,
                cfg.max_in_flight_per_connection,
                self.inner.limits,
            )
            .await?,
        );
        conns.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, MetadataCache> {
        // Every writer replaces whole entries, so a poisoned cache is consistent.
        self.inner.metadata.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cache(&self) -> CacheWrite<'_> {
        CacheWrite {
            guard: self.inner.metadata.write().unwrap_or_else(|e| e.into_inner()),
            generation: &self.inner.generation,
        }
    }

    /// Changes whenever the metadata cache changes.
    pub(crate) fn metadata_generation(&self) -> u64 {
        self.inner.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A write to the metadata cache; bumps the generation when it ends, after
/// the change is made and before the lock is released. Bumped before the
/// change, a reader could load the new generation, read the old entry while
/// the writer waits for the lock, and keep that stale entry under the new
/// generation for good; bumped after, a reader that loaded the old
/// generation may cache the new entry under it, which costs one more
/// lookup and nothing else.
struct CacheWrite<'a> {
    guard: std::sync::RwLockWriteGuard<'a, MetadataCache>,
    generation: &'a std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for CacheWrite<'_> {
    type Target = MetadataCache;

    fn deref(&self) -> &MetadataCache {
        &self.guard
    }
}

impl std::ops::DerefMut for CacheWrite<'_> {
    fn deref_mut(&mut self) -> &mut MetadataCache {
        &mut self.guard
    }
}

impl Drop for CacheWrite<'_> {
    fn drop(&mut self) {
        // Runs before the guard field is dropped: the lock is still held.
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

pub(crate) fn topic_from_wire(t: &borges_net::protocol::TopicMeta) -> TopicMetadata {
    let mut partitions: Vec<PartitionMetadata> = t
        .partitions
        .iter()
        .map(|p| PartitionMetadata {
            partition: p.partition,
            error: p.error,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicMetadata {
        name: t.name.clone(),
        id: t.id,
        partitions,
    }
}

/// The error for a response of the wrong api (a broker bug).
pub(crate) fn unexpected(resp: &Response) -> ClientError {
    ClientError::broker(
        ErrorCode::UnknownServerError,
        Some(format!("unexpected {} response", resp.api_key())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client with an empty cache and no connection.
    fn offline_client() -> Client {
        Client {
            inner: Arc::new(ClientInner {
                config: ClientConfig::default(),
                limits: Limits::default(),
                bootstrap: vec!["127.0.0.1:1".into()],
                conns: tokio::sync::Mutex::new(HashMap::new()),
                metadata: RwLock::new(MetadataCache::default()),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    fn topic(partitions: u32) -> Arc<TopicMetadata> {
        Arc::new(TopicMetadata {
            name: "t".into(),
            id: TopicId::default(),
            partitions: (0..partitions)
                .map(|p| PartitionMetadata {
                    partition: p,
                    error: ErrorCode::None,
                    leader: 0,
                    leader_epoch: 0,
                    replicas: vec![0],
                    isr: vec![0],
                })
                .collect(),
        })
    }

    /// Issue 20, finding 10: while a writer waits for the cache lock (a
    /// reader holds it), the generation must not have moved yet, or the
    /// reader would pair the new generation with the old entry. Once the
    /// write is done, the generation has moved.
    #[test]
    fn generation_bumped_after_cache_write() {
        let client = offline_client();
        client.write_cache().topics.insert("t".into(), topic(1));
        let before = client.metadata_generation();
        let reader = client.read_cache();
        let writer = {
            let client = client.clone();
            std::thread::spawn(move || {
                client.write_cache().topics.insert("t".into(), topic(3));
            })
        };
        // The writer is blocked on the lock the reader holds.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            client.metadata_generation(),
            before,
            "the generation moved before the cache was written"
        );
        assert_eq!(reader.topics["t"].partition_count(), 1);
        drop(reader);
        writer.join().unwrap();
        assert_eq!(client.metadata_generation(), before + 1);
        assert_eq!(client.read_cache().topics["t"].partition_count(), 3);
    }
}
