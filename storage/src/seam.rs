//! The file-system seam: every durable step the engine takes (a write, an
//! fdatasync, a truncation, a rename, an unlink, a directory sync, a
//! directory created or removed) and every read of a segment passes
//! through [`step`] first. In production that is one thread-local check of
//! a flag. Tests use it to make chosen steps fail ([`fail`]), to hold them
//! at a gate until the test lets them go ([`hold`]), and to record the
//! sequence of steps ([`record`]) to check the order of durable operations.
//!
//! The state is per thread: a glommio executor runs on one thread, and so
//! does every log it owns, so tests running in parallel never see each
//! other's faults.
//!
//! Not part of the stable API: for the engine's own tests and test tools.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::sync::Semaphore;

/// A kind of file-system step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write to a segment or a small file (`pos`, `len`).
    Write,
    /// A read of a segment (`pos`, `len`).
    Read,
    Fdatasync,
    /// A file cut to `len` bytes.
    Truncate,
    /// A file created (or opened with truncation).
    Create,
    /// `path` renamed to `to`.
    Rename,
    Unlink,
    /// A directory's entries made durable.
    SyncDir,
    CreateDir,
    RemoveDir,
}

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub op: Op,
    pub path: PathBuf,
    /// The new name, for a rename.
    pub to: Option<PathBuf>,
    pub pos: u64,
    pub len: u64,
    /// The bytes of a write.
    pub data: Vec<u8>,
}

struct Plan {
    op: Op,
    /// Matching steps to let pass before failing.
    skip: u32,
    /// Matching steps to fail.
    count: u32,
    errno: i32,
    /// Only steps on paths whose file name contains this.
    name: Option<String>,
}

#[derive(Default)]
struct Seam {
    plans: Vec<Plan>,
    events: Option<Vec<Event>>,
    gates: Vec<(Op, Rc<Semaphore>)>,
}

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static SEAM: RefCell<Seam> = RefCell::new(Seam::default());
}

fn refresh() {
    let active = SEAM.with(|s| {
        let s = s.borrow();
        !s.plans.is_empty() || s.events.is_some() || !s.gates.is_empty()
    });
    ACTIVE.with(|a| a.set(active));
}

/// After `skip` matching steps pass, the next `count` steps of kind `op`
/// fail with `errno` (e.g. `libc::EIO`, `libc::ENOSPC`). With `name`, only
/// steps on a path whose file name contains it match.
pub fn fail(op: Op, skip: u32, count: u32, errno: i32, name: Option<&str>) {
    SEAM.with(|s| {
        s.borrow_mut().plans.push(Plan {
            op,
            skip,
            count,
            errno,
            name: name.map(str::to_string),
        })
    });
    refresh();
}

/// Starts recording every step on this thread (dropping what was recorded).
pub fn record() {
    SEAM.with(|s| s.borrow_mut().events = Some(Vec::new()));
    refresh();
}

/// The steps recorded so far; recording goes on.
pub fn events() -> Vec<Event> {
    SEAM.with(|s| s.borrow().events.clone().unwrap_or_default())
}

/// How many steps were recorded so far.
pub fn event_count() -> usize {
    SEAM.with(|s| s.borrow().events.as_ref().map_or(0, Vec::len))
}

/// Stops recording and returns what was recorded.
pub fn take_events() -> Vec<Event> {
    let events = SEAM.with(|s| s.borrow_mut().events.take().unwrap_or_default());
    refresh();
    events
}

/// How many planned faults have not fired yet (steps still to fail).
pub fn faults_left() -> u32 {
    SEAM.with(|s| s.borrow().plans.iter().map(|p| p.count).sum())
}

/// Forgets the faults planned on this thread; recording goes on.
pub fn reset_faults() {
    SEAM.with(|s| s.borrow_mut().plans.clear());
    refresh();
}

/// Forgets every fault, gate and recording of this thread.
pub fn reset() {
    SEAM.with(|s| *s.borrow_mut() = Seam::default());
    refresh();
}

