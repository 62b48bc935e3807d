//! Topic changes, on shard 0: the I/O around the pure rules.
//!
//! Shard 0 alone changes topic metadata, one change at a time. The rules
//! and the next `Topics` value come from `crate::metadata` (no I/O); here
//! the next value is persisted (`topics.json`, replaced atomically) and
//! handed to every shard, and the answer goes out only once every shard
//! has applied it. A change that cannot be persisted is not applied
//! anywhere, and its results are failed.

use std::rc::Rc;
use std::sync::Arc;

use borges_net::protocol::{ErrorCode, Response};

use super::calls::{self, Admin};
use super::Shard;
use crate::metadata::{self, Rules};
use crate::topics::Topics;

impl Shard {
    /// Applies a topic change; shard 0 only.
    pub(super) async fn admin(self: &Rc<Self>, req: Admin) -> Response {
        assert_eq!(self.id, 0, "topic metadata changes are made on shard 0");
        let _guard = self
            .admin_lock
            .acquire_permit(1)
            .await
            .expect("the admin lock is never closed");
        let topics = self.topics();
        let rules = Rules {
            default_partitions: self.config.default_partitions,
        };
        let (response, next) = match req {
            Admin::Create(r) => {
                let out = metadata::create_topics(&topics, &r, &rules);
                (Response::CreateTopics(out.response), out.next)
            }
            Admin::Delete(r) => {
                let out = metadata::delete_topics(&topics, &r);
                (Response::DeleteTopics(out.response), out.next)
            }
            Admin::Alter(r) => {
                let out = metadata::alter_configs(&topics, &r);
                (Response::AlterConfigs(out.response), out.next)
            }
        };
        if let Some(next) = next {
            if let Err(e) = next.save(self.meta_home()) {
                tracing::error!(error = %e, "cannot persist topic metadata");
                return metadata::not_persisted(response, ErrorCode::KafkaStorageError, &e.to_string());
            }
            self.broadcast(Arc::new(next)).await;
        }
        response
    }

    /// Hands a snapshot to every shard, this one included, and waits until
    /// each has applied it.
    async fn broadcast(self: &Rc<Self>, snap: Arc<Topics>) {
        for shard in 0..self.count {
            // A shard that cannot be reached is stopping: it needs no snapshot.
            let _ = self.call(shard, calls::Apply(snap.clone())).await;
        }
    }

    /// Where the metadata file lives: the first data directory.
    fn meta_home(&self) -> &std::path::Path {
        &self.config.data_dirs[0]
    }
}
