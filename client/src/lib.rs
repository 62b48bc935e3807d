//! The native Rust client for Borges, for ordinary tokio applications.
//!
//! - [`Client`]: one pipelined TCP connection per broker (requests matched to
//!   responses by correlation id, a bound on requests in flight, a request
//!   timeout) and a metadata cache, refreshed whenever a broker says it is
//!   stale. Cheap to clone.
//! - [`Admin`]: create, delete, list and describe topics; alter configs;
//!   look up offsets.
//! - [`Producer`]: per-partition batching by size and linger, keyed (xxh3)
//!   and sticky partitioning, LZ4/zstd compression, retries with exponential
//!   backoff that keep each partition's order, a delivery future per record,
//!   back-pressure on buffered bytes, `flush` and `close`.
//! - [`Consumer`]: assign, seek (offset, earliest, latest, timestamp),
//!   position, and `poll`, which keeps the next fetch of every broker in
//!   flight while the application works.
//!
//! # Producing
//!
//! ```no_run
//! use borges_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn run() -> Result<(), borges_client::ClientError> {
//! let client = Client::connect("127.0.0.1:9092", ClientConfig::default()).await?;
//! client.admin().create_topic("events", 4, 1, &[]).await?;
//! let producer = Producer::new(client, ProducerConfig::default())?;
//! let delivery = producer
//!     .send(ProducerRecord::new("events").key("user-1").value("signed up"))
//!     .await?;
//! let meta = delivery.await?;
//! println!("stored at {}/{} offset {}", meta.topic, meta.partition, meta.offset);
//! producer.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Consuming
//!
//! ```no_run
//! use std::time::Duration;
//! use borges_client::{Client, ClientConfig, Consumer, ConsumerConfig, SeekTo};
//!
//! # async fn run() -> Result<(), borges_client::ClientError> {
//! let client = Client::connect("127.0.0.1:9092", ClientConfig::default()).await?;
//! let mut consumer = Consumer::new(client, ConsumerConfig::default());
//! consumer.assign([("events", 0), ("events", 1)]);
//! consumer.seek("events", 1, SeekTo::Latest).await?;
//! loop {
//!     for r in consumer.poll(Duration::from_secs(1)).await? {
//!         println!("{}/{} @{}: {:?}", r.topic, r.partition, r.offset, r.value);
//!     }
//! }
//! # }
//! ```
//!
//! # Errors
//!
//! Every call returns [`ClientError`]; [`ClientError::is_retriable`] says
//! whether trying again may help. The producer and consumer already retry
//! retriable errors themselves (after refreshing metadata).
//!
//! Layout:
//! - `client.rs`: `Client`, `ClientConfig`, the metadata cache.
//! - `conn.rs`: one pipelined connection: writer and reader tasks, frame splitting.
//! - `admin.rs`: `Admin` and offset lookups.
//! - `producer/`: `Producer`, its accumulator and partitioner.
//! - `consumer.rs`: `Consumer`.
//! - `error.rs`: `ClientError`.

#![warn(missing_docs)]

mod admin;
mod client;
mod conn;
mod consumer;
mod error;
pub mod group;
mod producer;

pub use admin::{
    Admin, BrokerState, ClusterBroker, ClusterDescription, ListedOffset, OffsetSpec, TopicConfig,
    TopicDescription,
};
pub use client::{BrokerInfo, Client, ClientConfig, PartitionMetadata, TopicMetadata};
pub use consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
pub use error::ClientError;
pub use group::{
    Assignment, Assignor, GroupConfig, GroupDescription, GroupListing, MemberDescription, NoopListener,
    RebalanceListener, RebalanceProtocol, Subscription, TopicPartition,
};
pub use producer::{
    Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};

/// The wire-level types this crate's API mentions (error codes, topic ids),
/// re-exported so that applications need not depend on `borges-net`.
pub use borges_net::protocol::ErrorCode;
pub use borges_net::types::TopicId;
