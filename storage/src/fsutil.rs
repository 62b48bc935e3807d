//! Small-file helpers: checkpoints and index files. Writes go through
//! glommio so that the executor never blocks on an fsync; reads happen only
//! while a log opens and use std.

use std::path::{Path, PathBuf};

use glommio::io::{Directory, OpenOptions};

use crate::config::ALIGN;
use crate::error::{Result, StorageError};
use crate::seam::{self, Op};

pub(crate) fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

pub(crate) fn align_down(n: u64) -> u64 {
    n / ALIGN * ALIGN
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `data` so that a crash leaves either the old or the
/// new contents: write a temporary file, sync it, rename it over, sync the
/// directory.
pub(crate) async fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let io = |op, e: std::io::Error| StorageError::io(op, &tmp, e);
    seam::step(Op::Create, &tmp, 0, 0).map_err(|e| io("create", e))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(|e| io("create", e.into()))?;
    if !data.is_empty() {
        let padded = align_up(data.len() as u64) as usize;
        let mut buf = file.alloc_dma_buffer(padded);
        buf.as_bytes_mut()[..data.len()].copy_from_slice(data);
        buf.as_bytes_mut()[data.len()..].fill(0);
        let written = seam::write(&tmp, 0, buf.as_bytes()).map_err(|e| io("write", e))?;
        let n = file.write_at(buf, 0).await.map_err(|e| io("write", e.into()))?;
        if n != padded {
            return Err(StorageError::io(
                "write",
                &tmp,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
            ));
        }
        written.done();
        seam::step(Op::Truncate, &tmp, 0, data.len() as u64).map_err(|e| io("truncate", e))?;
        file.truncate(data.len() as u64)
            .await
            .map_err(|e| io("truncate", e.into()))?;
    }
    seam::step(Op::Fdatasync, &tmp, 0, 0).map_err(|e| io("fdatasync", e))?;
    file.fdatasync().await.map_err(|e| io("fdatasync", e.into()))?;
    seam::gate(Op::Rename).await;
    seam::rename(&tmp, path).map_err(|e| io("rename", e))?;
    file.rename(path).await.map_err(|e| io("rename", e.into()))?;
    file.close().await.map_err(|e| io("close", e.into()))?;
    sync_dir(path.parent().unwrap_or(Path::new("."))).await
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    seam::step(Op::SyncDir, dir, 0, 0).map_err(|e| StorageError::io("sync directory", dir, e))?;
    let d = Directory::open(dir)
        .await
        .map_err(|e| StorageError::io("open directory", dir, e))?;
    d.sync()
        .await
        .map_err(|e| StorageError::io("sync directory", dir, e))?;
    d.close()
        .await
        .map_err(|e| StorageError::io("close directory", dir, e))
}

/// Reads a whole small file; `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", path, e)),
    }
}

/// Unlinks `path` if it exists. The unlink is durable only once the
/// directory is synced ([`sync_dir`]).
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    if path.exists() {
        seam::step(Op::Unlink, path, 0, 0).map_err(|e| StorageError::io("remove", path, e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

/// Reads a checkpoint holding one decimal u64; a missing or unreadable one
/// is `None` (checkpoints are hints that recovery can do without).
pub(crate) fn read_u64_checkpoint(path: &Path) -> Result<Option<u64>> {
    Ok(read_optional(path)?.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok()))
}

/// Makes creations and removals in `dir` durable with blocking calls, for
/// administrative paths that run outside the executor's hot path.
pub(crate) fn sync_dir_blocking(dir: &Path) -> Result<()> {
    let io = |e| StorageError::io("sync directory", dir, e);
    seam::step(Op::SyncDir, dir, 0, 0).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}
