//! A model of a disk after a crash, built from the steps the seam records
//! (`seam::record`), for the crash-point harness (`tests/crash_points.rs`)
//! and for simulators that need a faulty disk.
//!
//! The model follows what POSIX and Linux file systems promise, and no
//! more:
//! - a file's data and size are durable up to its last fdatasync; writes
//!   and truncations after it may each be lost, and a lost or kept write
//!   may be torn at sector granularity (512 bytes);
//! - a directory's entries (creations, renames, unlinks) are durable up to
//!   its last directory sync; of those after it, a prefix survives (file
//!   systems journal metadata in order), possibly none, or, with
//!   [`DirOrder::AnySubset`], any subset (POSIX promises no order at all);
//! - an fdatasync never makes a name durable.
//!
//! Steps are applied one at a time ([`SimDisk::apply`]); at any point
//! [`SimDisk::crash`] draws one possible post-crash disk, and
//! [`SimDisk::current`] is what a reader sees now (every step applied),
//! which a harness compares with the real directory to check that every
//! change went through the seam.
//!
//! Directories are modelled too: one created during the recording is an
//! entry of its parent like a file's, durable only after the parent's
//! sync; a crash that loses the entry loses everything under it. A
//! removed tree (`Op::RemoveDir`) goes or stays whole with its entry.
//! The disk a crash leaves is given as its files: an empty directory that
//! survives is not represented.
//!
//! Not part of the stable API: for tests and test tools.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::seam::{Event, Op};

/// Sector size for torn writes.
pub const SECTOR: u64 = 512;

/// A small deterministic random generator (SplitMix64), so that a seed
/// replays exactly.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { pos: u64, data: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

/// What a directory entry names: a file (an index into the inodes) or a
/// directory (an index into the directories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(usize),
    Dir(usize),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(OsString, Node),
    Unlink(OsString),
    Rename(OsString, OsString),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    durable: BTreeMap<OsString, Node>,
    current: BTreeMap<OsString, Node>,
    pending: Vec<DirOp>,
}

/// Which of a directory's entries made since its last sync survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirOrder {
    /// A prefix of them, in the order they were made (file systems that
    /// journal metadata in order).
    #[default]
    Prefix,
    /// Any subset of them, each kept or lost on its own: all that POSIX
    /// promises, and what catches an order that only a journal saves.
    AnySubset,
}

/// The disk under one root directory, as the recorded steps left it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    /// How un-synced directory entries survive [`SimDisk::crash`].
    pub dir_order: DirOrder,
    root: PathBuf,
    inodes: Vec<Inode>,
    /// Directories; the first is the root, which always exists.
    dirs: Vec<Dir>,
    /// Paths a step touched that the model does not know (a file that
    /// existed before the recording, or a step outside the root).
    pub untracked: Vec<PathBuf>,
}

fn apply_op(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { pos, data } => write_at(content, *pos, data),
        FileOp::Truncate(len) => content.resize(*len as usize, 0),
    }
}

fn write_at(content: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let end = pos as usize + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[pos as usize..end].copy_from_slice(data);
}

fn apply_dir_op(entries: &mut BTreeMap<OsString, Node>, op: &DirOp) {
    match op {
        DirOp::Link(name, node) => {
            entries.insert(name.clone(), *node);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(node) = entries.remove(from) {
                entries.insert(to.clone(), node);
            }
        }
    }
}

/// Which view of the directories a walk follows.
#[derive(Clone, Copy)]
enum View {
    Current,
    Durable,
}

