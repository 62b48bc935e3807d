//! Topic changes, on shard 0: the I/O around the pure rules.
//!
//! Shard 0 alone changes topic metadata, one change at a time. The broker's
//! rules (`crate::metadata`, no I/O) check the request against the topics
//! every shard follows and shape the answer; what they accept is then
//! decided by the controller (`borges_meta::controller`, through this
//! broker's quorum node), which gives topic ids and places replicas, and
//! is committed to the metadata log. Only then does every shard get the
//! topics of the new committed image, and the answer goes out once each
//! has applied it. A change that is not committed is applied nowhere, and
//! its results are failed with the controller's code (NOT_CONTROLLER,
//! REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR).

use std::rc::Rc;
use std::sync::Arc;

use borges_meta::controller::{ControllerError, NewTopic};
use borges_meta::seams::SplitMix64;
use borges_net::protocol::{
    ElectLeadersRequest, ElectLeadersResponse, ElectionResult, ErrorCode, Request, Response,
};

use super::calls::{self, Admin};
use super::Shard;
use crate::metadata::{self, Rules};
use crate::peer::{call_once, PeerError};
use crate::quorum_host::{random_u128, DecideError, QuorumHost};
use crate::topics::Topics;

/// How long a topic change may take to commit.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a forwarded change may take to be answered.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(12);
/// How long a broker waits for a forwarded change to reach its own image.
const FORWARD_VISIBLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The answer to a change that could not be made at all.
fn failed(req: &Admin, code: ErrorCode, message: &str, topics: &Topics) -> Response {
    let rules = Rules {
        default_partitions: 1,
    };
    match req {
        Admin::Create(r) => metadata::not_persisted(
            Response::CreateTopics(metadata::create_topics(topics, r, &rules).response),
            code,
            message,
        ),
        Admin::Delete(r) => metadata::not_persisted(
            Response::DeleteTopics(metadata::delete_topics(topics, r).response),
            code,
            message,
        ),
        Admin::Alter(r) => metadata::not_persisted(
            Response::AlterConfigs(metadata::alter_configs(topics, r).response),
            code,
            message,
        ),
        Admin::Elect(_) => Response::ElectLeaders(ElectLeadersResponse {
            error: code,
            results: Vec::new(),
        }),
    }
}

/// Whether `image` shows what the controller answered: the topics it
/// created exist, the topics it deleted are gone.
fn visible(image: &borges_meta::image::MetadataImage, resp: &Response) -> bool {
    match resp {
        Response::CreateTopics(r) => r
            .topics
            .iter()
            .filter(|t| t.error == ErrorCode::None)
            .all(|t| image.topic_by_name(&t.name).is_some()),
        Response::DeleteTopics(r) => r
            .topics
            .iter()
            .filter(|t| t.error == ErrorCode::None)
            .all(|t| image.topic_by_name(&t.name).is_none()),
        _ => true,
    }
}

impl Shard {
    /// Applies a topic change; shard 0 only. On a broker that is not the
    /// active controller, the change is forwarded to the one that is.
    pub(super) async fn admin(self: &Rc<Self>, req: Admin) -> Response {
        self.admin_inner(req, true).await
    }

    /// A topic change forwarded by another broker: decided here if this
    /// broker is the active controller, refused if not (never forwarded
    /// again, so two brokers with stale views cannot bounce it).
    pub(crate) async fn admin_here(self: &Rc<Self>, req: Admin) -> Response {
        self.admin_inner(req, false).await
    }

    async fn admin_inner(self: &Rc<Self>, req: Admin, may_forward: bool) -> Response {
        assert_eq!(self.id, 0, "topic metadata changes are made on shard 0");
        // Forwarded without the admin lock: the controller's broker may take
        // seconds, and the shards' refreshes wait on the lock.
        if let Some(host) = self.quorum.get().cloned() {
            if may_forward && !host.is_active() && !self.config.controllers.is_empty() {
                return self.forward(&host, req).await;
            }
        }
        let _guard = self
            .admin_lock
            .acquire_permit(1)
            .await
            .expect("the admin lock is never closed");
        // The rules judge against the committed image as it is now, not the
        // last one handed to the shards (a failover, or a forwarded change
        // that came before this controller's first refresh).
        if let Some(host) = self.quorum.get().cloned() {
            if host.applied() != self.broadcast_applied.get() {
                self.broadcast_committed(&host).await;
            }
        }
        let topics = self.topics();
        let rules = Rules {
            default_partitions: self.config.default_partitions,
        };
        let (response, next) = match &req {
            Admin::Create(r) => {
                let out = metadata::create_topics(&topics, r, &rules);
                (Response::CreateTopics(out.response), out.next)
            }
            Admin::Delete(r) => {
                let out = metadata::delete_topics(&topics, r);
                (Response::DeleteTopics(out.response), out.next)
            }
            Admin::Alter(r) => {
                let out = metadata::alter_configs(&topics, r);
                (Response::AlterConfigs(out.response), out.next)
            }
            // Not a topic change: the controller alone decides.
            Admin::Elect(r) => return Response::ElectLeaders(self.elect(r.clone()).await),
        };
        let Some(next) = next else {
            return response;
        };
        let Some(host) = self.quorum.get().cloned() else {
            return metadata::not_persisted(
                response,
                ErrorCode::NotController,
                "the metadata quorum has not started",
            );
        };
        let response = match commit(&host, &req, response, &next).await {
            Ok(r) => r,
            Err((response, e)) => {
                tracing::warn!(error = %e, "a topic change was not committed");
                return metadata::not_persisted(response, e.code(), &e.to_string());
            }
        };
        self.broadcast_committed(&host).await;
        response
    }