/// A gate that holds steps of one kind at the points that wait on gates
/// (background segment writes, the fdatasync of `Log::sync_to`, and the
/// rename of every atomic small-file write).
pub struct Gate {
    sem: Rc<Semaphore>,
}

impl Gate {
    /// Lets every held step, and every later one, go.
    pub fn open(&self) {
        self.sem.signal(1 << 20);
    }
}

/// Holds the next steps of kind `op` at their gate points until the gate
/// opens.
pub fn hold(op: Op) -> Gate {
    let sem = Rc::new(Semaphore::new(0));
    SEAM.with(|s| s.borrow_mut().gates.push((op, sem.clone())));
    refresh();
    Gate { sem }
}

/// A gate point: waits while a gate holds steps of kind `op`.
pub(crate) async fn gate(op: Op) {
    if !ACTIVE.with(|a| a.get()) {
        return;
    }
    let held: Vec<Rc<Semaphore>> = SEAM.with(|s| {
        s.borrow()
            .gates
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, g)| g.clone())
            .collect()
    });
    for g in held {
        // A gate that opened has plenty of permits; one closed has none.
        let _ = g.acquire(1).await;
        g.signal(1);
    }
}

/// Announces a step: records it, and fails it if a plan says so.
pub(crate) fn step(op: Op, path: &Path, pos: u64, len: u64) -> io::Result<()> {
    step_to(op, path, None, pos, len, &[], true).map(|_| ())
}

/// [`step`] for a rename of `path` to `to`.
pub(crate) fn rename(path: &Path, to: &Path) -> io::Result<()> {
    step_to(Op::Rename, path, Some(to), 0, 0, &[], true).map(|_| ())
}

/// A write announced to the seam and let through, recorded only once it
/// has completed ([`Written::done`]): a write in flight may not have
/// reached the file yet, and one that fails never does.
#[must_use = "a write is recorded when it is done"]
pub(crate) struct Written(Option<Event>);

impl Written {
    /// The whole write completed: records it, if recording goes on.
    pub(crate) fn done(self) {
        if let Some(e) = self.0 {
            SEAM.with(|s| {
                if let Some(events) = s.borrow_mut().events.as_mut() {
                    events.push(e);
                }
            });
        }
    }
}

/// [`step`] for a write of `data` at `pos`, issued when this returns `Ok`;
/// call [`Written::done`] when it completes.
pub(crate) fn write(path: &Path, pos: u64, data: &[u8]) -> io::Result<Written> {
    step_to(Op::Write, path, None, pos, data.len() as u64, data, false).map(Written)
}

/// Fails the step if a plan says so; otherwise records it now (`now`), or
/// returns it to be recorded later.
fn step_to(
    op: Op,
    path: &Path,
    to: Option<&Path>,
    pos: u64,
    len: u64,
    data: &[u8],
    now: bool,
) -> io::Result<Option<Event>> {
    if !ACTIVE.with(|a| a.get()) {
        return Ok(None);
    }
    SEAM.with(|s| {
        let mut s = s.borrow_mut();
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut fail_with = None;
        for p in s.plans.iter_mut() {
            let name_ok = match (&p.name, &file_name) {
                (None, _) => true,
                (Some(want), Some(have)) => have.contains(want.as_str()),
                (Some(_), None) => false,
            };
            if p.op != op || p.count == 0 || !name_ok {
                continue;
            }
            if p.skip > 0 {
                p.skip -= 1;
                continue;
            }
            p.count -= 1;
            fail_with = Some(p.errno);
            break;
        }
        if let Some(errno) = fail_with {
            return Err(io::Error::from_raw_os_error(errno));
        }
        // Reads change nothing on disk: they are never recorded.
        let Some(events) = s.events.as_mut().filter(|_| op != Op::Read) else {
            return Ok(None);
        };
        let event = Event {
            op,
            path: path.to_path_buf(),
            to: to.map(Path::to_path_buf),
            pos,
            len,
            data: data.to_vec(),
        };
        if now {
            events.push(event);
            Ok(None)
        } else {
            Ok(Some(event))
        }
    })
}