impl SimDisk {
    /// An empty disk: `root` and the directories in `dirs` (paths under
    /// `root`, or `root` itself) exist, durably, and hold nothing.
    /// Directories created later (`Op::CreateDir`) are modelled like
    /// files: their entry in their parent is durable only once the parent
    /// is synced, and a directory whose entry a crash loses takes
    /// everything in it along.
    pub fn new(root: &Path, dirs: &[PathBuf]) -> SimDisk {
        let mut disk = SimDisk {
            root: root.to_path_buf(),
            dirs: vec![Dir::default()],
            ..Default::default()
        };
        for d in dirs {
            let Ok(rel) = d.strip_prefix(root) else {
                continue;
            };
            let mut at = 0;
            for part in rel.iter() {
                at = match disk.dirs[at].current.get(part) {
                    Some(&Node::Dir(sub)) => sub,
                    _ => {
                        disk.dirs.push(Dir::default());
                        let sub = disk.dirs.len() - 1;
                        let parent = &mut disk.dirs[at];
                        parent.durable.insert(part.to_os_string(), Node::Dir(sub));
                        parent.current.insert(part.to_os_string(), Node::Dir(sub));
                        sub
                    }
                };
            }
        }
        disk
    }

    /// The disk as it is now under `root`: the regular files directly in
    /// `root` and in the directories of `dirs`, each durable with its
    /// current content and name (a disk a crash left, before recovery
    /// runs on it).
    pub fn from_dir(root: &Path, dirs: &[PathBuf]) -> std::io::Result<SimDisk> {
        let mut disk = SimDisk::new(root, dirs);
        let paths: std::collections::BTreeSet<PathBuf> = std::iter::once(root.to_path_buf())
            .chain(dirs.iter().cloned())
            .collect();
        for path in paths {
            let Some(d) = disk.dir_at(&path) else { continue };
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                disk.inodes.push(Inode {
                    durable: std::fs::read(entry.path())?,
                    pending: Vec::new(),
                });
                let node = Node::File(disk.inodes.len() - 1);
                let dir = &mut disk.dirs[d];
                dir.durable.insert(entry.file_name(), node);
                dir.current.insert(entry.file_name(), node);
            }
        }
        Ok(disk)
    }

    /// The directory at `path` as a reader sees it now.
    fn dir_at(&self, path: &Path) -> Option<usize> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut at = 0;
        for part in rel.iter() {
            match self.dirs[at].current.get(part) {
                Some(&Node::Dir(sub)) => at = sub,
                _ => return None,
            }
        }
        Some(at)
    }

    /// The directory holding `path`, and the name in it.
    fn split(&self, path: &Path) -> Option<(usize, OsString)> {
        let parent = path.parent()?;
        let name = path.file_name()?.to_os_string();
        Some((self.dir_at(parent)?, name))
    }

    fn inode_of(&self, path: &Path) -> Option<usize> {
        let (parent, name) = self.split(path)?;
        match self.dirs[parent].current.get(&name) {
            Some(&Node::File(ino)) => Some(ino),
            _ => None,
        }
    }

    fn untracked(&mut self, path: &Path) {
        if !self.untracked.iter().any(|p| p == path) {
            self.untracked.push(path.to_path_buf());
        }
    }

    /// Records a change of the entries of directory `d`.
    fn dir_op(&mut self, d: usize, op: DirOp) {
        let dir = &mut self.dirs[d];
        apply_dir_op(&mut dir.current, &op);
        dir.pending.push(op);
    }

    /// Applies one recorded step.
    pub fn apply(&mut self, e: &Event) {
        match e.op {
            Op::Read => {}
            Op::Create => match self.inode_of(&e.path) {
                // Opening an existing file with O_TRUNC cuts it, like a truncation.
                Some(ino) => self.inodes[ino].pending.push(FileOp::Truncate(0)),
                None => {
                    let Some((parent, name)) = self.split(&e.path) else {
                        return self.untracked(&e.path);
                    };
                    if self.dirs[parent].current.contains_key(&name) {
                        // A directory of that name: the create fails.
                        return self.untracked(&e.path);
                    }
                    self.inodes.push(Inode::default());
                    let ino = self.inodes.len() - 1;
                    self.dir_op(parent, DirOp::Link(name, Node::File(ino)));
                }
            },
            Op::Write | Op::Truncate | Op::Fdatasync => {
                let Some(ino) = self.inode_of(&e.path) else {
                    return self.untracked(&e.path);
                };
                let inode = &mut self.inodes[ino];
                match e.op {
                    Op::Write => inode.pending.push(FileOp::Write {
                        pos: e.pos,
                        data: e.data.clone(),
                    }),
                    Op::Truncate => inode.pending.push(FileOp::Truncate(e.len)),
                    _ => {
                        for op in std::mem::take(&mut inode.pending) {
                            apply_op(&mut inode.durable, &op);
                        }
                    }
                }
            }
            Op::Rename => {
                let to = e.to.as_deref().unwrap_or(Path::new(""));
                let (Some((from_dir, from)), Some((to_dir, to_name))) = (self.split(&e.path), self.split(to))
                else {
                    return self.untracked(&e.path);
                };
                if from_dir != to_dir || !self.dirs[from_dir].current.contains_key(&from) {
                    return self.untracked(&e.path);
                }
                self.dir_op(from_dir, DirOp::Rename(from, to_name));
            }
            Op::Unlink => {
                let Some((parent, name)) = self.split(&e.path) else {
                    return self.untracked(&e.path);
                };
                self.dir_op(parent, DirOp::Unlink(name));
            }
            Op::CreateDir => {
                let Some((parent, name)) = self.split(&e.path) else {
                    return self.untracked(&e.path);
                };
                match self.dirs[parent].current.get(&name) {
                    Some(Node::Dir(_)) => {}
                    Some(Node::File(_)) => self.untracked(&e.path),
                    None => {
                        self.dirs.push(Dir::default());
                        let d = self.dirs.len() - 1;
                        self.dir_op(parent, DirOp::Link(name, Node::Dir(d)));
                    }
                }
            }
            Op::RemoveDir => {
                // A whole tree goes with its entry in its parent: a crash
                // keeps the tree (as it was) or loses it, never a part. The
                // engine removes only trees renamed out of the way first.
                let Some((parent, name)) = self.split(&e.path) else {
                    return self.untracked(&e.path);
                };
                self.dir_op(parent, DirOp::Unlink(name));
            }
            Op::SyncDir => {
                if let Some(d) = self.dir_at(&e.path) {
                    let dir = &mut self.dirs[d];
                    dir.durable = dir.current.clone();
                    dir.pending.clear();
                }
            }
        }
    }

    /// Every file under directory `d` (at `path`) in one view.
    fn walk(&self, d: usize, path: &Path, view: View, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let dir = &self.dirs[d];
        let entries = match view {
            View::Current => &dir.current,
            View::Durable => &dir.durable,
        };
        for (name, &node) in entries {
            let at = path.join(name);
            match node {
                Node::File(ino) => {
                    let inode = &self.inodes[ino];
                    let mut content = inode.durable.clone();
                    if let View::Current = view {
                        for op in &inode.pending {
                            apply_op(&mut content, op);
                        }
                    }
                    out.insert(self.relative(&at), content);
                }
                Node::Dir(sub) => self.walk(sub, &at, view, out),
            }
        }
    }

    /// Every file as a reader sees it now: path relative to the root → bytes.
    pub fn current(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        self.walk(0, &self.root, View::Current, &mut out);
        out
    }

    /// One possible disk after a crash now: path relative to the root → bytes.
    pub fn crash(&self, rng: &mut SimRng) -> BTreeMap<PathBuf, Vec<u8>> {
        // Each inode's fate is drawn once, however many names it has.
        let mut contents: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        self.crash_dir(0, &self.root, rng, &mut contents, &mut out);
        out
    }

    /// The files under directory `d` (at `path`) after a crash: its entries
    /// that survive, and in each surviving directory, the same again.
    fn crash_dir(
        &self,
        d: usize,
        path: &Path,
        rng: &mut SimRng,
        contents: &mut BTreeMap<usize, Vec<u8>>,
        out: &mut BTreeMap<PathBuf, Vec<u8>>,
    ) {
        let dir = &self.dirs[d];
        let mut entries = dir.durable.clone();
        match self.dir_order {
            DirOrder::Prefix => {
                let kept = rng.below(dir.pending.len() as u64 + 1) as usize;
                for op in &dir.pending[..kept] {
                    apply_dir_op(&mut entries, op);
                }
            }
            DirOrder::AnySubset => {
                for op in &dir.pending {
                    if rng.chance(1, 2) {
                        apply_dir_op(&mut entries, op);
                    }
                }
            }
        }
        for (name, node) in entries {
            let at = path.join(&name);
            match node {
                Node::File(ino) => {
                    let content = contents
                        .entry(ino)
                        .or_insert_with(|| crash_content(&self.inodes[ino], rng))
                        .clone();
                    out.insert(self.relative(&at), content);
                }
                Node::Dir(sub) => self.crash_dir(sub, &at, rng, contents, out),
            }
        }
    }

    /// The disk after the worst crash now: nothing survives that was not
    /// made durable (no un-synced write, truncation or directory entry).
    pub fn durable(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        self.walk(0, &self.root, View::Durable, &mut out);
        out
    }

    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_path_buf()
    }

    /// Writes `files` (as [`SimDisk::crash`] or [`SimDisk::current`] gives
    /// them) under `root`, creating directories as needed.
    pub fn materialize(files: &BTreeMap<PathBuf, Vec<u8>>, root: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        for (rel, bytes) in files {
            let path = root.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes)?;
        }
        Ok(())
    }
}