    /// Sends a topic change to the active controller's broker, and waits
    /// until this broker's image shows it before answering (so that a
    /// client that creates a topic here finds it here).
    async fn forward(self: &Rc<Self>, host: &Rc<QuorumHost>, req: Admin) -> Response {
        let request = match &req {
            Admin::Create(r) => Request::CreateTopics(r.clone()),
            Admin::Delete(r) => Request::DeleteTopics(r.clone()),
            Admin::Alter(r) => Request::AlterConfigs(r.clone()),
            Admin::Elect(r) => Request::ElectLeaders(r.clone()),
        };
        let leader = host.leader();
        let target = self
            .config
            .controllers
            .iter()
            .find(|v| v.node == leader.0 && leader.0 != self.config.node_id);
        let answer = match target {
            None => Err((ErrorCode::NotController, "no controller is active".to_string())),
            Some(v) => call_once(v.addr, &request, self.config.max_frame_bytes, FORWARD_TIMEOUT)
                .await
                .map_err(|e| {
                    let code = match &e {
                        PeerError::Refused { code, .. } => *code,
                        PeerError::Timeout(_) => ErrorCode::RequestTimedOut,
                        _ => ErrorCode::NotController,
                    };
                    (
                        code,
                        format!("forwarding to the controller on node {}: {e}", v.node),
                    )
                }),
        };
        let resp = match answer {
            Ok(resp) if resp.api_key() == request.api_key() => resp,
            Ok(other) => {
                return failed(
                    &req,
                    ErrorCode::UnknownServerError,
                    &format!(
                        "the controller answered {} to {}",
                        other.api_key(),
                        request.api_key()
                    ),
                    &self.topics(),
                )
            }
            Err((code, message)) => return failed(&req, code, &message, &self.topics()),
        };
        // What the controller committed reaches this broker's quorum member
        // within a heartbeat or two; wait for it (bounded).
        let deadline = std::time::Instant::now() + FORWARD_VISIBLE_TIMEOUT;
        while !visible(&host.image(), &resp) && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _guard = self
            .admin_lock
            .acquire_permit(1)
            .await
            .expect("the admin lock is never closed");
        self.broadcast_committed(host).await;
        resp
    }

