//! What a broker answers its peers, on shard 0: raft messages for its
//! metadata quorum member, and, when it is the active controller, the
//! other brokers' registrations and heartbeats (KIP-631's
//! BrokerRegistration and BrokerHeartbeat). They arrive on the broker's own
//! port, like every request (one port per broker to open and route), on any
//! shard, which hands them here.
//!
//! Topic changes that a broker forwards to the active controller arrive as
//! ordinary CreateTopics, DeleteTopics, AlterConfigs and ElectLeaders
//! requests, marked by the client id every peer call carries
//! ([`PEER_CLIENT_ID`]), so that they are decided where they land and never
//! forwarded again.

use std::rc::Rc;

use borges_meta::NodeId;
use borges_net::protocol::{ErrorCode, RaftMessagesResponse, Request, Response};

use crate::shard::calls::Admin;
use crate::shard::Shard;

/// The longest a MetadataFetch waits for a newer image.
const MAX_FETCH_WAIT_MS: u32 = 1000;

/// The client id of every request a broker sends a peer.
pub const PEER_CLIENT_ID: &str = "borges-peer";

/// Whether a request is for [`answer`] (shard 0) rather than the ordinary
/// handlers: the peer-only apis, and topic changes a peer forwarded.
pub fn is_for_peers(client_id: &str, req: &Request) -> bool {
    // Replication's data requests are served where their partitions are.
    let data = matches!(req, Request::ReplicaFetch(_) | Request::OffsetForLeaderEpoch(_));
    (req.api_key().is_controller_only() && !data)
        || (client_id == PEER_CLIENT_ID
            && matches!(
                req,
                Request::CreateTopics(_)
                    | Request::DeleteTopics(_)
                    | Request::AlterConfigs(_)
                    | Request::ElectLeaders(_)
            ))
}

pub async fn answer(shard: &Rc<Shard>, req: Request) -> Result<Response, (ErrorCode, String)> {
    let Some(host) = shard.quorum.get().cloned() else {
        return Err((
            ErrorCode::NotController,
            "the metadata quorum has not started".into(),
        ));
    };
    Ok(match req {
        Request::RaftMessages(r) => {
            let voter = shard.config.controllers.iter().any(|v| v.node == r.from);
            if !voter || r.from == shard.config.node_id {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("node {} is not a peer of this quorum", r.from),
                ));
            }
            let mut refused = 0;
            for e in host
                .step_all(NodeId(r.from), r.messages.iter().map(|m| &m.bytes[..]))
                .into_iter()
                .filter_map(Result::err)
            {
                refused += 1;
                tracing::warn!(from = r.from, error = %e, "a raft message was refused");
            }
            Response::RaftMessages(RaftMessagesResponse {
                error: ErrorCode::None,
                refused,
            })
        }
        Request::MetadataFetch(r) => {
            if !host.is_voter() {
                return Err((
                    ErrorCode::InvalidRequest,
                    "this broker is not a voter: it has no metadata log to hand out".into(),
                ));
            }
            let wait = std::time::Duration::from_millis(u64::from(r.max_wait_ms.min(MAX_FETCH_WAIT_MS)));
            host.wait_applied_beyond(r.applied, wait).await;
            let applied = host.applied();
            let image = (applied > r.applied).then(|| bytes::Bytes::from(host.image().encode_snapshot()));
            Response::MetadataFetch(borges_net::protocol::MetadataFetchResponse {
                error: ErrorCode::None,
                controller: host.leader().0,
                applied,
                image,
            })
        }
        // Decided only where the controller is active; elsewhere the
        // decision itself answers NOT_CONTROLLER, with the leader known.
        Request::BrokerRegistration(r) => {
            Response::BrokerRegistration(crate::membership::registration(&host, &r).await)
        }
        Request::BrokerHeartbeat(r) => {
            Response::BrokerHeartbeat(crate::membership::heartbeat_here(&host, &r).await)
        }
        Request::AlterPartition(r) => {
            Response::AlterPartition(crate::membership::alter_partition_here(&host, &r).await)
        }
        // Topic changes forwarded by a broker that is not the controller:
        // decided here, never forwarded on.
        Request::CreateTopics(r) => shard.admin_here(Admin::Create(r)).await,
        Request::DeleteTopics(r) => shard.admin_here(Admin::Delete(r)).await,
        Request::AlterConfigs(r) => shard.admin_here(Admin::Alter(r)).await,
        Request::ElectLeaders(r) => shard.admin_here(Admin::Elect(r)).await,
        other => {
            return Err((
                ErrorCode::InvalidRequest,
                format!("{} is not a request between brokers", other.api_key()),
            ))
        }
    })
}