/// A file's content after a crash: its durable content, then each later
/// step kept or lost, a write possibly torn into a subset of its sectors.
fn crash_content(inode: &Inode, rng: &mut SimRng) -> Vec<u8> {
    let mut content = inode.durable.clone();
    // Most often all or nothing of what is pending, so that long tails of
    // kept steps are common too; otherwise each step on its own.
    let mode = rng.below(4);
    for op in &inode.pending {
        let keep = match mode {
            0 => false,
            1 => true,
            _ => rng.chance(1, 2),
        };
        match op {
            FileOp::Write { pos, data } if mode >= 2 && rng.chance(1, 4) => {
                // Torn: some sectors reach the disk, the others do not.
                let mut at = 0usize;
                while at < data.len() {
                    let sector_end = (((*pos + at as u64) / SECTOR + 1) * SECTOR - *pos) as usize;
                    let end = sector_end.min(data.len());
                    if rng.chance(1, 2) {
                        write_at(&mut content, *pos + at as u64, &data[at..end]);
                    }
                    at = end;
                }
            }
            _ if keep => apply_op(&mut content, op),
            _ => {}
        }
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, path: &Path) -> Event {
        Event {
            op,
            path: path.to_path_buf(),
            to: None,
            pos: 0,
            len: 0,
            data: Vec::new(),
        }
    }

    #[test]
    fn synced_data_and_entries_survive_every_crash() {
        let root = PathBuf::from("/r");
        let f = root.join("f");
        let mut d = SimDisk::new(&root, &[]);
        d.apply(&ev(Op::Create, &f));
        d.apply(&Event {
            data: b"hello".to_vec(),
            len: 5,
            ..ev(Op::Write, &f)
        });
        d.apply(&ev(Op::Fdatasync, &f));
        d.apply(&ev(Op::SyncDir, &root));
        d.apply(&Event {
            data: b"J".to_vec(),
            len: 1,
            ..ev(Op::Write, &f)
        });
        d.apply(&ev(Op::Unlink, &f));
        assert!(d.current().is_empty());
        let mut rng = SimRng::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let c = d.crash(&mut rng);
            if let Some(b) = c.get(Path::new("f")) {
                assert!(b == b"hello" || b == b"Jello", "{b:?}");
                seen.insert(b.clone());
            } else {
                seen.insert(Vec::new());
            }
        }
        assert_eq!(seen.len(), 3, "kept, changed and unlinked all happen");
    }

    #[test]
    fn unsynced_entries_survive_as_a_prefix_or_as_any_subset() {
        let root = PathBuf::from("/r");
        let (a, b) = (root.join("a"), root.join("b"));
        let mut d = SimDisk::new(&root, &[]);
        d.apply(&ev(Op::Create, &a));
        d.apply(&ev(Op::Create, &b));
        d.apply(&ev(Op::SyncDir, &root));
        d.apply(&ev(Op::Unlink, &a));
        d.apply(&ev(Op::Unlink, &b));
        let outcomes = |d: &SimDisk| {
            let mut rng = SimRng::new(3);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                seen.insert(d.crash(&mut rng).into_keys().collect::<Vec<_>>());
            }
            seen
        };
        let (a, b) = (PathBuf::from("a"), PathBuf::from("b"));
        let prefixes = outcomes(&d);
        assert_eq!(
            prefixes,
            [vec![], vec![b.clone()], vec![a.clone(), b.clone()]]
                .into_iter()
                .collect(),
            "the later unlink never survives without the earlier one"
        );
        d.dir_order = DirOrder::AnySubset;
        let subsets = outcomes(&d);
        assert_eq!(subsets.len(), 4, "{subsets:?}");
        assert!(subsets.contains(&vec![a]), "the later unlink alone survives");
    }

    #[test]
    fn a_new_directory_survives_only_once_its_parent_is_synced() {
        let root = PathBuf::from("/r");
        let d = root.join("t-0");
        let f = d.join("f");
        let mut disk = SimDisk::new(&root, &[]);
        disk.apply(&ev(Op::CreateDir, &d));
        disk.apply(&ev(Op::Create, &f));
        disk.apply(&Event {
            data: b"hello".to_vec(),
            len: 5,
            ..ev(Op::Write, &f)
        });
        disk.apply(&ev(Op::Fdatasync, &f));
        disk.apply(&ev(Op::SyncDir, &d));
        assert!(disk.untracked.is_empty(), "{:?}", disk.untracked);
        let name = PathBuf::from("t-0/f");
        assert_eq!(disk.current().get(&name).map(Vec::as_slice), Some(&b"hello"[..]));
        // The file and its entry are durable, the directory's entry is not.
        assert!(disk.durable().is_empty());
        let mut rng = SimRng::new(11);
        let seen: std::collections::BTreeSet<usize> = (0..100).map(|_| disk.crash(&mut rng).len()).collect();
        assert_eq!(
            seen,
            [0, 1].into_iter().collect(),
            "the directory goes or stays, with its file"
        );
        disk.apply(&ev(Op::SyncDir, &root));
        assert_eq!(disk.durable().get(&name).map(Vec::as_slice), Some(&b"hello"[..]));
        // A tree renamed and removed: the old name, the new one, or none.
        let gone = root.join("t-0.deleted");
        disk.apply(&Event {
            to: Some(gone.clone()),
            ..ev(Op::Rename, &d)
        });
        disk.apply(&ev(Op::RemoveDir, &gone));
        assert!(disk.untracked.is_empty(), "{:?}", disk.untracked);
        assert!(disk.current().is_empty());
        let mut outcomes = std::collections::BTreeSet::new();
        for _ in 0..100 {
            outcomes.insert(disk.crash(&mut rng).into_keys().collect::<Vec<_>>());
        }
        assert_eq!(
            outcomes,
            [vec![], vec![name], vec![PathBuf::from("t-0.deleted/f")]]
                .into_iter()
                .collect(),
        );
        disk.apply(&ev(Op::SyncDir, &root));
        assert!(disk.durable().is_empty());
    }

    #[test]
    fn an_unsynced_rename_leaves_the_old_name_or_the_new() {
        let root = PathBuf::from("/r");
        let (tmp, f) = (root.join("f.tmp"), root.join("f"));
        let mut d = SimDisk::new(&root, &[]);
        d.apply(&ev(Op::Create, &tmp));
        d.apply(&ev(Op::SyncDir, &root));
        d.apply(&Event {
            to: Some(f.clone()),
            ..ev(Op::Rename, &tmp)
        });
        let mut rng = SimRng::new(1);
        for _ in 0..50 {
            let names: Vec<PathBuf> = d.crash(&mut rng).into_keys().collect();
            assert!(names == [PathBuf::from("f")] || names == [PathBuf::from("f.tmp")]);
        }
    }
}