    /// Preferred-leader election through the controller (the admin lock
    /// held); every shard gets the committed result before the answer.
    async fn elect(self: &Rc<Self>, r: ElectLeadersRequest) -> ElectLeadersResponse {
        let Some(host) = self.quorum.get().cloned() else {
            return ElectLeadersResponse {
                error: ErrorCode::NotController,
                results: Vec::new(),
            };
        };
        let targets: Option<Vec<(String, u32)>> = r.topics.map(|ts| {
            ts.into_iter()
                .flat_map(|t| {
                    let topic = t.topic;
                    t.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect()
        });
        let decided = host
            .decide(COMMIT_TIMEOUT, |c, _| c.elect_preferred(targets.as_deref()))
            .await;
        let results = match decided {
            Ok(results) => results,
            Err(e) => {
                return ElectLeadersResponse {
                    error: e.code(),
                    results: Vec::new(),
                }
            }
        };
        self.broadcast_committed(&host).await;
        ElectLeadersResponse {
            error: ErrorCode::None,
            results: results
                .into_iter()
                .map(|((topic, partition), r)| {
                    let (error, message) = match r {
                        Ok(()) => (ErrorCode::None, None),
                        Err(e) => (e.code(), Some(e.to_string())),
                    };
                    ElectionResult {
                        topic,
                        partition,
                        error,
                        message,
                    }
                })
                .collect(),
        }
    }

    /// Hands every shard the committed image if it moved since the last
    /// time (brokers fenced or unfenced, leaders moved): shard 0 only.
    /// Serialized with topic changes, so no shard ever gets an older
    /// image after a newer one.
    pub(crate) async fn refresh_metadata(self: &Rc<Self>) {
        let Some(host) = self.quorum.get().cloned() else {
            return;
        };
        let _guard = self
            .admin_lock
            .acquire_permit(1)
            .await
            .expect("the admin lock is never closed");
        let moved = host.applied() != self.broadcast_applied.get()
            || host.leader() != self.topics().cluster.controller;
        if moved {
            self.broadcast_committed(&host).await;
        }
    }

    /// Hands every shard the topics of the committed image (the admin lock
    /// held).
    async fn broadcast_committed(self: &Rc<Self>, host: &QuorumHost) {
        let applied = host.applied();
        let committed = Topics::from_image(&host.image(), host.leader(), host.voters());
        self.broadcast(Arc::new(committed)).await;
        self.broadcast_applied.set(applied);
    }

    /// Hands a snapshot to every shard, this one included, and waits until
    /// each has applied it.
    pub(crate) async fn broadcast(self: &Rc<Self>, snap: Arc<Topics>) {
        for shard in 0..self.count {
            // A shard that cannot be reached is stopping: it needs no snapshot.
            let _ = self.call(shard, calls::Apply(snap.clone())).await;
        }
    }
}

/// A change the rules accepted that was not committed, with the answer as
/// it stood.
type NotCommitted = (Response, DecideError);

/// One topic's setting changes (`None`: back to the default).
type ConfigChanges = Vec<(String, Option<String>)>;

/// The controller's refusal of one topic, as the client sees it.
fn refused(error: &mut ErrorCode, message: &mut Option<String>, e: &ControllerError) {
    *error = e.code();
    *message = Some(e.to_string());
}

/// Commits what the rules accepted (the topics whose result is still
/// `NONE`; `next` is the topics as the rules would leave them) through the
/// controller, and fills in what it decided: the ids it gave, or a refusal
/// of its own.
async fn commit(
    host: &QuorumHost,
    req: &Admin,
    response: Response,
    next: &Topics,
) -> Result<Response, NotCommitted> {
    match (req, response) {
        (Admin::Create(asked), Response::CreateTopics(mut r)) => {
            let new: Vec<NewTopic> = r
                .topics
                .iter()
                .filter(|t| t.error == ErrorCode::None)
                .map(|t| &next.topics[&t.name])
                .map(|t| NewTopic {
                    name: t.name.clone(),
                    partitions: t.partitions as i32,
                    replication_factor: asked
                        .topics
                        .iter()
                        .find(|a| a.name == t.name)
                        .and_then(|a| i16::try_from(a.replication_factor).ok())
                        .filter(|&rf| rf > 0)
                        .unwrap_or(-1),
                    configs: t.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
                .collect();
            let mut rng = SplitMix64::new(random_u128(b"placement") as u64);
            let results = match host
                .decide(COMMIT_TIMEOUT, |c, _| c.create_topics(&new, false, &mut rng))
                .await
            {
                Ok(results) => results,
                Err(e) => return Err((Response::CreateTopics(r), e)),
            };
            let accepted = r.topics.iter_mut().filter(|t| t.error == ErrorCode::None);
            for (t, result) in accepted.zip(results) {
                match result {
                    Ok(id) => t.id = id,
                    Err(e) => {
                        t.id = borges_net::types::TopicId(0);
                        refused(&mut t.error, &mut t.message, &e);
                    }
                }
            }
            Ok(Response::CreateTopics(r))
        }
        (Admin::Delete(_), Response::DeleteTopics(mut r)) => {
            let names: Vec<String> = r
                .topics
                .iter()
                .filter(|t| t.error == ErrorCode::None)
                .map(|t| t.name.clone())
                .collect();
            let results = match host.decide(COMMIT_TIMEOUT, |c, _| c.delete_topics(&names)).await {
                Ok(results) => results,
                Err(e) => return Err((Response::DeleteTopics(r), e)),
            };
            let failed: Vec<(String, ControllerError)> = names
                .into_iter()
                .zip(results)
                .filter_map(|(n, res)| res.err().map(|e| (n, e)))
                .collect();
            for t in r.topics.iter_mut() {
                if let Some((_, e)) = failed.iter().find(|(n, _)| *n == t.name) {
                    refused(&mut t.error, &mut t.message, e);
                }
            }
            Ok(Response::DeleteTopics(r))
        }
        (Admin::Alter(req), Response::AlterConfigs(mut r)) => {
            let changes: Vec<(String, ConfigChanges)> = req
                .topics
                .iter()
                .zip(r.topics.iter())
                .filter(|(_, res)| res.error == ErrorCode::None)
                .map(|(t, _)| (t.name.clone(), t.configs.clone()))
                .collect();
            let decided = host
                .decide(COMMIT_TIMEOUT, |c, _| {
                    // Each topic whole or not at all; one proposal for all.
                    let mut batch = Vec::new();
                    let mut results = Vec::new();
                    for (name, configs) in &changes {
                        match c.alter_configs(name, configs, false) {
                            Ok(records) => {
                                batch.extend(records);
                                results.push((name.clone(), None));
                            }
                            Err(e) => results.push((name.clone(), Some(e))),
                        }
                    }
                    Ok((results, batch))
                })
                .await;
            let results = match decided {
                Ok(results) => results,
                Err(e) => return Err((Response::AlterConfigs(r), e)),
            };
            for (name, e) in results {
                if let (Some(e), Some(t)) = (e, r.topics.iter_mut().find(|t| t.name == name)) {
                    refused(&mut t.error, &mut t.message, &e);
                }
            }
            Ok(Response::AlterConfigs(r))
        }
        (_, other) => {
            debug_assert!(false, "an admin answer of another kind: {other:?}");
            Ok(other)
        }
    }
}
